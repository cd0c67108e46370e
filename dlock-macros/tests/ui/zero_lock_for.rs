#[dlock::try_lock(name = "emailLock", lock_for = "0s")]
async fn send_emails() {}

fn main() {}
