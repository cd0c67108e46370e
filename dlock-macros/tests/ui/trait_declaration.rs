trait Mailer {
    #[dlock::try_lock(name = "emailLock")]
    async fn send_emails(&self);
}

fn main() {}
