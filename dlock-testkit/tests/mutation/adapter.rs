//! A copy of dlock-sql's SQLite adapter as an outside author would write it
//! (dlock-core and sqlx's `sqlite` feature only), with seeded bugs.
//!
//! `DLOCK_MUTANT=<name>` (read when the backend is built) switches one bug
//! on; unset, this is the faithful copy and passes the whole suite. The list
//! of mutants, with the promise each breaks, is [`MUTANTS`].

use dlock_core::{
    async_trait, local_valid_until, new_acquisition_id, with_deadline, BootInstant, Capabilities,
    Error, FencingToken, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KIND: &str = "sqlite";

/// The environment variable naming the active mutant.
pub const ENV: &str = "DLOCK_MUTANT";

/// One seeded bug.
pub struct Mutant {
    /// Its `DLOCK_MUTANT` value.
    pub name: &'static str,
    /// The contract clause (README, "The contract") or `LockBackend` doc row it breaks.
    pub breaks: &'static str,
    /// `Some(why)` when it cannot break the contract on SQLite.
    pub equivalent: Option<&'static str>,
    /// Slow cases (skipped for most mutants) this one also runs.
    pub slow: &'static [&'static str],
}

const fn m(name: &'static str, breaks: &'static str) -> Mutant {
    Mutant {
        name,
        breaks,
        equivalent: None,
        slow: &[],
    }
}

/// Every mutant. `equivalent` ones say why they cannot break the contract here.
pub const MUTANTS: &[Mutant] = &[
    // 1. Mutual exclusion; try_acquire: "one atomic operation ... Ok(None) when another valid lease holds it".
    m("acquire_ignores_expiry", "1 exclusion: takes a valid lease"),
    Mutant {
        slow: &["concurrency_no_overlap"],
        ..m(
            "read_then_write",
            "1 exclusion: SELECT then an unconditional upsert, not one statement",
        )
    },
    // 2. The coordinator's clock decides expiry; local validity.
    Mutant {
        equivalent: Some(
            "embedded SQLite has no clock of its own: julianday('now') reads the clock of the \
             process running the statement, the same clock (and the same libfaketime skew) as \
             SystemTime::now() in that process, so binding a Rust `now` changes no outcome; the \
             backend declares server_clock: false and skewed_client_clock is ignored for it",
        ),
        ..m(
            "client_clock",
            "2 clock: `now` computed in Rust and bound as a parameter",
        )
    },
    m(
        "acquire_validity_from_response",
        "2 local validity of a grant counted from the answer, not the send",
    ),
    m(
        "extend_validity_from_response",
        "2 local validity of an extension (and so of keep-alive) counted from the answer",
    ),
    Mutant {
        equivalent: Some(
            "on one host the statement reads the clock after the request was sent, so \
             sent + lease ends before the row's lock_until; the margin only covers clock-rate \
             drift between hosts, which one SQLite file shared by one host's processes cannot have",
        ),
        ..m(
            "validity_no_margin",
            "2 local validity without the safety margin",
        )
    },
    m("validity_doubled", "2 local validity twice the lease"),
    // 3. Fencing tokens.
    m(
        "token_not_bumped",
        "3 tokens: the acquiring statement keeps the old token",
    ),
    m(
        "token_bumped_only_for_new_owner",
        "3 tokens: same owner re-acquiring keeps its token",
    ),
    m(
        "token_reused_after_force_release",
        "3 tokens / force_release: deletes the row, the counter restarts at 1",
    ),
    m(
        "token_per_connection",
        "3 tokens: a per-connection counter instead of the row's",
    ),
    // 4. Ownership; extend/release: "this exact lease", stale -> LockLost.
    m(
        "release_ignores_id",
        "4 ownership: release matches the name only",
    ),
    m(
        "extend_ignores_id",
        "4 ownership: extend matches the name only",
    ),
    m(
        "extend_revives_expired",
        "4 stale lease: extend of an expired, not taken lease succeeds",
    ),
    m(
        "release_revives_expired",
        "4 stale lease: release of an expired, not taken lease succeeds",
    ),
    m(
        "release_keeps_id",
        "4 stale lease: a released lease keeps its id and can extend within at_least",
    ),
    m(
        "extend_ignores_rows",
        "4 extend: Ok although no row matched (LockLost)",
    ),
    m(
        "release_ignores_rows",
        "4 release: Ok although no row matched (LockLost)",
    ),
    // 5. Lease bounds; release honours at_least; extend "lock_for from now".
    m("at_least_ignored", "5 at_least: release frees at once"),
    m(
        "at_least_from_release",
        "5 at_least: counted from the release, not the acquisition",
    ),
    m(
        "acquire_lease_one_second_long",
        "5 at_most: the row holds at_most + 1 s (slack declared: 20 ms)",
    ),
    m(
        "extend_uses_at_most",
        "extend: uses at_most instead of lock_for",
    ),
    m("extend_doubled", "extend: holds 2 x lock_for"),
    m(
        "extend_from_old_deadline",
        "extend: lock_for added to the old deadline, not to now",
    ),
    // 6. Skip or wait; errors are Err.
    m(
        "errors_as_none",
        "6 errors: any try_acquire error answered Ok(None)",
    ),
    m(
        "lazy_connect_errors_as_none",
        "6 errors: lazy connect, statement errors answered Ok(None)",
    ),
    m(
        "extend_errors_as_ok",
        "6 errors: a failed extend statement answered as a granted extension",
    ),
    m(
        "release_errors_as_ok",
        "6 errors: a failed release statement answered Ok",
    ),
    m(
        "inspect_errors_as_none",
        "6 errors: a failed inspect answered Ok(None) (\"nobody holds it\")",
    ),
    m(
        "list_errors_as_empty",
        "6 errors: a failed list answered an empty list",
    ),
    m(
        "force_release_errors_as_false",
        "6 errors: a failed force_release answered Ok(false)",
    ),
    m("wait_never_wakes", "6 wait_for_release sleeps max_wait"),
    m("wait_wakes_late", "6 wait_for_release sleeps 3 s"),
    // 7. Keep-alive and loss.
    m(
        "extend_noop",
        "7 keep-alive: extend answers Ok and changes nothing",
    ),
    // 8. Release.
    m("release_noop", "8 release: answers Ok and changes nothing"),
    // 9. Names.
    m("name_case_folded", "9 names: lower-cased"),
    m("name_trimmed", "9 names: surrounding whitespace trimmed"),
    m("name_truncated_64", "9 names: cut to 64 bytes"),
    m("name_ascii_lossy", "9 names: non-ASCII stored as '?'"),
    // 10. Capabilities: never silently rounded.
    m(
        "acquire_below_min_accepted",
        "10 capabilities: a lease below min_lease is accepted",
    ),
    m(
        "acquire_rounded_up_to_min",
        "10 capabilities: a lease below min_lease silently becomes min_lease",
    ),
    m(
        "extend_rounded_up_to_min",
        "10 capabilities: an extension below min_lease silently becomes min_lease",
    ),
    // inspect / list / force_release docs.
    m(
        "inspect_wrong_owner",
        "inspect: reports the id as the owner",
    ),
    m(
        "inspect_includes_expired",
        "inspect: reports expired leases",
    ),
    m("list_first_page_only", "list: at most 2 entries"),
    m("list_includes_expired", "list: reports expired leases"),
    m(
        "force_release_noop",
        "force_release: answers true, frees nothing",
    ),
];

/// Locks in a SQLite file: `sqlite://<path>?table=<name>`.
pub struct MutantSqlite {
    pool: SqlitePool,
    table: String,
    mutant: Option<&'static str>,
    counter: AtomicU64,
}

impl MutantSqlite {
    /// Opens (creating) the database, with the mutant named by `DLOCK_MUTANT`.
    pub async fn connect(url: &str) -> Result<Self> {
        let mutant = match std::env::var(ENV) {
            Err(_) => None,
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(
                MUTANTS
                    .iter()
                    .find(|m| m.name == v)
                    .map(|m| m.name)
                    .ok_or_else(|| Error::InvalidConfig(format!("unknown {ENV}={v:?}")))?,
            ),
        };
        let rest = url
            .strip_prefix("sqlite://")
            .ok_or_else(|| Error::InvalidConfig(format!("{url:?} is not a sqlite:// URL")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let table = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("table="))
            .unwrap_or("dlock_locks")
            .to_string();
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::InvalidConfig(format!("bad table name {table:?}")));
        }
        let lazy = mutant == Some("lazy_connect_errors_as_none");
        if !lazy {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    return Err(Error::connect(
                        KIND,
                        path,
                        format!("directory {} does not exist", dir.display()),
                        None,
                    ));
                }
            }
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool_opts = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5));
        let pool = if lazy {
            pool_opts.connect_lazy_with(opts)
        } else {
            with_deadline("connect to sqlite", Duration::from_secs(5), async {
                pool_opts.connect_with(opts).await.map_err(|e| {
                    Error::connect(KIND, path, format!("cannot open {path}: {e}"), None)
                })
            })
            .await?
        };
        let b = MutantSqlite {
            pool,
            table,
            mutant,
            counter: AtomicU64::new(0),
        };
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS \"{}\" (name TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
             acquisition_id TEXT NOT NULL, token INTEGER NOT NULL, locked_at INTEGER NOT NULL, \
             lock_until INTEGER NOT NULL)",
            b.table
        );
        let created = b
            .timed("create table", sqlx::query(&ddl).execute(&b.pool))
            .await;
        match created {
            Err(_) if lazy => {}
            other => {
                other?;
            }
        }
        Ok(b)
    }

    fn is(&self, name: &str) -> bool {
        self.mutant == Some(name)
    }

    /// `clause`, or nothing when `mutant` (the bug of leaving it out) is on.
    fn unless(&self, mutant: &str, clause: String) -> String {
        if self.is(mutant) {
            String::new()
        } else {
            clause
        }
    }

    /// The database's clock, or (`client_clock`) parameter `?n` bound from Rust.
    fn now(&self, n: u8) -> String {
        if self.is("client_clock") {
            format!("?{n}")
        } else {
            "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)".to_string()
        }
    }

    fn client_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// The name as stored.
    fn key(&self, name: &LockName) -> String {
        let s = name.as_str();
        if self.is("name_case_folded") {
            s.to_lowercase()
        } else if self.is("name_trimmed") {
            s.trim().to_string()
        } else if self.is("name_truncated_64") {
            let mut end = s.len().min(64);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        } else if self.is("name_ascii_lossy") {
            s.chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect()
        } else {
            s.to_string()
        }
    }

    fn t(&self) -> String {
        format!("\"{}\"", self.table)
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    ) -> Result<T> {
        with_deadline(op, Duration::from_secs(10), async {
            fut.await.map_err(|e| Error::backend(KIND, op, e))
        })
        .await
    }

    fn check_spec(&self, spec: &LockSpec) -> Result<()> {
        if self.is("acquire_below_min_accepted") || self.is("acquire_rounded_up_to_min") {
            spec.validate()
        } else {
            self.capabilities().check_spec(KIND, spec)
        }
    }

    async fn acquire_inner(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.check_spec(spec)?;
        let caps = self.capabilities();
        let id = new_acquisition_id();
        let mut at_most = spec.at_most;
        if self.is("acquire_rounded_up_to_min") {
            at_most = at_most.max(caps.min_lease);
        }
        if self.is("acquire_lease_one_second_long") {
            at_most += Duration::from_secs(1);
        }
        let lease_us = micros(at_most)?;
        let key = self.key(&spec.name);
        let mut sent = BootInstant::now();
        let token = if self.is("read_then_write") {
            self.read_then_write(&key, spec, &id, lease_us).await?
        } else {
            let (t, now) = (self.t(), self.now(5));
            let bump = if self.is("token_not_bumped") {
                format!("{t}.token")
            } else if self.is("token_bumped_only_for_new_owner") {
                format!("{t}.token + ({t}.owner <> excluded.owner)")
            } else {
                format!("{t}.token + 1")
            };
            let guard = if self.is("acquire_ignores_expiry") {
                String::new()
            } else {
                format!("WHERE {t}.lock_until <= excluded.locked_at")
            };
            let sql = format!(
                "INSERT INTO {t} (name, owner, acquisition_id, token, locked_at, lock_until) \
                 VALUES (?1, ?2, ?3, 1, {now}, {now} + ?4) \
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, \
                 acquisition_id = excluded.acquisition_id, token = {bump}, \
                 locked_at = excluded.locked_at, lock_until = excluded.lock_until \
                 {guard} RETURNING token"
            );
            let mut q = sqlx::query(&sql)
                .bind(&key)
                .bind(&spec.owner)
                .bind(&id)
                .bind(lease_us);
            if self.is("client_clock") {
                q = q.bind(Self::client_now());
            }
            let rows = self.timed("acquire", q.fetch_all(&self.pool)).await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let token: i64 = row
                .try_get(0)
                .map_err(|e| Error::backend(KIND, "acquire", e))?;
            if self.is("token_per_connection") {
                self.counter.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                u64::try_from(token)
                    .map_err(|_| Error::backend_msg(KIND, "acquire", "negative token"))?
            }
        };
        if self.is("acquire_validity_from_response") {
            sent = BootInstant::now();
        }
        let mut lease = Lease::granted(spec, id, FencingToken(token), sent, String::new());
        if self.is("validity_doubled") {
            lease.valid_until = local_valid_until(sent, spec.at_most * 2);
        }
        if self.is("validity_no_margin") {
            lease.valid_until = sent + spec.at_most;
        }
        Ok(Some(lease))
    }

    /// `read_then_write`: decides in Rust from a SELECT, then writes.
    async fn read_then_write(
        &self,
        key: &str,
        spec: &LockSpec,
        id: &str,
        lease_us: i64,
    ) -> Result<u64> {
        let t = self.t();
        let now = self.now(9);
        let row = self
            .timed(
                "acquire",
                sqlx::query(&format!(
                    "SELECT token, lock_until > {now} FROM {t} WHERE name = ?1"
                ))
                .bind(key)
                .fetch_optional(&self.pool),
            )
            .await?;
        let old: i64 = match row {
            Some(r) => {
                let held: bool = r
                    .try_get(1)
                    .map_err(|e| Error::backend(KIND, "acquire", e))?;
                if held {
                    return Err(Error::lost(&spec.name, "held"));
                }
                r.try_get(0)
                    .map_err(|e| Error::backend(KIND, "acquire", e))?
            }
            None => 0,
        };
        self.timed(
            "acquire",
            sqlx::query(&format!(
                "INSERT OR REPLACE INTO {t} (name, owner, acquisition_id, token, locked_at, lock_until) \
                 VALUES (?1, ?2, ?3, ?5, {now}, {now} + ?4)"
            ))
            .bind(key)
            .bind(&spec.owner)
            .bind(id)
            .bind(lease_us)
            .bind(old + 1)
            .execute(&self.pool),
        )
        .await?;
        u64::try_from(old + 1).map_err(|_| Error::backend_msg(KIND, "acquire", "negative token"))
    }
}

fn micros(d: Duration) -> Result<i64> {
    i64::try_from(d.as_micros())
        .map_err(|_| Error::unsupported(KIND, format!("a lease of {d:?} is too long")))
}

fn system_time(us: i64) -> Option<SystemTime> {
    u64::try_from(us)
        .ok()
        .map(|u| UNIX_EPOCH + Duration::from_micros(u))
}

fn info(row: &SqliteRow, name: LockName) -> Result<LockInfo> {
    let get = |e: sqlx::Error| Error::backend(KIND, "inspect", e);
    let token: i64 = row.try_get(2).map_err(get)?;
    Ok(LockInfo {
        name,
        owner: row.try_get(0).map_err(get)?,
        id: Some(row.try_get(1).map_err(get)?),
        token: FencingToken(
            u64::try_from(token).map_err(|_| Error::backend_msg(KIND, "inspect", "bad token"))?,
        ),
        locked_at: system_time(row.try_get(3).map_err(get)?),
        lock_until: system_time(row.try_get(4).map_err(get)?),
    })
}

#[async_trait]
impl LockBackend for MutantSqlite {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::new();
        c.min_lease = Duration::from_millis(50);
        c.max_lease = Some(Duration::from_secs(100 * 365 * 86_400));
        c.lease_granularity = Duration::from_micros(1);
        c.expiry_slack = Duration::from_millis(20);
        c.at_least_slack = Duration::from_millis(20);
        c.release_notifies_waiters = false;
        c.at_least_survives_exit = true;
        c.networked = false;
        c.poll_interval = Duration::from_millis(50);
        c.server_clock = false;
        c.list = true;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        let r = self.acquire_inner(spec).await;
        match r {
            Err(e) if self.is("read_then_write") && e.is_lock_lost() => Ok(None),
            Err(_) if self.is("errors_as_none") => Ok(None),
            Err(Error::Backend { .. }) | Err(Error::Timeout { .. })
                if self.is("lazy_connect_errors_as_none") =>
            {
                Ok(None)
            }
            other => other,
        }
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        let caps = self.capabilities();
        let mut length = lock_for;
        if self.is("extend_rounded_up_to_min") {
            length = length.max(caps.min_lease);
        }
        caps.check_lease(KIND, "extension", length)?;
        if self.is("extend_uses_at_most") {
            length = lease.at_most;
        }
        if self.is("extend_doubled") {
            length *= 2;
        }
        let mut sent = BootInstant::now();
        if !self.is("extend_noop") {
            let (t, now) = (self.t(), self.now(4));
            let base = if self.is("extend_from_old_deadline") {
                "lock_until".to_string()
            } else {
                now.clone()
            };
            let id = self.unless("extend_ignores_id", "AND acquisition_id = ?2".into());
            let live = self.unless("extend_revives_expired", format!("AND lock_until > {now}"));
            let sql = format!(
                "UPDATE {t} SET lock_until = {base} + ?3 WHERE name = ?1 {id} {live} \
                 AND ?2 IS NOT NULL"
            );
            let mut q = sqlx::query(&sql)
                .bind(self.key(&lease.name))
                .bind(&lease.id)
                .bind(micros(length)?);
            if self.is("client_clock") {
                q = q.bind(Self::client_now());
            }
            let done = match self.timed("extend", q.execute(&self.pool)).await {
                Err(_) if self.is("extend_errors_as_ok") => {
                    return Ok(lease.extended(lock_for, sent))
                }
                r => r?,
            };
            if done.rows_affected() == 0 && !self.is("extend_ignores_rows") {
                return Err(Error::lost(
                    &lease.name,
                    "the lease expired or was taken over before it could be extended",
                ));
            }
        }
        if self.is("extend_validity_from_response") {
            sent = BootInstant::now();
        }
        let mut new = lease.extended(lock_for, sent);
        if self.is("validity_doubled") {
            new.valid_until = local_valid_until(sent, lock_for * 2);
        }
        if self.is("validity_no_margin") {
            new.valid_until = sent + lock_for;
        }
        Ok(new)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        if self.is("release_noop") {
            return Ok(());
        }
        let (t, now) = (self.t(), self.now(4));
        let until = if self.is("at_least_ignored") {
            now.clone()
        } else if self.is("at_least_from_release") {
            format!("{now} + ?3")
        } else {
            format!("MAX(locked_at + ?3, {now})")
        };
        let mark = if self.is("release_keeps_id") {
            ""
        } else {
            ", acquisition_id = 'released:' || acquisition_id"
        };
        let id = self.unless("release_ignores_id", "AND acquisition_id = ?2".into());
        let live = self.unless("release_revives_expired", format!("AND lock_until > {now}"));
        let sql = format!(
            "UPDATE {t} SET lock_until = {until}{mark} WHERE name = ?1 {id} {live} \
             AND ?2 IS NOT NULL AND ?3 IS NOT NULL"
        );
        let mut q = sqlx::query(&sql)
            .bind(self.key(&lease.name))
            .bind(&lease.id)
            .bind(micros(lease.at_least)?);
        if self.is("client_clock") {
            q = q.bind(Self::client_now());
        }
        let done = match self.timed("release", q.execute(&self.pool)).await {
            Err(_) if self.is("release_errors_as_ok") => return Ok(()),
            r => r?,
        };
        if done.rows_affected() == 0 && !self.is("release_ignores_rows") {
            return Err(Error::lost(
                &lease.name,
                "the lease had already expired or been taken over at release",
            ));
        }
        Ok(())
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let (t, now) = (self.t(), self.now(2));
        let owner = if self.is("inspect_wrong_owner") {
            "acquisition_id"
        } else {
            "owner"
        };
        let live = if self.is("inspect_includes_expired") {
            "1 = 1".to_string()
        } else {
            format!("lock_until > {now}")
        };
        let sql = format!(
            "SELECT {owner}, acquisition_id, token, locked_at, lock_until FROM {t} \
             WHERE name = ?1 AND {live}"
        );
        let mut q = sqlx::query(&sql).bind(self.key(name));
        if self.is("client_clock") {
            q = q.bind(Self::client_now());
        }
        let row = match self.timed("inspect", q.fetch_optional(&self.pool)).await {
            Err(_) if self.is("inspect_errors_as_none") => return Ok(None),
            r => r?,
        };
        row.map(|r| info(&r, name.clone())).transpose()
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let (t, now) = (self.t(), self.now(1));
        let live = if self.is("list_includes_expired") {
            "1 = 1".to_string()
        } else {
            format!("lock_until > {now}")
        };
        let limit = if self.is("list_first_page_only") {
            "ORDER BY name LIMIT 2"
        } else {
            ""
        };
        let sql = format!(
            "SELECT owner, acquisition_id, token, locked_at, lock_until, name FROM {t} \
             WHERE {live} {limit}"
        );
        let mut q = sqlx::query(&sql);
        if self.is("client_clock") {
            q = q.bind(Self::client_now());
        }
        let rows = match self.timed("list", q.fetch_all(&self.pool)).await {
            Err(_) if self.is("list_errors_as_empty") => return Ok(Vec::new()),
            r => r?,
        };
        rows.iter()
            .map(|r| {
                let name: String = r.try_get(5).map_err(|e| Error::backend(KIND, "list", e))?;
                let name = LockName::new(name)
                    .map_err(|e| Error::backend_msg(KIND, "list", format!("bad name: {e}")))?;
                info(r, name)
            })
            .collect()
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        if self.is("force_release_noop") {
            return Ok(true);
        }
        let (t, now) = (self.t(), self.now(2));
        let sql = if self.is("token_reused_after_force_release") {
            format!("DELETE FROM {t} WHERE name = ?1 AND lock_until > {now}")
        } else {
            format!("UPDATE {t} SET lock_until = {now} WHERE name = ?1 AND lock_until > {now}")
        };
        let mut q = sqlx::query(&sql).bind(self.key(name));
        if self.is("client_clock") {
            q = q.bind(Self::client_now());
        }
        let done = match self.timed("force release", q.execute(&self.pool)).await {
            Err(_) if self.is("force_release_errors_as_false") => return Ok(false),
            r => r?,
        };
        Ok(done.rows_affected() > 0)
    }

    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        let _ = name;
        let pause = if self.is("wait_never_wakes") {
            max_wait
        } else if self.is("wait_wakes_late") {
            Duration::from_secs(3).min(max_wait)
        } else {
            dlock_core::jittered(self.capabilities().poll_interval).min(max_wait)
        };
        tokio::time::sleep(pause).await;
        Ok(())
    }
}
