//! The SQLite adapter: one file shared by the processes of one host.

use crate::config::{self, micros, quote_table, SqlOptions};
use crate::errors::Refusal;
use dlock_core::backoff::Backoff;
use dlock_core::url_options::QueryOptions;
use dlock_core::BootInstant;
use dlock_core::{
    async_trait, new_acquisition_id, with_deadline, Capabilities, Error, Lease, LockBackend,
    LockInfo, LockName, LockSpec, Result,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;

const KIND: &str = "sqlite";

/// SQLite's clock, in microseconds since the Unix epoch, fixed for one statement.
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

const DDL: &str = include_str!("../migrations/sqlite/0001_dlock_locks.sql");

/// Locks in a SQLite database file (WAL mode, busy timeout), so several
/// processes on one host can share it. `sqlite::memory:` works within one process.
///
/// URL: `sqlite://relative/path.db`, `sqlite:///absolute/path.db` or
/// `sqlite::memory:`, with options `table`, `create_table`, `pool_size`,
/// `connect_timeout`, `statement_timeout`, `busy_timeout`.
pub struct SqliteBackend {
    pool: SqlitePool,
    opts: SqlOptions,
    sql: Statements,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("opts", &self.opts)
            .finish()
    }
}

struct Statements {
    acquire: String,
    extend: String,
    release: String,
    inspect: String,
    list: String,
    force_release: String,
}

impl Statements {
    fn new(table: &str) -> Self {
        let t = quote_table(table, '"');
        Statements {
            acquire: format!(
                "INSERT INTO {t} (name, owner, acquisition_id, token, locked_at, lock_until) \
                 VALUES (?1, ?2, ?3, 1, {NOW}, {NOW} + ?4) \
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, \
                 acquisition_id = excluded.acquisition_id, token = {t}.token + 1, \
                 locked_at = excluded.locked_at, lock_until = excluded.lock_until \
                 WHERE {t}.lock_until <= excluded.locked_at \
                 RETURNING token"
            ),
            extend: format!(
                "UPDATE {t} SET lock_until = {NOW} + ?3 \
                 WHERE name = ?1 AND acquisition_id = ?2 AND lock_until > {NOW}"
            ),
            release: format!(
                "UPDATE {t} SET lock_until = MAX(locked_at + ?3, {NOW}), \
                 acquisition_id = 'released:' || acquisition_id \
                 WHERE name = ?1 AND acquisition_id = ?2 AND lock_until > {NOW}"
            ),
            inspect: format!(
                "SELECT owner, acquisition_id, token, locked_at, lock_until FROM {t} \
                 WHERE name = ?1 AND lock_until > {NOW}"
            ),
            list: format!(
                "SELECT owner, acquisition_id, token, locked_at, lock_until, name FROM {t} \
                 WHERE lock_until > {NOW}"
            ),
            force_release: format!(
                "UPDATE {t} SET lock_until = {NOW} WHERE name = ?1 AND lock_until > {NOW}"
            ),
        }
    }
}

impl SqliteBackend {
    /// Opens (creating when missing) the database named by `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(Error::InvalidConfig(format!(
                "{url:?} is not a sqlite: URL"
            )));
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut q = QueryOptions::parse(KIND, query);
        let opts = SqlOptions::take_from(&mut q, false)?;
        let busy = q
            .duration("busy_timeout")?
            .unwrap_or(Duration::from_secs(5));
        q.finish(&[config::COMMON_OPTIONS, &["busy_timeout"]].concat())?;
        let path = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| Error::InvalidConfig(format!("sqlite path {path:?} is not valid UTF-8")))?
            .into_owned();
        let memory = path == ":memory:";
        if path.is_empty() {
            return Err(Error::InvalidConfig(
                "sqlite URL has no file path: use sqlite://file.db, sqlite:///abs/file.db or sqlite::memory:".into(),
            ));
        }
        let base = SqliteConnectOptions::new()
            .busy_timeout(busy)
            .foreign_keys(false);
        let (connect_opts, pool_size) = if memory {
            (base.in_memory(true).shared_cache(true), 1)
        } else {
            if let Some(dir) = Path::new(&path).parent() {
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    return Err(Error::connect(
                        KIND,
                        &path,
                        format!(
                            "directory {} does not exist; create it or choose another path",
                            dir.display()
                        ),
                        None,
                    ));
                }
            }
            (
                base.filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
                opts.pool_size,
            )
        };
        let mut pool_opts = crate::pool::sqlite_pool(pool_size);
        if memory {
            // The database lives as long as its one connection.
            pool_opts = pool_opts
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = with_deadline("connect to sqlite", opts.connect_timeout, async {
            let mut pause = Backoff::exact(Duration::from_millis(5), Duration::from_millis(100));
            loop {
                match pool_opts.clone().connect_with(connect_opts.clone()).await {
                    // Two processes opening a fresh file at once: switching
                    // it to WAL takes a lock SQLite's busy handler does not
                    // wait for, so one of them gets SQLITE_BUSY. The file is
                    // fine; open again until connect_timeout.
                    Err(e) if is_busy(&e) => {
                        tokio::time::sleep(pause.next_delay()).await;
                    }
                    r => break r,
                }
            }
            .map_err(|e| {
                Error::connect(
                    KIND,
                    &path,
                    "cannot open or create the database file; is its directory writable?",
                    Some(Box::new(e)),
                )
            })
        })
        .await?;
        let backend = SqliteBackend {
            pool,
            sql: Statements::new(&opts.table),
            opts,
        };
        backend.ensure_table().await?;
        Ok(backend)
    }

    /// The options in force.
    pub fn options(&self) -> &SqlOptions {
        &self.opts
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn ensure_table(&self) -> Result<()> {
        let table = &self.opts.table;
        let cols = self.columns().await?;
        if cols.is_empty() {
            if !self.opts.create_table {
                return Err(Error::InvalidConfig(format!(
                    "table {table:?} does not exist and create_table=false; create it with \
                     dlock-sql/migrations/sqlite/0001_dlock_locks.sql"
                )));
            }
            let ddl = DDL.replace("dlock_locks", &quote_table(table, '"'));
            self.timed("create table", sqlx::raw_sql(&ddl).execute(&self.pool))
                .await?;
            return Ok(());
        }
        match config::missing_columns_error(table, &cols) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn columns(&self) -> Result<Vec<String>> {
        let rows = self
            .timed(
                "inspect schema",
                sqlx::query("SELECT name FROM pragma_table_info(?1)")
                    .bind(&self.opts.table)
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .map_err(|e| op_error("inspect schema", e))
            })
            .collect()
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    ) -> Result<T> {
        with_deadline(op, self.opts.statement_timeout, async {
            fut.await.map_err(|e| op_error(op, e))
        })
        .await
    }
}

/// A lock row's columns 0..=4 (owner, id, token, locked_at, lock_until).
fn info(row: &sqlx::sqlite::SqliteRow, name: LockName, op: &'static str) -> Result<LockInfo> {
    let get = |e: sqlx::Error| op_error(op, e);
    Ok(LockInfo {
        name,
        owner: row.try_get(0).map_err(get)?,
        id: Some(row.try_get(1).map_err(get)?),
        token: config::token_of(KIND, row.try_get(2).map_err(get)?)?,
        locked_at: config::system_time(Some(row.try_get(3).map_err(get)?)),
        lock_until: config::system_time(Some(row.try_get(4).map_err(get)?)),
    })
}

#[async_trait]
impl LockBackend for SqliteBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = config::sql_capabilities(Duration::from_millis(20), Duration::from_millis(50));
        c.networked = false;
        // Embedded: SQLite reads the clock of the process running the statement.
        c.server_clock = false;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        let id = new_acquisition_id();
        let lease_us = micros(KIND, spec.at_most)?;
        let sent = BootInstant::now();
        let row = self
            .timed(
                "acquire",
                sqlx::query(&self.sql.acquire)
                    .bind(spec.name.as_str())
                    .bind(&spec.owner)
                    .bind(&id)
                    .bind(lease_us)
                    // fetch_all steps the statement to its end, so a failed
                    // commit surfaces here instead of being dropped.
                    .fetch_all(&self.pool),
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
        let done = self
            .timed(
                "extend",
                sqlx::query(&self.sql.extend)
                    .bind(lease.name.as_str())
                    .bind(&lease.id)
                    .bind(micros(KIND, lock_for)?)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::lost(
                &lease.name,
                "the lease expired or was taken over before it could be extended",
            ));
        }
        Ok(lease.extended(lock_for, sent))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let done = self
            .timed(
                "release",
                sqlx::query(&self.sql.release)
                    .bind(lease.name.as_str())
                    .bind(&lease.id)
                    .bind(micros(KIND, lease.at_least)?)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::lost(
                &lease.name,
                "the lease had already expired or been taken over at release",
            ));
        }
        Ok(())
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let row = self
            .timed(
                "inspect",
                sqlx::query(&self.sql.inspect)
                    .bind(name.as_str())
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(|r| info(&r, name.clone(), "inspect")).transpose()
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let rows = self
            .timed("list", sqlx::query(&self.sql.list).fetch_all(&self.pool))
            .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get(5).map_err(|e| op_error("list", e))?;
                info(r, config::stored_name(KIND, name)?, "list")
            })
            .collect()
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let done = self
            .timed(
                "force release",
                sqlx::query(&self.sql.force_release)
                    .bind(name.as_str())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), extended codes included: another
/// connection holds a lock.
/// SQLITE_READONLY itself (the file is not writable for this process) and
/// SQLITE_READONLY_DIRECTORY (nor its directory) are refusals a retry
/// cannot fix. The other read-only codes are not: READONLY_RECOVERY (264)
/// passes once another connection finished recovery, for one.
fn refusal(e: &sqlx::Error) -> Refusal {
    match extended_code(e) {
        Some(8) | Some(1544) => Refusal::Privilege,
        _ => Refusal::Other,
    }
}

fn op_error(op: &'static str, e: sqlx::Error) -> Error {
    match refusal(&e) {
        Refusal::Privilege => Error::denied(
            KIND,
            op,
            "the database file is read-only for this process: check the permissions of the \
             file, its -wal and -shm files and its directory",
            Some(Box::new(e)),
        ),
        _ => Error::backend(KIND, op, e),
    }
}

/// The (extended) result code sqlx reports.
fn extended_code(e: &sqlx::Error) -> Option<u32> {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<u32>().ok())
}

/// The primary result code (the low byte of an extended code).
fn primary_code(e: &sqlx::Error) -> Option<u32> {
    extended_code(e).map(|c| c & 0xff)
}

fn is_busy(e: &sqlx::Error) -> bool {
    matches!(primary_code(e), Some(5) | Some(6))
}
