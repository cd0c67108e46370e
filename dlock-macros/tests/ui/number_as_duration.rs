#[dlock::try_lock(name = "emailLock", lock_for = 600)]
async fn send_emails() {}

fn main() {}
