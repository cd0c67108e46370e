#[dlock::try_lock(name = "emailLock", lock_for = "30s", lock_at_least_for = "1m")]
async fn send_emails() {}

fn main() {}
