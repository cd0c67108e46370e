#[dlock::try_lock(name = "emailLock", lock_for = "30s", at_least = "1m")]
async fn send_emails() {}

fn main() {}
