#[dlock::try_lock(name = "emailLock")]
struct Mailer;

fn main() {}
