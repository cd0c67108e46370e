//! Recording holds and proving they never overlapped.

use dlock_core::Locker;
use nix::time::{clock_gettime, ClockId};
use rand::Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One valid hold: from when acquire returned to when release was sent, on
/// the host's monotonic clock (shared by every process of the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Lock name.
    pub name: String,
    /// Fencing token.
    pub token: u64,
    /// CLOCK_MONOTONIC nanoseconds, after the acquire returned.
    pub start_ns: u128,
    /// CLOCK_MONOTONIC nanoseconds, before the release was sent.
    pub end_ns: u128,
}

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every process of a host).
pub fn mono_ns() -> u128 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u128) * 1_000_000_000 + t.tv_nsec() as u128)
        .unwrap_or(0)
}

/// Takes `per_task` holds on random `names`, each held for up to a
/// millisecond and released (the release must succeed: it proves the hold
/// was still valid at the coordinator). `wait` uses `lock()`, else `try_lock()`.
pub async fn work(
    locker: Locker,
    names: Vec<String>,
    per_task: usize,
    lease: Duration,
    wait: bool,
) -> Result<Vec<Hold>, String> {
    let mut holds = Vec::with_capacity(per_task);
    let started = Instant::now();
    let limit = Duration::from_secs(240);
    while holds.len() < per_task {
        if started.elapsed() > limit {
            return Err(format!(
                "only {} of {per_task} acquisitions within {limit:?}",
                holds.len()
            ));
        }
        let name = names[rand::rng().random_range(0..names.len())].clone();
        let req = locker
            .acquire(name.clone())
            .lock_for(lease)
            .keep_alive(false);
        let guard = if wait {
            req.wait(lease * 2).lock().await
        } else {
            req.try_lock().await
        }
        .map_err(|e| format!("acquire {name}: {e}"))?;
        let Some(guard) = guard else {
            let pause = rand::rng().random_range(0..2000);
            tokio::time::sleep(Duration::from_micros(pause)).await;
            continue;
        };
        let start_ns = mono_ns();
        let token = guard.token().0;
        let hold = rand::rng().random_range(0..1000);
        tokio::time::sleep(Duration::from_micros(hold)).await;
        let end_ns = mono_ns();
        guard
            .release()
            .await
            .map_err(|e| format!("release of {name} (token {token}) failed: {e}"))?;
        holds.push(Hold {
            name,
            token,
            start_ns,
            end_ns,
        });
    }
    Ok(holds)
}

/// Proves that, per name, no two holds overlapped in time and tokens
/// strictly grew in the order the holds happened.
pub fn check_history(holds: &[Hold]) -> Result<(), String> {
    let mut by_name: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in holds {
        if h.end_ns < h.start_ns {
            return Err(format!("hold {h:?} ends before it starts"));
        }
        by_name.entry(&h.name).or_default().push(h);
    }
    for (name, mut hs) in by_name {
        hs.sort_by_key(|h| (h.start_ns, h.end_ns));
        for w in hs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.start_ns < a.end_ns {
                return Err(format!(
                    "two valid holds of {name:?} overlapped: token {} held {}..{} ns and token {} held {}..{} ns",
                    a.token, a.start_ns, a.end_ns, b.token, b.start_ns, b.end_ns
                ));
            }
            if b.token <= a.token {
                return Err(format!(
                    "fencing token of {name:?} did not grow: token {} was followed by token {}",
                    a.token, b.token
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, token: u64, s: u128, e: u128) -> Hold {
        Hold {
            name: name.into(),
            token,
            start_ns: s,
            end_ns: e,
        }
    }

    #[test]
    fn checker_accepts_disjoint_growing() {
        check_history(&[h("a", 1, 0, 10), h("a", 2, 10, 20), h("b", 1, 5, 15)]).unwrap();
    }

    #[test]
    fn checker_catches_overlap() {
        let e = check_history(&[h("a", 1, 0, 10), h("a", 2, 9, 20)]).unwrap_err();
        assert!(e.contains("overlapped"), "{e}");
    }

    #[test]
    fn checker_catches_token_going_back() {
        let e = check_history(&[h("a", 2, 0, 10), h("a", 1, 11, 20)]).unwrap_err();
        assert!(e.contains("did not grow"), "{e}");
        let e = check_history(&[h("a", 2, 0, 10), h("a", 2, 11, 20)]).unwrap_err();
        assert!(e.contains("did not grow"), "{e}");
    }
}
