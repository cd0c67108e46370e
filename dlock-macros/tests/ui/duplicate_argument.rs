#[dlock::try_lock(name = "emailLock", lock_for = "10m", lock_for = "5m")]
async fn send_emails() {}

fn main() {}
