#[dlock::try_lock(name = "emailLock", keep_alive)]
async fn send_emails() {}

fn main() {}
