#[dlock::try_lock(name = "emailLock", lock_for = "10 minuts")]
async fn send_emails() {}

fn main() {}
