#[dlock::try_lock(name = "emailLock", locker = "sqlite://locks.db")]
async fn send_emails() {}

fn main() {}
