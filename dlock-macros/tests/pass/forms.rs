//! Forms that must compile: free fns, methods, generics, `?` in the body,
//! `impl Trait` returns, expression arguments.
use std::time::Duration;

#[dlock::try_lock(name = "emailLock")]
async fn minimal() {}

#[dlock::try_lock(name = "emailLock", lock_for = "10m", at_least = "30s", wait = "1s",
                  keep_alive = false, owner = "node-a", max_hold = "1h", cancel_on_lost = false)]
async fn everything() -> Result<u32, std::num::ParseIntError> {
    let n: u32 = "5".parse()?;
    Ok(n)
}

#[dlock::try_lock(name = format!("job-{}", id), lock_for = Duration::from_secs(5), locker = locker)]
pub(crate) async fn expressions<T: std::fmt::Display + Send>(locker: &dlock::Locker, id: T) -> String {
    id.to_string()
}

#[dlock::try_lock(name = "iter")]
async fn returns_impl_trait() -> impl Iterator<Item = u8> {
    vec![1u8, 2].into_iter()
}

struct Service {
    locker: std::sync::Arc<dlock::Locker>,
    name: String,
}

impl Service {
    #[dlock::try_lock(name = self.name, locker = self.locker)]
    async fn by_ref(&self) -> &str {
        &self.name
    }

    #[dlock::try_lock(name = "mut", locker = self.locker.clone())]
    async fn by_mut(&mut self) {
        self.name.push('!');
    }

    #[dlock::try_lock(name = "early-return", locker = &*self.locker)]
    async fn early_return(self, stop: bool) -> Option<String> {
        if stop {
            return None;
        }
        Some(self.name)
    }
}

fn main() {
    let _ = minimal();
    let _ = everything();
    let _ = returns_impl_trait();
    let _: fn(Service) -> _ = |s: Service| async move {
        let _: dlock::Result<Option<&str>> = s.by_ref().await;
        let r: dlock::Result<Option<Option<String>>> = s.early_return(true).await;
        r
    };
    let _ = Service::by_mut;
    let _ = expressions::<u8>;
}

impl Service {
    #[dlock::try_lock(name = "coercions", locker = self.locker)]
    async fn coercions(&self, early: bool) -> Option<&str> {
        if early {
            return Some(&self.name);
        }
        let from_closure = || -> u8 { 1 };
        let _ = from_closure();
        Some(&self.name)
    }

    #[dlock::try_lock(name = "diverges", locker = self.locker)]
    async fn diverges(&self) -> u8 {
        loop {
            tokio::task::yield_now().await;
        }
    }
}

async fn _use_more(s: &Service) {
    let _ = s.coercions(true).await;
    let _ = s.diverges().await;
}
