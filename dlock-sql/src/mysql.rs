//! The MySQL / MariaDB adapter: one `INSERT ... ON DUPLICATE KEY UPDATE` per
//! acquire, `UTC_TIMESTAMP(6)` as the clock, jittered polling for waiters.

use crate::config::{self, micros, quote_table, SqlOptions};
use crate::errors::{self, Refusal};
use crate::tls;
use dlock_core::BootInstant;
use dlock_core::{
    async_trait, new_acquisition_id, with_deadline, Capabilities, Error, FencingToken, Lease,
    LockBackend, LockInfo, LockName, LockSpec, Result,
};
use dlock_core::{ConnectOptions, TlsRoots};
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlQueryResult,
};
use sqlx::{Connection, Executor, Row};
use std::str::FromStr;
use std::time::Duration;

const KIND: &str = "mysql";

const DDL: &str = include_str!("../migrations/mysql/0001_dlock_locks.sql");

/// The server's clock, in UTC, never the session's time zone; fixed for the
/// duration of one statement.
const NOW: &str = "UTC_TIMESTAMP(6)";

/// Query options handed through to sqlx (TLS and driver tuning).
const DRIVER_KEYS: &[&str] = &[
    "ssl-mode",
    "sslmode",
    "ssl-ca",
    "sslca",
    "ssl-cert",
    "sslcert",
    "ssl-key",
    "sslkey",
    "statement-cache-capacity",
    "socket",
    "charset",
    "collation",
];

/// How often a failed statement is retried when InnoDB picked it as a
/// deadlock victim (the statement was rolled back entirely, so a retry is safe).
const DEADLOCK_RETRIES: u32 = 5;

/// Locks in a MySQL 8 / MariaDB 10.3+ table.
///
/// URL: `mysql://user:password@host:port/database?options` (also
/// `mariadb://`). Options: `table`, `create_table`, `pool_size`,
/// `connect_timeout`, `statement_timeout`, `user`, `password`, and sqlx's
/// own `ssl-mode` (`disabled`, `preferred`, `required`, `verify_ca`,
/// `verify_identity`), `ssl-ca`, `ssl-cert`, `ssl-key`,
/// `statement-cache-capacity`, `socket`, `charset`, `collation`.
///
/// Names are stored as `VARBINARY`, so they compare byte-exactly (`Email`,
/// `email` and `email ` are three locks). Times are `DATETIME(6)` in UTC from
/// `UTC_TIMESTAMP(6)`. The acquire is one `INSERT ... ON DUPLICATE KEY
/// UPDATE` whose new token comes back in the statement's own OK packet
/// (`LAST_INSERT_ID(expr)`), so nothing depends on session state.
pub struct MysqlBackend {
    pool: MySqlPool,
    opts: SqlOptions,
    target: String,
    sql: Statements,
}

impl std::fmt::Debug for MysqlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlBackend")
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
}

impl Statements {
    fn new(table: &str) -> Self {
        let t = quote_table(table, '`');
        // In ON DUPLICATE KEY UPDATE, assignments run left to right and later
        // ones see earlier results: every column tests the *old* lock_until,
        // which is therefore assigned last. LAST_INSERT_ID(x) puts x into the
        // statement's OK packet: 1 on insert, the bumped token on a takeover,
        // 0 when the row is held (the last call in the statement wins).
        let free = format!("lock_until <= {NOW}");
        Statements {
            acquire: format!(
                "INSERT INTO {t} (name, owner, acquisition_id, token, locked_at, lock_until) \
                 VALUES (?, ?, ?, LAST_INSERT_ID(1), {NOW}, {NOW} + INTERVAL ? MICROSECOND) \
                 ON DUPLICATE KEY UPDATE \
                 owner = IF({free}, ?, owner), \
                 acquisition_id = IF({free}, ?, acquisition_id), \
                 token = IF({free}, LAST_INSERT_ID(token + 1), LAST_INSERT_ID(0) + token), \
                 locked_at = IF({free}, {NOW}, locked_at), \
                 lock_until = IF({free}, {NOW} + INTERVAL ? MICROSECOND, lock_until)"
            ),
            extend: format!(
                "UPDATE {t} SET lock_until = {NOW} + INTERVAL ? MICROSECOND \
                 WHERE name = ? AND acquisition_id = ? AND lock_until > {NOW}"
            ),
            // The acquisition id is marked released: within at_least the lock
            // stays taken, but this lease can no longer be extended or
            // released again.
            release: format!(
                "UPDATE {t} SET lock_until = GREATEST(locked_at + INTERVAL ? MICROSECOND, {NOW}), \
                 acquisition_id = CONCAT('released:', acquisition_id) \
                 WHERE name = ? AND acquisition_id = ? AND lock_until > {NOW}"
            ),
            inspect: format!(
                "SELECT owner, acquisition_id, token, \
                 TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', locked_at), \
                 TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', lock_until) \
                 FROM {t} WHERE name = ? AND lock_until > {NOW}"
            ),
            list: format!(
                "SELECT owner, acquisition_id, token, \
                 TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', locked_at), \
                 TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', lock_until), name \
                 FROM {t} WHERE lock_until > {NOW}"
            ),
            force_release: format!(
                "UPDATE {t} SET lock_until = {NOW} WHERE name = ? AND lock_until > {NOW}"
            ),
        }
    }
}

impl MysqlBackend {
    /// Connects to the database named by `url` and checks (or creates) the table.
    ///
    /// Fails with a clear [`Error::Connect`] within `connect_timeout` when the
    /// server is unreachable or refuses the credentials.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::new()).await
    }

    /// Like [`MysqlBackend::connect`], with `options` taking precedence over
    /// the URL (a user and password kept out of it; the TLS roots).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut net = config::split_net_url(
            KIND,
            url,
            &["mysql", "mariadb"],
            "mysql",
            3306,
            false,
            &[],
            DRIVER_KEYS,
        )?;
        net.apply(KIND, options)?;
        let mut connect_opts = MySqlConnectOptions::from_str(&net.driver_url).map_err(|e| {
            Error::InvalidConfig(format!(
                "mysql URL for {} is not accepted by the driver: {}",
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
            let ca = net.driver_value(&["ssl-ca", "sslca"]);
            connect_opts = connect_opts.ssl_ca_from_pem(tls::system_roots_pem(KIND, ca)?);
        }
        if connect_opts.get_database().is_none_or(str::is_empty) {
            return Err(Error::InvalidConfig(format!(
                "mysql URL for {} names no database: use mysql://user:password@host:port/DATABASE",
                net.target
            )));
        }
        let opts = net.opts;
        let target = net.target;
        // A direct first connection, so a refused connection or a bad password
        // surfaces as such (the pool would retry until it times out).
        let mut first = with_deadline("connect to mysql", opts.connect_timeout, async {
            MySqlConnection::connect_with(&connect_opts)
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
        let sql = Statements::new(&opts.table);
        Ok(MysqlBackend {
            pool,
            opts,
            target,
            sql,
        })
    }

    /// Builds a backend on a pool the application already has, checking (or,
    /// with `opts.create_table`, creating) the table. `pool_size` and
    /// `connect_timeout` in `opts` are ignored: the pool's own settings apply.
    pub async fn from_pool(pool: MySqlPool, opts: SqlOptions) -> Result<Self> {
        config::validate_table(&opts.table, false)?;
        opts.check_timeouts()?;
        let co = pool.connect_options();
        let target = format!(
            "{}:{}/{}",
            co.get_host(),
            co.get_port(),
            co.get_database().unwrap_or("")
        );
        let mut conn = with_deadline("connect to mysql", opts.connect_timeout, async {
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
        Ok(MysqlBackend {
            pool,
            opts,
            target,
            sql,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SqlOptions {
        &self.opts
    }

    /// The underlying pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Runs one statement with the statement deadline, retrying when InnoDB
    /// chose it as a deadlock victim (it was rolled back, so this is safe).
    async fn exec<'q>(
        &self,
        op: &'static str,
        sql: &'q str,
        bind: impl Fn(MyQuery<'q>) -> MyQuery<'q>,
    ) -> Result<MySqlQueryResult> {
        with_deadline(op, self.opts.statement_timeout, async {
            let mut attempt = 0;
            loop {
                match bind(sqlx::query(sql)).execute(&self.pool).await {
                    Ok(r) => return Ok(r),
                    Err(e) if is_deadlock(&e) && attempt < DEADLOCK_RETRIES => {
                        attempt += 1;
                        tracing::debug!(op, attempt, "deadlock victim; retrying");
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
                    }
                    Err(e) => return Err(op_error(op, e)),
                }
            }
        })
        .await
    }
}

type MyQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

fn is_deadlock(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|m| m.number() == 1213),
        _ => false,
    }
}

/// What a MySQL/MariaDB error number means for the caller.
fn refusal(e: &sqlx::Error) -> Refusal {
    let number = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number);
    match number {
        // ER_ACCESS_DENIED_ERROR; ER_ACCESS_DENIED_NO_PASSWORD_ERROR (auth
        // plugin); ER_NOT_SUPPORTED_AUTH_MODE; password expired (must be
        // changed); ER_ACCOUNT_HAS_BEEN_LOCKED
        Some(1045) | Some(1698) | Some(1251) | Some(1820) | Some(1862) | Some(3118) => {
            Refusal::Credentials
        }
        // this host may not connect; database, table, column, routine or
        // global privilege missing
        Some(1130) | Some(1044) | Some(1142) | Some(1143) | Some(1227) | Some(1370) => {
            Refusal::Privilege
        }
        Some(1049) => Refusal::NoDatabase,
        _ => Refusal::Other,
    }
}

fn connect_error(target: &str, e: sqlx::Error) -> Error {
    errors::connect_error(KIND, "MySQL/MariaDB", target, refusal(&e), e)
}

fn op_error(op: &'static str, e: sqlx::Error) -> Error {
    errors::op_error(KIND, op, refusal(&e), e)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

async fn ensure_table(conn: &mut MySqlConnection, opts: &SqlOptions) -> Result<()> {
    let table = &opts.table;
    let cols = columns(conn, table).await?;
    if !cols.is_empty() {
        return check_columns(table, &cols);
    }
    if !opts.create_table {
        return Err(Error::InvalidConfig(format!(
            "table {table:?} does not exist and create_table=false; create it with \
                 dlock-sql/migrations/mysql/0001_dlock_locks.sql"
        )));
    }
    let ddl = DDL.replace("dlock_locks", &quote_table(table, '`'));
    if let Err(e) = conn.execute(ddl.as_str()).await {
        let cols = columns(conn, table).await?;
        if cols.is_empty() || check_columns(table, &cols).is_err() {
            return Err(errors::create_table_error(
                KIND,
                "mysql",
                "database",
                table,
                refusal(&e),
                e,
            ));
        }
    }
    Ok(())
}

fn check_columns(table: &str, cols: &[(String, Option<String>)]) -> Result<()> {
    let names: Vec<String> = cols.iter().map(|(n, _)| n.clone()).collect();
    if let Some(e) = config::missing_columns_error(table, &names) {
        return Err(e);
    }
    // A text column with a case- or space-insensitive collation would make
    // `Email`, `email` and `email ` one lock.
    if let Some((_, Some(coll))) = cols.iter().find(|(n, _)| n.eq_ignore_ascii_case("name")) {
        if coll != "utf8mb4_0900_bin" {
            return Err(Error::InvalidConfig(format!(
                "column name of table {table:?} has collation {coll}, which does not compare \
                 lock names byte-exactly; change it with ALTER TABLE {table} MODIFY name \
                 VARBINARY(255) NOT NULL (see dlock-sql/migrations/mysql)"
            )));
        }
    }
    Ok(())
}

/// (column, collation) of the table's columns; empty when it does not exist.
async fn columns(conn: &mut MySqlConnection, table: &str) -> Result<Vec<(String, Option<String>)>> {
    let db: Option<Vec<u8>> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| op_error("inspect schema", e))?;
    if db.is_none() {
        return Err(Error::InvalidConfig(
            "no database selected: name one in the URL path, mysql://user:password@host:port/DATABASE"
                .into(),
        ));
    }
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS BINARY), CAST(COLLATION_NAME AS BINARY) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| op_error("inspect schema", e))?;
    rows.iter()
        .map(|r| {
            let name: Vec<u8> = r.try_get(0).map_err(|e| op_error("inspect schema", e))?;
            let coll: Option<Vec<u8>> = r.try_get(1).map_err(|e| op_error("inspect schema", e))?;
            Ok((text(name), coll.map(text)))
        })
        .collect()
}

/// A lock row's columns 0..=4 (owner, id, token, locked_at, lock_until).
fn info(row: &sqlx::mysql::MySqlRow, name: LockName, op: &'static str) -> Result<LockInfo> {
    let get = |e: sqlx::Error| op_error(op, e);
    Ok(LockInfo {
        name,
        owner: text(row.try_get(0).map_err(get)?),
        id: Some(text(row.try_get(1).map_err(get)?)),
        token: config::token_of(KIND, row.try_get(2).map_err(get)?)?,
        locked_at: config::system_time(row.try_get(3).map_err(get)?),
        lock_until: config::system_time(row.try_get(4).map_err(get)?),
    })
}

#[async_trait]
impl LockBackend for MysqlBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        config::sql_capabilities(Duration::from_millis(50), Duration::from_millis(100))
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        let id = new_acquisition_id();
        let lease_us = micros(KIND, spec.at_most)?;
        let name = spec.name.as_str().as_bytes();
        let owner = spec.owner.as_bytes();
        let sent = BootInstant::now();
        let done = self
            .exec("acquire", &self.sql.acquire, |q| {
                q.bind(name)
                    .bind(owner)
                    .bind(id.as_bytes())
                    .bind(lease_us)
                    .bind(owner)
                    .bind(id.as_bytes())
                    .bind(lease_us)
            })
            .await?;
        let token = done.last_insert_id();
        if token == 0 {
            return Ok(None);
        }
        Ok(Some(Lease::granted(
            spec,
            id,
            FencingToken(token),
            sent,
            String::new(),
        )))
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.capabilities()
            .check_lease(KIND, "extension", lock_for)?;
        let us = micros(KIND, lock_for)?;
        let sent = BootInstant::now();
        let done = self
            .exec("extend", &self.sql.extend, |q| {
                q.bind(us)
                    .bind(lease.name.as_str().as_bytes())
                    .bind(lease.id.as_bytes())
            })
            .await?;
        // The driver asks for "found rows": 1 whenever the row matched.
        if done.rows_affected() == 0 {
            return Err(Error::lost(
                &lease.name,
                "the lease expired or was taken over before it could be extended",
            ));
        }
        Ok(lease.extended(lock_for, sent))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let us = micros(KIND, lease.at_least)?;
        let done = self
            .exec("release", &self.sql.release, |q| {
                q.bind(us)
                    .bind(lease.name.as_str().as_bytes())
                    .bind(lease.id.as_bytes())
            })
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
        let row = with_deadline("inspect", self.opts.statement_timeout, async {
            sqlx::query(&self.sql.inspect)
                .bind(name.as_str().as_bytes())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| op_error("inspect", e))
        })
        .await?;
        row.map(|r| info(&r, name.clone(), "inspect")).transpose()
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let rows = with_deadline("list", self.opts.statement_timeout, async {
            sqlx::query(&self.sql.list)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| op_error("list", e))
        })
        .await?;
        rows.iter()
            .map(|r| {
                let name: Vec<u8> = r.try_get(5).map_err(|e| op_error("list", e))?;
                let name = String::from_utf8(name).map_err(|_| {
                    Error::backend_msg(KIND, "list", "a lock name in the table is not UTF-8")
                })?;
                info(r, config::stored_name(KIND, name)?, "list")
            })
            .collect()
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let done = self
            .exec("force release", &self.sql.force_release, |q| {
                q.bind(name.as_str().as_bytes())
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
