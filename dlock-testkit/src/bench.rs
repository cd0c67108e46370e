//! Latency sampling for the benchmark binaries (p50/p99 tables), and the
//! uncontended and contended measurements behind `scripts/bench.sh`.

pub mod counting;
pub mod scale;

use dlock_core::Locker;
use std::future::Future;
use std::time::{Duration, Instant};

/// Latency samples of one operation.
#[derive(Clone, Debug)]
pub struct Samples {
    /// What was measured.
    pub label: String,
    sorted: Vec<Duration>,
}

impl Samples {
    /// Samples measured elsewhere.
    pub fn new(label: &str, mut v: Vec<Duration>) -> Self {
        v.sort();
        Samples {
            label: label.into(),
            sorted: v,
        }
    }

    /// The `q`-quantile (0.0..=1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted[i.min(self.sorted.len() - 1)]
    }

    /// Median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// Runs `op` `warmup` times unmeasured, then `n` times measured.
/// `op` returns an error message to abort the benchmark.
pub async fn sample<F, Fut>(
    label: &str,
    warmup: usize,
    n: usize,
    mut op: F,
) -> Result<Samples, String>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for i in 0..warmup {
        op(i).await.map_err(|e| format!("{label}: {e}"))?;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        op(warmup + i).await.map_err(|e| format!("{label}: {e}"))?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(Samples {
        label: label.to_string(),
        sorted: v,
    })
}

/// A markdown table of p50/p99 in microseconds, each row also as a ratio of
/// the first row's p50 (the baseline).
pub fn table(title: &str, rows: &[Samples]) -> String {
    let mut s = format!("\n### {title}\n\n| operation | n | p50 µs | p99 µs | p50 / baseline |\n|---|---:|---:|---:|---:|\n");
    let base = rows.first().map(|r| r.p50().as_secs_f64()).unwrap_or(0.0);
    for r in rows {
        let ratio = if base > 0.0 {
            r.p50().as_secs_f64() / base
        } else {
            0.0
        };
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |\n",
            r.label,
            r.len(),
            r.p50().as_secs_f64() * 1e6,
            r.p99().as_secs_f64() * 1e6,
            ratio
        ));
    }
    s
}

/// Whether this is `cargo test --benches` (no `--bench` argument): a tiny
/// smoke run instead of the sizes from the environment.
pub(crate) fn smoke_run() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The environment variable `k` parsed, or `d` when unset or unparsable.
pub(crate) fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// How big a comparison run is: `BENCH_ITERS` uncontended rounds (after
/// `BENCH_WARMUP`), `BENCH_CLIENTS` contending clients for `BENCH_SECONDS`.
/// The same variables drive the peers (`scripts/bench/peers.py`), so both
/// sides of a table measure the same thing.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Unmeasured rounds before the uncontended sample.
    pub warmup: usize,
    /// Measured uncontended rounds.
    pub iters: usize,
    /// Clients contending for one name, each with its own connection.
    pub clients: usize,
    /// How long the contended run lasts.
    pub seconds: f64,
}

impl Settings {
    /// From the environment; defaults 200 / 2000 / 8 / 15 s. Under
    /// `cargo test --benches` (no `--bench` argument) a tiny smoke run.
    pub fn from_env() -> Self {
        if smoke_run() {
            return Settings {
                warmup: 2,
                iters: 20,
                clients: 2,
                seconds: 0.5,
            };
        }
        Settings {
            warmup: env_or("BENCH_WARMUP", 200),
            iters: env_or("BENCH_ITERS", 2000),
            clients: env_or("BENCH_CLIENTS", 8),
            seconds: env_or("BENCH_SECONDS", 15.0),
        }
    }
}

/// One row of `scripts/bench.sh`'s comparison table, written as one JSON
/// line (the schema the peers write too).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// `postgres`, `mysql`, `sqlite`, `etcd`, `zookeeper` or `consul`.
    pub backend: String,
    /// What was measured, for people.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `floor` (one raw durable write), `dlock` or `peer`.
    pub kind: &'static str,
    /// Uncontended acquire (for a floor: the write) p50, µs.
    pub acquire_p50_us: Option<f64>,
    /// Uncontended acquire p99, µs.
    pub acquire_p99_us: Option<f64>,
    /// The contended run, where there was one.
    pub contended: Option<Contended>,
    /// The scale run (names held, a herd of waiters), where there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<scale::Scale>,
}

impl Row {
    /// A row with an uncontended sample and no contended run.
    pub fn uncontended(backend: &str, kind: &'static str, s: &Samples) -> Self {
        Row {
            backend: backend.into(),
            implementation: s.label.clone(),
            kind,
            acquire_p50_us: Some(s.p50().as_secs_f64() * 1e6),
            acquire_p99_us: Some(s.p99().as_secs_f64() * 1e6),
            contended: None,
            scale: None,
        }
    }

    /// Prints the row and appends it to the file named by
    /// `DLOCK_BENCH_JSON`, if set.
    pub fn emit(&self) -> Result<(), String> {
        let line = serde_json::to_string(self).map_err(|e| e.to_string())?;
        println!("{line}");
        if let Ok(path) = std::env::var("DLOCK_BENCH_JSON") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{path}: {e}"))?;
            writeln!(f, "{line}").map_err(|e| format!("{path}: {e}"))?;
        }
        Ok(())
    }
}

/// The acquire alone through the user's API (`Locker::try_lock`, no
/// keep-alive), on a free name; each guard is released untimed.
pub async fn uncontended_acquire(
    label: &str,
    locker: &Locker,
    name: &str,
    lock_for: Duration,
    s: Settings,
) -> Result<Samples, String> {
    let mut v = Vec::with_capacity(s.iters);
    for i in 0..s.warmup + s.iters {
        let t = Instant::now();
        let g = locker
            .acquire(name)
            .lock_for(lock_for)
            .keep_alive(false)
            .try_lock()
            .await
            .map_err(|e| format!("{label}: {e:#}"))?
            .ok_or_else(|| format!("{label}: the bench lock {name:?} is held"))?;
        let took = t.elapsed();
        g.release().await.map_err(|e| format!("{label}: {e:#}"))?;
        if i >= s.warmup {
            v.push(took);
        }
    }
    v.sort();
    Ok(Samples {
        label: label.into(),
        sorted: v,
    })
}

/// What a contended run showed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Contended {
    /// Clients, each with its own connection.
    pub clients: usize,
    /// Length of the run.
    pub seconds: f64,
    /// Acquisitions by all clients.
    pub acquisitions: usize,
    /// Acquisitions per second.
    pub acq_per_s: f64,
    /// p50 of "previous holder starts its release" → "next holder holds", µs.
    pub handoff_p50_us: f64,
    /// How often (%) the holder that just released is the next to hold.
    pub same_holder_pct: f64,
    /// Fewest acquisitions of one client ÷ most of one client.
    pub fairness_min_max: f64,
    /// Pairs of recorded holds that overlapped (must be 0).
    pub overlaps: usize,
}

/// One recorded hold: which client, when it held, when it began releasing.
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    /// Index of the client.
    pub client: usize,
    /// Just after the acquire returned.
    pub acquired: Instant,
    /// Just before the release was sent.
    pub releasing: Instant,
}

/// Summarises holds of one name over `seconds`.
pub fn summarise(clients: usize, seconds: f64, mut holds: Vec<Hold>) -> Contended {
    holds.sort_by_key(|h| h.acquired);
    let mut handoffs: Vec<Duration> = Vec::new();
    let (mut same, mut overlaps) = (0usize, 0usize);
    for w in holds.windows(2) {
        if w[1].acquired < w[0].releasing {
            overlaps += 1;
        }
        handoffs.push(w[1].acquired.saturating_duration_since(w[0].releasing));
        if w[1].client == w[0].client {
            same += 1;
        }
    }
    handoffs.sort();
    let mut per = vec![0usize; clients];
    for h in &holds {
        if let Some(c) = per.get_mut(h.client) {
            *c += 1;
        }
    }
    let (min, max) = (
        per.iter().copied().min().unwrap_or(0),
        per.iter().copied().max().unwrap_or(0),
    );
    let pairs = holds.len().saturating_sub(1);
    Contended {
        clients,
        seconds,
        acquisitions: holds.len(),
        acq_per_s: holds.len() as f64 / seconds,
        handoff_p50_us: handoffs
            .get(handoffs.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6),
        same_holder_pct: if pairs == 0 {
            0.0
        } else {
            100.0 * same as f64 / pairs as f64
        },
        fairness_min_max: if max == 0 {
            0.0
        } else {
            min as f64 / max as f64
        },
        overlaps,
    }
}

/// `lockers.len()` clients (each its own connection) loop on one name for
/// `s.seconds`: wait for the lock (`lock()`, woken however the backend
/// wakes waiters), hold it `hold`, release.
pub async fn contended(
    lockers: Vec<Locker>,
    name: &str,
    lock_for: Duration,
    hold: Duration,
    s: Settings,
) -> Result<Contended, String> {
    let clients = lockers.len();
    let run_for = Duration::from_secs_f64(s.seconds);
    let start = Instant::now();
    let end = start + run_for;
    let tasks = lockers.into_iter().enumerate().map(|(client, locker)| {
        let name = name.to_string();
        // A task each, so clients run on every worker thread.
        tokio::spawn(async move {
            let mut holds = Vec::new();
            while Instant::now() < end {
                let g = locker
                    .acquire(name.as_str())
                    .lock_for(lock_for)
                    .keep_alive(false)
                    .wait(run_for + Duration::from_secs(30))
                    .lock()
                    .await
                    .map_err(|e| format!("client {client}: {e:#}"))?
                    .ok_or_else(|| format!("client {client}: waited the whole run"))?;
                let acquired = Instant::now();
                tokio::time::sleep(hold).await;
                let releasing = Instant::now();
                g.release()
                    .await
                    .map_err(|e| format!("client {client}: release: {e:#}"))?;
                holds.push(Hold {
                    client,
                    acquired,
                    releasing,
                });
            }
            Ok::<_, String>(holds)
        })
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(tasks).await {
        all.extend(r.map_err(|e| format!("a client task failed: {e}"))??);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(summarise(clients, seconds, all))
}

/// The two rows every adapter's bench gives `scripts/bench.sh`: the floor
/// (`floor`, one raw durable write through the client library the adapter
/// uses, labelled `floor_impl`) and dlock (the uncontended acquire, then
/// `Settings::clients` clients contending for one name, holding it 1 ms).
/// `connect()` makes one connection; each client gets its own. Then the
/// scale run ([`scale::scale`]): the acquire with many names held, and
/// the requests per release of a herd of waiters.
pub async fn compare<B, F, Fut>(
    backend: &str,
    floor_impl: &str,
    floor: &Samples,
    connect: F,
) -> Result<(), String>
where
    B: dlock_core::LockBackend + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = dlock_core::Result<B>>,
{
    let locker = |i: usize| {
        let b = connect();
        async move {
            Locker::new(b.await.map_err(|e| format!("connect: {e:#}"))?)
                .with_owner(format!("client-{i}"))
                .map_err(|e| e.to_string())
        }
    };
    let s = Settings::from_env();
    // Every backend honours 10 s (Consul's shortest session TTL).
    let lock_for = Duration::from_secs(10);
    let mut floor = Row::uncontended(backend, "floor", floor);
    floor.implementation = floor_impl.into();
    floor.emit()?;
    let one = uncontended_acquire("dlock", &locker(0).await?, "cmp-free", lock_for, s).await?;
    let mut lockers = Vec::with_capacity(s.clients);
    for i in 0..s.clients {
        lockers.push(locker(i).await?);
    }
    let hot = contended(lockers, "cmp-hot", lock_for, Duration::from_millis(1), s).await?;
    let mut row = Row::uncontended(backend, "dlock", &one);
    row.contended = Some(hot);
    let big = scale::scale(
        &locker(0).await?,
        &connect,
        s,
        scale::ScaleSettings::from_env(),
    )
    .await?;
    row.scale = Some(big);
    row.emit()
}
