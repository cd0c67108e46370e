#[dlock::try_lock(name = "emailLock", lock_for = "10m")]
fn send_emails() {}

fn main() {}
