//! Acquire / release latency on each SQL backend next to a raw single-row
//! UPDATE on the same pool, interleaved in one run so both see the same
//! server state. Prints markdown tables of p50/p99. Also in the table: a
//! try_acquire of a lock another owner holds (no write: the round trip and
//! the statement alone), and on the servers the same raw UPDATE through a
//! pool with sqlx's default settings, which pings each connection it hands
//! out (what dlock's own pools no longer do: dlock-sql/src/pool.rs).
//!
//! ```text
//! cargo bench -p dlock-sql --all-features --bench sql
//! ```
//!
//! PostgreSQL and MySQL/MariaDB come from DLOCK_TEST_POSTGRES_URL and
//! DLOCK_TEST_MYSQL_URL (a fresh table each); SQLite uses a temporary file.
//! DLOCK_BENCH_ITERS (default 2000, after 200 warm-up rounds) sets the size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{LockBackend, LockName, LockSpec, Locker};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP: usize = 200;

struct Col {
    label: &'static str,
    v: Vec<Duration>,
}

impl Col {
    fn new(label: &'static str) -> Self {
        Col {
            label,
            v: Vec::new(),
        }
    }
    fn q(&self, q: f64) -> Duration {
        let mut s = self.v.clone();
        s.sort();
        let i = ((s.len() - 1) as f64 * q).round() as usize;
        s[i]
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One backend: `raw` runs the baseline UPDATE on the backend's own pool;
/// `pinged`, when given, the same UPDATE on a pool with sqlx's default
/// settings, which pings every connection it hands out (dlock's pools ping
/// only idle ones: dlock-sql/src/pool.rs). Returns the table and the
/// baseline's samples (the floor of scripts/bench.sh's table).
async fn run<F, Fut>(
    title: &str,
    backend: Arc<dyn LockBackend>,
    iters: usize,
    raw: F,
    pinged: Option<F>,
) -> (String, dlock_testkit::bench::Samples)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let locker = Locker::from_arc(backend.clone())
        .with_owner("bench")
        .unwrap()
        .with_defaults(dlock_core::LockOptions::new(Duration::from_secs(60)).keep_alive(false));
    let spec = LockSpec::new(
        LockName::new("bench-job").unwrap(),
        "bench",
        Duration::from_secs(60),
    )
    .unwrap();
    let mut cols = [
        Col::new("raw single-row UPDATE (baseline)"),
        Col::new("acquire (backend.try_acquire)"),
        Col::new("release (backend.release)"),
        Col::new("acquire + release"),
        Col::new("Locker::try_lock + guard.release"),
        // What every node but one sees when a scheduled job fires: no
        // write, so no commit to wait for, only the round trip.
        Col::new("acquire of a lock held by another (None)"),
        Col::new("raw UPDATE, sqlx's default pool (a ping per checkout)"),
    ];
    let held_spec = LockSpec::new(
        LockName::new("bench-held").unwrap(),
        "bench-other",
        Duration::from_secs(3600),
    )
    .unwrap();
    let held = backend
        .try_acquire(&held_spec)
        .await
        .unwrap()
        .expect("the held bench lock is free at first");
    let busy_spec =
        LockSpec::new(held_spec.name.clone(), "bench", Duration::from_secs(60)).unwrap();
    for i in 0..WARMUP + iters {
        let t0 = Instant::now();
        raw().await;
        let t1 = Instant::now();
        let lease = backend
            .try_acquire(&spec)
            .await
            .unwrap()
            .expect("the bench lock is free");
        let t2 = Instant::now();
        backend.release(&lease).await.unwrap();
        let t3 = Instant::now();
        let g = locker
            .try_lock("bench-locker", Duration::from_secs(60))
            .await
            .unwrap()
            .expect("the bench lock is free");
        g.release().await.unwrap();
        let t4 = Instant::now();
        let none = backend.try_acquire(&busy_spec).await.unwrap();
        let t5 = Instant::now();
        assert!(none.is_none(), "the held bench lock was granted");
        if let Some(pinged) = &pinged {
            pinged().await;
        }
        let t6 = Instant::now();
        if i >= WARMUP {
            cols[0].v.push(t1 - t0);
            cols[1].v.push(t2 - t1);
            cols[2].v.push(t3 - t2);
            cols[3].v.push(t3 - t1);
            cols[4].v.push(t4 - t3);
            cols[5].v.push(t5 - t4);
            if pinged.is_some() {
                cols[6].v.push(t6 - t5);
            }
        }
    }
    backend.release(&held).await.unwrap();
    let base = cols[0].q(0.5);
    let mut s = format!(
        "\n### {title}\n\n| operation | n | p50 µs | p99 µs | p50 / raw UPDATE p50 |\n|---|---:|---:|---:|---:|\n"
    );
    for c in cols.iter().filter(|c| !c.v.is_empty()) {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |\n",
            c.label,
            c.v.len(),
            us(c.q(0.5)),
            us(c.q(0.99)),
            c.q(0.5).as_secs_f64() / base.as_secs_f64()
        ));
    }
    let ratio = cols[1].q(0.5).as_secs_f64() / base.as_secs_f64();
    s.push_str(&format!(
        "\nacquire p50 / raw UPDATE p50 = {ratio:.2} (target <= 1.20: {})\n",
        if ratio <= 1.2 { "met" } else { "NOT met" }
    ));
    let floor = dlock_testkit::bench::Samples::new(cols[0].label, cols[0].v.clone());
    (s, floor)
}

/// scripts/bench.sh's rows for one SQL backend.
async fn compare<B, F, Fut>(backend: &str, floor: &dlock_testkit::bench::Samples, connect: F)
where
    B: LockBackend + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = dlock_core::Result<B>>,
{
    dlock_testkit::bench::compare(backend, "sqlx UPDATE", floor, connect)
        .await
        .unwrap();
}

fn table_name() -> String {
    format!("dlock_bench_{}", &dlock_core::new_acquisition_id()[..10])
}

fn with_query(url: &str, q: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

async fn postgres(iters: usize) {
    let Ok(url) = std::env::var("DLOCK_TEST_POSTGRES_URL") else {
        println!("\n(postgres skipped: DLOCK_TEST_POSTGRES_URL is not set)");
        return;
    };
    let t = table_name();
    let b = Arc::new(
        dlock_sql::PostgresBackend::connect(&with_query(&url, &format!("table={t}")))
            .await
            .unwrap(),
    );
    let pool = b.pool().clone();
    let raw_t = format!("{t}_raw");
    sqlx::query(&format!(
        "CREATE TABLE {raw_t} (id INT PRIMARY KEY, v BIGINT NOT NULL)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(&format!("INSERT INTO {raw_t} VALUES (1, 0)"))
        .execute(&pool)
        .await
        .unwrap();
    let upd = format!("UPDATE {raw_t} SET v = v + 1 WHERE id = $1");
    let raw_on = |pool: sqlx::PgPool| {
        let upd = upd.clone();
        move || {
            let (pool, upd) = (pool.clone(), upd.clone());
            async move {
                sqlx::query(&upd).bind(1).execute(&pool).await.unwrap();
            }
        }
    };
    let default_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let (out, floor) = run(
        "PostgreSQL",
        b.clone(),
        iters,
        raw_on(pool.clone()),
        Some(raw_on(default_pool)),
    )
    .await;
    print!("{out}");
    let lock_url = with_query(&url, &format!("table={t}"));
    compare("postgres", &floor, || {
        dlock_sql::PostgresBackend::connect(&lock_url)
    })
    .await;
    for table in [&raw_t, &t] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
}

async fn mysql(iters: usize) {
    let Ok(url) = std::env::var("DLOCK_TEST_MYSQL_URL") else {
        println!("\n(mysql skipped: DLOCK_TEST_MYSQL_URL is not set)");
        return;
    };
    let t = table_name();
    let b = Arc::new(
        dlock_sql::MysqlBackend::connect(&with_query(&url, &format!("table={t}")))
            .await
            .unwrap(),
    );
    let pool = b.pool().clone();
    let raw_t = format!("{t}_raw");
    sqlx::query(&format!(
        "CREATE TABLE {raw_t} (id INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB"
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(&format!("INSERT INTO {raw_t} VALUES (1, 0)"))
        .execute(&pool)
        .await
        .unwrap();
    let upd = format!("UPDATE {raw_t} SET v = v + 1 WHERE id = ?");
    let raw_on = |pool: sqlx::MySqlPool| {
        let upd = upd.clone();
        move || {
            let (pool, upd) = (pool.clone(), upd.clone());
            async move {
                sqlx::query(&upd).bind(1).execute(&pool).await.unwrap();
            }
        }
    };
    let default_pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let (out, floor) = run(
        "MySQL/MariaDB",
        b.clone(),
        iters,
        raw_on(pool.clone()),
        Some(raw_on(default_pool)),
    )
    .await;
    print!("{out}");
    let lock_url = with_query(&url, &format!("table={t}"));
    compare("mysql", &floor, || {
        dlock_sql::MysqlBackend::connect(&lock_url)
    })
    .await;
    for table in [&raw_t, &t] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
}

async fn sqlite(iters: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let b = Arc::new(dlock_sql::SqliteBackend::connect(&url).await.unwrap());
    let pool = b.pool().clone();
    sqlx::query("CREATE TABLE raw (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO raw VALUES (1, 0)")
        .execute(&pool)
        .await
        .unwrap();
    let (out, floor) = run(
        "SQLite (temp file, WAL, synchronous=FULL)",
        b.clone(),
        iters,
        || {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE raw SET v = v + 1 WHERE id = ?1")
                    .bind(1)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        },
        None,
    )
    .await;
    print!("{out}");
    compare("sqlite", &floor, || dlock_sql::SqliteBackend::connect(&url)).await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once, tiny.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let iters = if smoke {
        20
    } else {
        std::env::var("DLOCK_BENCH_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("\n## dlock-sql: acquire/release vs a raw single-row UPDATE ({iters} rounds after {WARMUP} warm-up, one client, interleaved)");
        postgres(iters).await;
        mysql(iters).await;
        sqlite(iters).await;
    });
}
