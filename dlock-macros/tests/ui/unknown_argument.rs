#[dlock::try_lock(name = "emailLock", lock_at_most_for = "10m")]
async fn send_emails() {}

fn main() {}
