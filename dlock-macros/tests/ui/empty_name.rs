#[dlock::try_lock(name = "", lock_for = "10m")]
async fn send_emails() {}

fn main() {}
