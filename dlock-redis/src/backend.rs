//! [`RedisBackend`]: the lock contract on one Redis (or Valkey) server.

use crate::config::RedisConfig;
use crate::errors::{connect_error, within};
use crate::release_feed::{ReleaseFeed, ANY};
use crate::scripts::{ACQUIRE, EXTEND, FORCE_RELEASE, INSPECT, RELEASE};
use crate::{tls, KIND};
use dlock_core::{
    async_trait, jittered, new_acquisition_id, BootInstant, Capabilities, ConnectOptions, Error,
    FencingToken, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::broadcast::error::RecvError;

/// The oldest server this adapter runs on: 7.0, where scripts always
/// replicate (and write to the AOF) their effects, not their source, so a
/// script may read `TIME` before it writes.
pub const MIN_SERVER_VERSION: (u32, u32) = (7, 0);

/// The longest lease accepted: 100 years. The scripts count time in µs as
/// Lua doubles, exact below 2^53 µs (year 2255); now + 100 years stays
/// well below that.
pub const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How many keys one `SCAN` step of `list` asks for.
const LIST_BATCH: usize = 500;

/// A Redis server as a dlock backend. Clones share the connection.
///
/// One multiplexed connection carries every request (redis-rs reconnects
/// it after a failure; the failed request reports the error), and a second
/// one, opened with the first wait, listens for releases.
///
/// ```no_run
/// # async fn f() -> dlock_core::Result<()> {
/// let backend = dlock_redis::RedisBackend::connect("redis://app:secret@127.0.0.1:6379/0").await?;
/// let locker = dlock_core::Locker::new(backend);
/// if let Some(guard) = locker.try_lock("nightly-report", std::time::Duration::from_secs(60)).await? {
///     println!("token {}", guard.token());
///     guard.release().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    conn: ConnectionManager,
    feed: Arc<ReleaseFeed>,
    /// `<prefix>:lock:` and `<prefix>:released`.
    lock_prefix: String,
    channel: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl RedisBackend {
    /// Connects from a `redis://` or `rediss://` URL (see [`RedisConfig`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::new()).await
    }

    /// Like [`RedisBackend::connect`], with `options` taking precedence
    /// over the URL.
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut config = RedisConfig::from_url(url)?;
        config.apply(options)?;
        Self::from_config(config).await
    }

    /// Connects with `config`: logs in, and checks that the server is
    /// Redis 7.0 or later and (unless `require_aof` is off) writes an
    /// append-only file. Every failure is an error naming the server.
    pub async fn from_config(config: RedisConfig) -> Result<Self> {
        config.check()?;
        let target = config.target();
        let client = client(&config)?;
        let first = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.request_timeout));
        let setup = config.connect_timeout + config.request_timeout;
        let mut conn = match tokio::time::timeout(
            setup,
            client.get_multiplexed_async_connection_with_config(&first),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_error(&target, e, setup)),
            Err(_) => {
                return Err(Error::connect(
                    KIND,
                    &target,
                    format!("no answer within {setup:?}; is the server running and reachable?"),
                    None,
                ))
            }
        };
        let info: String = within(
            "connect",
            config.request_timeout,
            redis::cmd("INFO")
                .arg("server")
                .arg("persistence")
                .arg("memory")
                .query_async(&mut conn),
        )
        .await?;
        check_server(&config, &target, &info)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.request_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| connect_error(&target, e, setup))?;
        let channel = format!("{}:released", config.prefix);
        let feed = ReleaseFeed::new(
            client,
            channel.clone(),
            target.clone(),
            config.connect_timeout,
            config.request_timeout,
        );
        tracing::debug!(backend = KIND, target = %target, "connected");
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                lock_prefix: format!("{}:lock:", config.prefix),
                channel,
                config,
                conn,
                feed,
            }),
        })
    }

    /// The configuration this backend runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    fn lock_key(&self, name: &LockName) -> String {
        format!("{}{}", self.inner.lock_prefix, name.as_str())
    }

    fn deadline(&self) -> Duration {
        self.inner.config.request_timeout
    }

    /// Runs one script invocation with the request deadline.
    async fn run<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        within(
            operation,
            self.deadline(),
            invocation.invoke_async(&mut conn),
        )
        .await
    }

    /// Holders of `names`, as the server sees them now, and the server's
    /// time (µs since the epoch).
    async fn inspect_keys(&self, names: &[LockName]) -> Result<(u64, Vec<Option<LockInfo>>)> {
        let mut script = INSPECT.prepare_invoke();
        for name in names {
            script.key(self.lock_key(name));
        }
        let out: Vec<String> = self.run("inspect", &script).await?;
        let bad = || {
            Error::backend_msg(
                KIND,
                "inspect",
                "the inspect script answered in an unexpected shape",
            )
        };
        let (now, rest) = out.split_first().ok_or_else(bad)?;
        let now_us: u64 = now.parse().map_err(|_| bad())?;
        if rest.len() != names.len() * 5 {
            return Err(bad());
        }
        let at = |f: &str| UNIX_EPOCH.checked_add(Duration::from_micros(f.parse().ok()?));
        let infos = names
            .iter()
            .zip(rest.chunks(5))
            .map(|(name, f)| {
                // `until` is answered exactly while the lock is taken.
                if f[4].is_empty() {
                    return None;
                }
                Some(LockInfo {
                    name: name.clone(),
                    owner: f[0].clone(),
                    id: (!f[1].is_empty()).then(|| f[1].clone()),
                    token: FencingToken(f[2].parse().unwrap_or(0)),
                    locked_at: at(&f[3]),
                    lock_until: at(&f[4]),
                })
            })
            .collect();
        Ok((now_us, infos))
    }

    /// How long until the lock is free by the server's clock, `None` when
    /// it is free now.
    async fn remaining(&self, name: &LockName) -> Result<Option<Duration>> {
        let (now_us, mut found) = self.inspect_keys(std::slice::from_ref(name)).await?;
        let Some(Some(info)) = found.pop() else {
            return Ok(None);
        };
        let now = UNIX_EPOCH + Duration::from_micros(now_us);
        let until = info.lock_until.unwrap_or(now);
        Ok(Some(until.duration_since(now).unwrap_or_default()))
    }
}

/// A redis-rs client for `config` (no connection yet).
fn client(config: &RedisConfig) -> Result<redis::Client> {
    let addr = if config.tls {
        ConnectionAddr::TcpTls {
            host: config.host.clone(),
            port: config.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(config.host.clone(), config.port)
    };
    let mut login = RedisConnectionInfo::default().set_db(config.db);
    if let Some(user) = &config.user {
        login = login.set_username(user);
    }
    if let Some(password) = config.password() {
        login = login.set_password(password);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| Error::InvalidConfig(format!("Redis connection settings: {e}")))?
        .set_redis_settings(login);
    let built = match tls::root_certificates(config)? {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    };
    built.map_err(|e| Error::InvalidConfig(format!("Redis connection settings: {e}")))
}

/// Refuses a server this adapter cannot keep its promises on.
fn check_server(config: &RedisConfig, target: &str, info: &str) -> Result<()> {
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    let version = field("redis_version").unwrap_or("unknown");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_SERVER_VERSION {
        return Err(Error::unsupported(
            KIND,
            format!(
                "the server at {target} reports Redis {version}; dlock needs Redis 7.0 or later \
                 (or Valkey 7.2+), whose scripts replicate their effects"
            ),
        ));
    }
    // The lock hashes have no expiry, so volatile-* policies never touch
    // them; allkeys-* ones may evict a held lock and its token counter.
    let policy = field("maxmemory_policy").unwrap_or("noeviction");
    if policy.starts_with("allkeys") {
        return Err(Error::unsupported(
            KIND,
            format!(
                "the server at {target} evicts any key under memory pressure (maxmemory-policy \
                 {policy}): it could drop a held lock, and its token counter, while the holder \
                 still runs. Use noeviction or a volatile-* policy (CONFIG SET maxmemory-policy \
                 noeviction), or a Redis of its own for locks"
            ),
        ));
    }
    if config.require_aof && field("aof_enabled") != Some("1") {
        return Err(Error::unsupported(
            KIND,
            format!(
                "the server at {target} does not write an append-only file (appendonly no): a \
                 restart would forget every lock while its holders still run, and fencing tokens \
                 would start again from 1. Turn it on (appendonly yes in redis.conf, or CONFIG SET \
                 appendonly yes), or add require_aof=false to the URL if you accept that"
            ),
        ));
    }
    Ok(())
}

/// Whole milliseconds of `d` (the spec check has made sure it is whole).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lost(name: &LockName) -> Error {
    Error::lost(
        name,
        "the lease expired, was released or was taken over by another owner",
    )
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::new();
        // Leases travel to the scripts in whole milliseconds.
        c.lease_granularity = Duration::from_millis(1);
        c.min_lease = Duration::from_millis(1);
        c.max_lease = Some(MAX_LEASE);
        // Every script compares the lease's end with the server's TIME, so
        // a lapsed lease is free to the very next acquire; the slack covers
        // the request.
        c.expiry_slack = Duration::from_millis(50);
        c.at_least_slack = Duration::from_millis(50);
        c.release_notifies_waiters = true;
        c.list = true;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        let id = new_acquisition_id();
        let mut script = ACQUIRE.prepare_invoke();
        script
            .key(self.lock_key(&spec.name))
            .arg(&id)
            .arg(&spec.owner)
            .arg(millis(spec.at_most))
            .arg(millis(spec.at_least));
        let sent = BootInstant::now();
        let (taken, value): (i64, i64) = self.run("acquire", &script).await?;
        if taken != 1 {
            return Ok(None);
        }
        let token = u64::try_from(value).map_err(|_| {
            Error::backend_msg(
                KIND,
                "acquire",
                format!("the token counter is negative ({value})"),
            )
        })?;
        tracing::debug!(backend = KIND, lock = %spec.name, token, "acquired");
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
        let mut script = EXTEND.prepare_invoke();
        script
            .key(self.lock_key(&lease.name))
            .arg(&lease.id)
            .arg(millis(lock_for));
        let sent = BootInstant::now();
        let held: i64 = self.run("extend", &script).await?;
        if held != 1 {
            return Err(lost(&lease.name));
        }
        Ok(lease.extended(lock_for, sent))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut script = RELEASE.prepare_invoke();
        script
            .key(self.lock_key(&lease.name))
            .arg(&lease.id)
            .arg(&self.inner.channel)
            .arg(lease.name.as_str());
        let held: i64 = self.run("release", &script).await?;
        if held != 1 {
            return Err(lost(&lease.name));
        }
        Ok(())
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let (_, mut found) = self.inspect_keys(std::slice::from_ref(name)).await?;
        Ok(found.pop().flatten())
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let pattern = format!("{}*", self.inner.lock_prefix);
        let mut cursor: u64 = 0;
        let mut held = Vec::new();
        loop {
            let mut conn = self.inner.conn.clone();
            let (next, keys): (u64, Vec<Vec<u8>>) = within(
                "list",
                self.deadline(),
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(LIST_BATCH)
                    .query_async(&mut conn),
            )
            .await?;
            // A key under the prefix that is not a valid name was not
            // written by dlock: leave it out.
            let names: Vec<LockName> = keys
                .iter()
                .filter_map(|k| k.get(self.inner.lock_prefix.len()..))
                .filter_map(|n| std::str::from_utf8(n).ok())
                .filter_map(|n| LockName::new(n).ok())
                .collect();
            if !names.is_empty() {
                held.extend(self.inspect_keys(&names).await?.1.into_iter().flatten());
            }
            if next == 0 {
                return Ok(held);
            }
            cursor = next;
        }
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let mut script = FORCE_RELEASE.prepare_invoke();
        script
            .key(self.lock_key(name))
            .arg(&self.inner.channel)
            .arg(name.as_str());
        let removed: i64 = self.run("force release", &script).await?;
        Ok(removed == 1)
    }

    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        // Listening before the lock is read, so a release in between still
        // wakes this waiter.
        let notices = self.inner.feed.listen(max_wait).await;
        let Some(held_for) = self.remaining(name).await? else {
            return Ok(());
        };
        let wait = held_for.min(max_wait);
        let Some(mut notices) = notices else {
            let poll = jittered(self.capabilities().poll_interval);
            tokio::time::sleep(poll.min(wait)).await;
            return Ok(());
        };
        let released = async {
            loop {
                match notices.recv().await {
                    Ok(n) if &*n == name.as_str() || &*n == ANY => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                }
            }
        };
        let _ = tokio::time::timeout(wait, released).await;
        Ok(())
    }
}
