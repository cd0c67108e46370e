#[dlock::try_lock(lock_for = "10m")]
async fn send_emails() {}

fn main() {}
