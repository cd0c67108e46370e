//! The PostgreSQL adapter: one upsert per acquire, `clock_timestamp()` as the
//! clock, LISTEN/NOTIFY to wake waiters.

use crate::config::{self, micros, quote_table, SqlOptions};
use crate::errors::{self, Refusal};
use crate::tls;
use dlock_core::backoff::Backoff;
use dlock_core::BootInstant;
use dlock_core::{
    async_trait, jittered, new_acquisition_id, with_deadline, Capabilities, Error, Lease,
    LockBackend, LockInfo, LockName, LockSpec, Result,
};
use dlock_core::{ConnectOptions, TlsRoots};
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Row};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

const KIND: &str = "postgres";

const DDL: &str = include_str!("../migrations/postgres/0001_dlock_locks.sql");

/// Query options handed through to sqlx (TLS and driver tuning).
const DRIVER_KEYS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "application_name",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
];

/// Locks in a PostgreSQL table.
///
/// URL: `postgres://user:password@host:port/database?options` (also
/// `postgresql://`). Options: `table` (may be `schema.table`),
/// `create_table`, `pool_size`, `connect_timeout`, `statement_timeout`,
/// `user`, `password`, `transaction_pooling` (see
/// [`PostgresBackend::transaction_pooling`]), and sqlx's own `sslmode` (`disable`, `prefer`,
/// `require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert`,
/// `sslkey`, `statement-cache-capacity`, `application_name`, `options`.
///
/// Every operation is one statement decided by `clock_timestamp()` (the
/// statement's own time; `now()` is frozen at transaction start). Releases
/// send `pg_notify` in the same statement; waiters listen on one shared
/// connection per backend and fall back to polling, so a missed notification
/// costs latency, never correctness. No session state is relied on; behind
/// a transaction-pooling proxy set `transaction_pooling=true` so the
/// driver's prepared statements stay on one server connection.
pub struct PostgresBackend {
    pool: PgPool,
    opts: SqlOptions,
    target: String,
    sql: Statements,
    notifier: Notifier,
    tx_pooling: bool,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("target", &self.target)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

struct Statements {
    acquire: String,
    extend: String,
    release: String,
    inspect: String,
    list: String,
    force_release: String,
    remaining: String,
}

impl Statements {
    fn new(table: &str) -> Self {
        let t = quote_table(table, '"');
        Statements {
            // One clock reading for both columns. An expired row is taken
            // over by the UPDATE (a concurrent taker blocks on the row and
            // rechecks lock_until against the new version: one wins); a
            // missing row is inserted (a concurrent insert makes this one
            // DO NOTHING: held). A row still inside its lease is left alone:
            // no row returned (held by someone else) and nothing written.
            // Not `INSERT … ON CONFLICT DO UPDATE … WHERE`: that locks the
            // conflicting row even when its WHERE is false, so every busy
            // answer cost a transaction id and a WAL flush, a durable commit.
            acquire: format!(
                "WITH c AS (SELECT clock_timestamp() AS ts), \
                 u AS (UPDATE {t} AS l SET owner = $2, acquisition_id = $3, \
                 token = l.token + 1, locked_at = c.ts, lock_until = c.ts + $4 \
                 FROM c WHERE l.name = $1 AND l.lock_until <= c.ts RETURNING l.token), \
                 i AS (INSERT INTO {t} (name, owner, acquisition_id, token, locked_at, lock_until) \
                 SELECT $1, $2, $3, 1, c.ts, c.ts + $4 FROM c \
                 WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE name = $1) \
                 ON CONFLICT (name) DO NOTHING RETURNING token) \
                 SELECT token FROM u UNION ALL SELECT token FROM i"
            ),
            extend: format!(
                "UPDATE {t} SET lock_until = clock_timestamp() + $3 \
                 WHERE name = $1 AND acquisition_id = $2 AND lock_until > clock_timestamp()"
            ),
            // Notify in the same statement (a CTE), so waiters learn of every
            // release without a trigger on the table. The acquisition id is
            // marked released: within at_least the lock stays taken, but this
            // lease can no longer be extended or released again.
            release: format!(
                "WITH r AS (UPDATE {t} SET lock_until = GREATEST(locked_at + $3, clock_timestamp()), \
                 acquisition_id = 'released:' || acquisition_id \
                 WHERE name = $1 AND acquisition_id = $2 AND lock_until > clock_timestamp() \
                 RETURNING 1) \
                 SELECT pg_notify($4, $1) FROM r"
            ),
            inspect: format!(
                "SELECT owner, acquisition_id, token, \
                 (extract(epoch FROM locked_at) * 1000000)::bigint, \
                 (extract(epoch FROM lock_until) * 1000000)::bigint \
                 FROM {t} WHERE name = $1 AND lock_until > clock_timestamp()"
            ),
            list: format!(
                "SELECT owner, acquisition_id, token, \
                 (extract(epoch FROM locked_at) * 1000000)::bigint, \
                 (extract(epoch FROM lock_until) * 1000000)::bigint, name \
                 FROM {t} WHERE lock_until > clock_timestamp()"
            ),
            force_release: format!(
                "WITH r AS (UPDATE {t} SET lock_until = clock_timestamp() \
                 WHERE name = $1 AND lock_until > clock_timestamp() RETURNING 1) \
                 SELECT pg_notify($2, $1) FROM r"
            ),
            remaining: format!(
                "SELECT (extract(epoch FROM (lock_until - clock_timestamp())) * 1000000)::bigint \
                 FROM {t} WHERE name = $1"
            ),
        }
    }
}

impl PostgresBackend {
    /// Connects to the database named by `url` and checks (or creates) the table.
    ///
    /// Fails with a clear [`Error::Connect`] within `connect_timeout` when the
    /// server is unreachable or refuses the credentials.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::new()).await
    }

    /// Like [`PostgresBackend::connect`], with `options` taking precedence
    /// over the URL (a user and password kept out of it; the TLS roots).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut net = config::split_net_url(
            KIND,
            url,
            &["postgres", "postgresql"],
            "postgres",
            5432,
            true,
            &["transaction_pooling"],
            DRIVER_KEYS,
        )?;
        net.apply(KIND, options)?;
        let mut tx_pooling = false;
        for (k, v) in &net.extra {
            if k == "transaction_pooling" {
                tx_pooling = dlock_core::url_options::parse_bool(k, v)?;
            }
        }
        let mut connect_opts = PgConnectOptions::from_str(&net.driver_url).map_err(|e| {
            Error::InvalidConfig(format!(
                "postgres URL for {} is not accepted by the driver: {}",
                net.target,
                errors::redact(&e.to_string())
            ))
        })?;
        if let Some(u) = &net.user {
            connect_opts = connect_opts.username(u);
        }
        if let Some(p) = &net.password {
            connect_opts = connect_opts.password(secrecy::ExposeSecret::expose_secret(p));
        }
        if net.tls_roots == TlsRoots::System {
            let ca = net.driver_value(&["sslrootcert", "ssl-root-cert", "ssl-ca"]);
            connect_opts = connect_opts.ssl_root_cert_from_pem(tls::system_roots_pem(KIND, ca)?);
        }
        let opts = net.opts;
        let target = net.target;
        // A direct first connection, so a refused connection or a bad password
        // surfaces as such (the pool would retry until it times out).
        let mut first = with_deadline("connect to postgres", opts.connect_timeout, async {
            PgConnection::connect_with(&connect_opts)
                .await
                .map_err(|e| connect_error(&target, e))
        })
        .await
        .map_err(|e| match e {
            Error::Timeout { after, .. } => Error::connect(
                KIND,
                &target,
                format!(
                    "no answer within connect_timeout={after:?}; is the host reachable and the server listening?"
                ),
                None,
            ),
            e => e,
        })?;
        let sql = Statements::new(&opts.table);
        let checked = with_deadline(
            "check lock table",
            opts.statement_timeout,
            ensure_table(&mut first, &opts),
        )
        .await;
        let _ = with_deadline("close connection", opts.connect_timeout, async {
            first.close().await.map_err(|e| op_error("close", e))
        })
        .await;
        checked?;
        let pool = crate::pool::server_pool(opts.pool_size).connect_lazy_with(connect_opts);
        Ok(Self::assemble(pool, opts, target, sql).transaction_pooling(tx_pooling))
    }

    /// Builds a backend on a pool the application already has, checking (or,
    /// with `opts.create_table`, creating) the table. `pool_size` and
    /// `connect_timeout` in `opts` are ignored: the pool's own settings apply.
    pub async fn from_pool(pool: PgPool, opts: SqlOptions) -> Result<Self> {
        config::validate_table(&opts.table, true)?;
        opts.check_timeouts()?;
        let co = pool.connect_options();
        let target = format!(
            "{}:{}/{}",
            co.get_host(),
            co.get_port(),
            co.get_database().unwrap_or("")
        );
        let mut conn = with_deadline("connect to postgres", opts.connect_timeout, async {
            pool.acquire().await.map_err(|e| connect_error(&target, e))
        })
        .await?;
        with_deadline(
            "check lock table",
            opts.statement_timeout,
            ensure_table(&mut conn, &opts),
        )
        .await?;
        drop(conn);
        let sql = Statements::new(&opts.table);
        Ok(Self::assemble(pool, opts, target, sql))
    }

    fn assemble(pool: PgPool, opts: SqlOptions, target: String, sql: Statements) -> Self {
        let notifier = Notifier::new(channel_for(&opts.table));
        PostgresBackend {
            pool,
            opts,
            target,
            sql,
            notifier,
            tx_pooling: false,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &SqlOptions {
        &self.opts
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The NOTIFY channel releases are announced on (payload: the lock name).
    pub fn channel(&self) -> &str {
        &self.notifier.channel
    }

    /// Behind a transaction-pooling proxy (PgBouncer `pool_mode=transaction`
    /// before 1.21, or without `max_prepared_statements`): every statement
    /// runs in its own explicit transaction with an unnamed prepared
    /// statement, so all of its protocol messages reach one server
    /// connection; no LISTEN (waiters poll). Costs three extra round trips
    /// per operation. Also the URL option `transaction_pooling=true`.
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.tx_pooling = on;
        self
    }

    /// Runs one statement and returns all its rows. Reading to the end of the
    /// statement means a failed commit is an error, never a result.
    async fn rows(&self, op: &'static str, q: PgQuery<'_>) -> Result<Vec<PgRow>> {
        with_deadline(op, self.opts.statement_timeout, async {
            let r = if self.tx_pooling {
                in_transaction(&self.pool, q).await
            } else {
                q.fetch_all(&self.pool).await
            };
            r.map_err(|e| op_error(op, e))
        })
        .await
    }

    /// Runs one statement and returns how many rows it matched.
    async fn exec(&self, op: &'static str, q: PgQuery<'_>) -> Result<u64> {
        with_deadline(op, self.opts.statement_timeout, async {
            let r = if self.tx_pooling {
                async {
                    let mut tx = self.pool.begin().await?;
                    let done = q.persistent(false).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
                .await
            } else {
                q.execute(&self.pool).await.map(|d| d.rows_affected())
            };
            r.map_err(|e| op_error(op, e))
        })
        .await
    }

    /// Microseconds until `name`'s current lease ends (<= 0: free now), or
    /// `None` when the name has never been locked.
    async fn remaining_us(&self, name: &LockName) -> Result<Option<i64>> {
        let rows = self
            .rows("wait", sqlx::query(&self.sql.remaining).bind(name.as_str()))
            .await?;
        match rows.first() {
            None => Ok(None),
            Some(r) => r
                .try_get::<Option<i64>, _>(0)
                .map_err(|e| op_error("wait", e)),
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// One statement in its own transaction, unnamed: every message of it goes
/// to the same server connection even behind a transaction-pooling proxy.
async fn in_transaction(
    pool: &PgPool,
    q: PgQuery<'_>,
) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = q.persistent(false).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// What a PostgreSQL SQLSTATE means for the caller.
fn refusal(e: &sqlx::Error) -> Refusal {
    match e.as_database_error().and_then(|d| d.code()).as_deref() {
        // invalid_password; invalid_authorization_specification (pg_hba.conf)
        Some("28P01") | Some("28000") => Refusal::Credentials,
        Some("42501") => Refusal::Privilege,
        Some("3D000") => Refusal::NoDatabase,
        _ => Refusal::Other,
    }
}

fn connect_error(target: &str, e: sqlx::Error) -> Error {
    errors::connect_error(KIND, "PostgreSQL", target, refusal(&e), e)
}

fn op_error(op: &'static str, e: sqlx::Error) -> Error {
    errors::op_error(KIND, op, refusal(&e), e)
}

async fn ensure_table(conn: &mut PgConnection, opts: &SqlOptions) -> Result<()> {
    let table = &opts.table;
    let quoted = quote_table(table, '"');
    let cols = columns(conn, &quoted).await?;
    if let Some(cols) = cols {
        return match config::missing_columns_error(table, &cols) {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    if !opts.create_table {
        return Err(Error::InvalidConfig(format!(
            "table {table:?} does not exist and create_table=false; create it with \
                 dlock-sql/migrations/postgres/0001_dlock_locks.sql"
        )));
    }
    let ddl = DDL.replace("dlock_locks", &quoted);
    if let Err(e) = conn.execute(ddl.as_str()).await {
        // Another process may have created it at the same moment.
        match columns(conn, &quoted).await? {
            Some(cols) if config::missing_columns_error(table, &cols).is_none() => {}
            _ => {
                return Err(errors::create_table_error(
                    KIND,
                    "postgres",
                    "schema",
                    table,
                    refusal(&e),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// The table's column names, or `None` when it does not exist.
///
/// One transaction, unnamed statements: safe behind a transaction-pooling proxy.
async fn columns(conn: &mut PgConnection, quoted: &str) -> Result<Option<Vec<String>>> {
    let err = |e| op_error("inspect schema", e);
    let mut tx = conn.begin().await.map_err(err)?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(quoted)
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
    )
    .bind(quoted)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(exists.map(|_| cols))
}

/// `dlock.<table>`, or a hashed form when that would exceed PostgreSQL's
/// 63-byte identifier limit.
fn channel_for(table: &str) -> String {
    let c = format!("dlock.{table}");
    if c.len() <= 63 {
        return c;
    }
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut cut = 40.min(table.len());
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("dlock.{}.{h:016x}", &table[..cut])
}

fn interval(us: i64) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: us,
    }
}

/// A lock row's columns 0..=4 (owner, id, token, locked_at, lock_until).
fn info(row: &PgRow, name: LockName, op: &'static str) -> Result<LockInfo> {
    let get = |e: sqlx::Error| op_error(op, e);
    Ok(LockInfo {
        name,
        owner: row.try_get(0).map_err(get)?,
        id: Some(row.try_get(1).map_err(get)?),
        token: config::token_of(KIND, row.try_get(2).map_err(get)?)?,
        locked_at: config::system_time(row.try_get(3).map_err(get)?),
        lock_until: config::system_time(row.try_get(4).map_err(get)?),
    })
}

#[async_trait]
impl LockBackend for PostgresBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let poll = Duration::from_millis(if self.tx_pooling { 100 } else { 500 });
        let mut c = config::sql_capabilities(Duration::from_millis(50), poll);
        // Behind a transaction pooler there is no LISTEN: waiters poll.
        c.release_notifies_waiters = !self.tx_pooling;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        let id = new_acquisition_id();
        let lease_us = micros(KIND, spec.at_most)?;
        let sent = BootInstant::now();
        let row = self
            .rows(
                "acquire",
                sqlx::query(&self.sql.acquire)
                    .bind(spec.name.as_str())
                    .bind(&spec.owner)
                    .bind(&id)
                    .bind(interval(lease_us)),
            )
            .await?;
        let Some(row) = row.first() else {
            return Ok(None);
        };
        let token: i64 = row.try_get(0).map_err(|e| op_error("acquire", e))?;
        Ok(Some(Lease::granted(
            spec,
            id,
            config::token_of(KIND, token)?,
            sent,
            String::new(),
        )))
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.capabilities()
            .check_lease(KIND, "extension", lock_for)?;
        let sent = BootInstant::now();
        let matched = self
            .exec(
                "extend",
                sqlx::query(&self.sql.extend)
                    .bind(lease.name.as_str())
                    .bind(&lease.id)
                    .bind(interval(micros(KIND, lock_for)?)),
            )
            .await?;
        if matched == 0 {
            return Err(Error::lost(
                &lease.name,
                "the lease expired or was taken over before it could be extended",
            ));
        }
        Ok(lease.extended(lock_for, sent))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let row = self
            .rows(
                "release",
                sqlx::query(&self.sql.release)
                    .bind(lease.name.as_str())
                    .bind(&lease.id)
                    .bind(interval(micros(KIND, lease.at_least)?))
                    .bind(&self.notifier.channel),
            )
            .await?;
        if row.is_empty() {
            return Err(Error::lost(
                &lease.name,
                "the lease had already expired or been taken over at release",
            ));
        }
        Ok(())
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let rows = self
            .rows(
                "inspect",
                sqlx::query(&self.sql.inspect).bind(name.as_str()),
            )
            .await?;
        rows.first()
            .map(|r| info(r, name.clone(), "inspect"))
            .transpose()
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let rows = self.rows("list", sqlx::query(&self.sql.list)).await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get(5).map_err(|e| op_error("list", e))?;
                info(r, config::stored_name(KIND, name)?, "list")
            })
            .collect()
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let row = self
            .rows(
                "force release",
                sqlx::query(&self.sql.force_release)
                    .bind(name.as_str())
                    .bind(&self.notifier.channel),
            )
            .await?;
        Ok(!row.is_empty())
    }

    /// Waits for a NOTIFY naming this lock, for the current lease's end by
    /// the database's clock, or for a jittered fallback poll, whichever comes
    /// first (never beyond `max_wait`).
    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        let started = BootInstant::now();
        if self.tx_pooling {
            // LISTEN needs a session of its own: poll, and wake at the lease's end.
            let sleep_for = match self.remaining_us(name).await? {
                None => return Ok(()),
                Some(us) if us <= 0 => return Ok(()),
                Some(us) => {
                    Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
                        + jittered(Duration::from_millis(2))
                }
            };
            let poll = jittered(self.capabilities().poll_interval);
            let left = max_wait.saturating_sub(started.elapsed());
            tokio::time::sleep(sleep_for.min(poll).min(left)).await;
            return Ok(());
        }
        let (mut rx, state) = self.notifier.subscribe(&self.pool, &self.opts);
        let mut state = state;
        // The first waiter starts the listener: give it a moment to LISTEN so
        // a release right after our check below is not missed.
        if *state.borrow() == ListenState::Starting {
            let budget = max_wait.min(self.opts.connect_timeout);
            let _ =
                tokio::time::timeout(budget, state.wait_for(|s| *s != ListenState::Starting)).await;
        }
        let listening = *state.borrow() == ListenState::Ready;
        let left = max_wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(());
        }
        let remaining = match self.remaining_us(name).await? {
            None => return Ok(()),
            Some(us) if us <= 0 => return Ok(()),
            Some(us) => Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX)),
        };
        let poll = jittered(self.capabilities().poll_interval);
        let fallback = if listening { poll * 2 } else { poll };
        // Wake just after the lease ends, with a little jitter so waiters on
        // one lock do not all arrive in the same millisecond.
        let at_expiry = remaining + jittered(Duration::from_millis(2));
        let sleep_for = at_expiry.min(fallback).min(left);
        let sleep = tokio::time::sleep(sleep_for);
        tokio::pin!(sleep);
        let wanted = name.as_str();
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                msg = rx.recv() => match msg {
                    Ok(Wake::Name(n)) if n != wanted => continue,
                    // Our lock, everything (listener reconnected), or we lagged.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut sleep).await;
                        return Ok(());
                    }
                },
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Wake {
    /// A release of this lock name.
    Name(String),
    /// Anything may have been released (the listener reconnected).
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListenState {
    Starting,
    Ready,
    Down,
}

/// One shared LISTEN connection per backend, started by the first waiter.
struct Notifier {
    channel: String,
    inner: Mutex<Option<Running>>,
}

struct Running {
    tx: broadcast::Sender<Wake>,
    state: watch::Receiver<ListenState>,
    task: tokio::task::JoinHandle<()>,
}

impl Notifier {
    fn new(channel: String) -> Self {
        Notifier {
            channel,
            inner: Mutex::new(None),
        }
    }

    fn subscribe(
        &self,
        pool: &PgPool,
        opts: &SqlOptions,
    ) -> (broadcast::Receiver<Wake>, watch::Receiver<ListenState>) {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(r) = guard.as_ref() {
            if !r.task.is_finished() {
                return (r.tx.subscribe(), r.state.clone());
            }
        }
        let (tx, _) = broadcast::channel(256);
        let (state_tx, state_rx) = watch::channel(ListenState::Starting);
        // A pool of one of its own, so listening never takes a slot from the
        // pool that runs the lock statements.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(config::POOL_ACQUIRE_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*pool.connect_options()).clone());
        let task = tokio::spawn(listen_loop(
            listen_pool,
            self.channel.clone(),
            tx.clone(),
            state_tx,
            opts.connect_timeout,
        ));
        let out = (tx.subscribe(), state_rx.clone());
        *guard = Some(Running {
            tx,
            state: state_rx,
            task,
        });
        out
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let guard = match self.inner.get_mut() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(r) = guard.take() {
            r.task.abort();
        }
    }
}

async fn listen_loop(
    pool: PgPool,
    channel: String,
    tx: broadcast::Sender<Wake>,
    state: watch::Sender<ListenState>,
    connect_timeout: Duration,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let started = tokio::time::timeout(connect_timeout, async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(&channel).await?;
            Ok::<_, sqlx::Error>(l)
        })
        .await;
        let mut listener = match started {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %channel, "postgres LISTEN failed; waiters poll");
                state.send_replace(ListenState::Down);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(_) => {
                tracing::debug!(%channel, "postgres LISTEN timed out; waiters poll");
                state.send_replace(ListenState::Down);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        state.send_replace(ListenState::Ready);
        let _ = tx.send(Wake::All);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let _ = tx.send(Wake::Name(n.payload().to_owned()));
                }
                Ok(None) => {
                    // Connection lost and re-established: anything may have
                    // been released meanwhile.
                    let _ = tx.send(Wake::All);
                }
                Err(e) => {
                    tracing::debug!(error = %e, %channel, "postgres listener lost; reconnecting");
                    state.send_replace(ListenState::Down);
                    let _ = tx.send(Wake::All);
                    break;
                }
            }
        }
    }
}
