//! What every case receives: fresh connections, lockers, lease sizes, children.

use crate::child::{ChildProc, Role};
use crate::proxy::{redirect, upstream, Proxy};
use crate::{BreakFn, ConnectFn, NamespaceFn, Prepared};
use dlock_core::{BootInstant, Capabilities, LockBackend, LockName, LockSpec, Locker};
use std::sync::Arc;
use std::time::Duration;

/// The environment of one case.
#[derive(Clone)]
pub struct Ctx {
    /// Backend kind.
    pub backend: &'static str,
    /// The namespaced URL this run uses.
    pub url: String,
    /// The URL as configured, without namespace.
    pub base_url: String,
    /// The backend's declared capabilities.
    pub caps: Capabilities,
    pub(crate) connect: ConnectFn,
    pub(crate) unreachable_url: Option<String>,
    pub(crate) namespace: Option<NamespaceFn>,
    pub(crate) break_coordinator: Option<BreakFn>,
    pub(crate) case: &'static str,
    /// What a timing bound allows beyond the backend's declared slack:
    /// measured when the case starts.
    pub(crate) margin: Duration,
}

impl Ctx {
    pub(crate) fn new(backend: &'static str, p: Prepared) -> Self {
        Ctx {
            backend,
            url: p.url,
            base_url: p.base_url,
            caps: p.caps,
            connect: p.connect,
            unreachable_url: p.unreachable_url,
            namespace: p.namespace,
            break_coordinator: p.break_coordinator,
            case: "",
            margin: MARGIN_FLOOR,
        }
    }

    /// Measures this machine's timing noise right now, and sets the margin
    /// every bound in this case allows beyond the backend's declared slack:
    /// [`MARGIN_FLOOR`] plus three times (the worst overshoot of a short
    /// sleep + the worst round trip of a read at the coordinator), a few
    /// samples each. Prints what it measured, so a failing bound can be
    /// read against it.
    pub(crate) async fn measure_margin(&mut self) -> Result<(), String> {
        let mut overshoot = Duration::ZERO;
        for _ in 0..10 {
            let t = BootInstant::now();
            tokio::time::sleep(Duration::from_millis(1)).await;
            overshoot = overshoot.max(t.elapsed().saturating_sub(Duration::from_millis(1)));
        }
        let probe = self.fresh().await?;
        let name = LockName::new(self.name("margin-probe")).map_err(|e| e.to_string())?;
        let mut round_trip = Duration::ZERO;
        for _ in 0..3 {
            let t = BootInstant::now();
            probe
                .inspect(&name)
                .await
                .map_err(|e| format!("inspect, to measure a round trip: {e}"))?;
            round_trip = round_trip.max(t.elapsed());
        }
        self.margin = MARGIN_FLOOR + (overshoot + round_trip) * 3;
        eprintln!(
            "timing margin {:?} = floor {MARGIN_FLOOR:?} + 3 × (sleep overshoot {overshoot:?} + \
             round trip {round_trip:?})",
            self.margin
        );
        Ok(())
    }

    /// What a timing bound allows beyond the backend's declared slack:
    /// [`MARGIN_FLOOR`] plus three times the worst sleep overshoot and
    /// coordinator round trip measured when the case started.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    pub(crate) fn for_case(mut self, case: &'static str) -> Self {
        self.case = case;
        self
    }

    /// A new connection to the coordinator.
    pub async fn fresh(&self) -> Result<Arc<dyn LockBackend>, String> {
        self.connect_url(&self.url).await
    }

    /// A new connection to an arbitrary URL (the proxy, an unreachable one).
    pub async fn connect_url(&self, url: &str) -> Result<Arc<dyn LockBackend>, String> {
        (self.connect)(url.to_string())
            .await
            .map_err(|e| format!("connect failed: {e}"))
    }

    /// A locker on a new connection, with `owner`.
    pub async fn locker(&self, owner: &str) -> Result<Locker, String> {
        let b = self.fresh().await?;
        Locker::from_arc(b)
            .with_owner(owner)
            .map_err(|e| e.to_string())
    }

    /// A new connection through a loopback [`Proxy`] of the coordinator,
    /// which the case can cut, stall or slow down.
    pub async fn backend_through_proxy(&self) -> Result<(Proxy, Arc<dyn LockBackend>), String> {
        let up = upstream(&self.url).ok_or("the URL has no single host:port for the proxy")?;
        let proxy = Proxy::start(up).await?;
        let via = redirect(&self.url, proxy.addr()).ok_or("cannot point the URL at the proxy")?;
        let b = self.connect_url(&via).await?;
        Ok((proxy, b))
    }

    /// The URL of a namespace nobody else uses, when the suite has
    /// [`crate::Suite::namespace`].
    pub fn own_namespace_url(&self) -> Option<String> {
        self.namespace
            .as_ref()
            .map(|f| f(&self.base_url, &crate::namespace_id()))
    }

    /// A locker with `owner` on a new connection through a loopback
    /// [`Proxy`] of the coordinator, which the case can cut or stall.
    pub async fn locker_through_proxy(&self, owner: &str) -> Result<(Proxy, Locker), String> {
        let (proxy, b) = self.backend_through_proxy().await?;
        let l = Locker::from_arc(b)
            .with_owner(owner)
            .map_err(|e| e.to_string())?;
        Ok((proxy, l))
    }

    /// A locker sharing `backend`, with `owner`.
    pub fn locker_on(&self, backend: &Arc<dyn LockBackend>, owner: &str) -> Locker {
        Locker::from_arc(backend.clone())
            .with_owner(owner)
            .expect("valid owner")
    }

    /// A lock name unique to this case (so cases sharing a namespace never meet).
    pub fn name(&self, suffix: &str) -> String {
        format!("{}/{}", self.case, suffix)
    }

    /// The lease the suite uses for this backend: 1 s or the backend's minimum.
    pub fn lease(&self) -> Duration {
        self.caps.test_lease(Duration::from_secs(1))
    }

    /// A lease of at least `floor`, honouring the backend's bounds.
    pub fn lease_at_least(&self, floor: Duration) -> Duration {
        self.caps.test_lease(floor)
    }

    /// The longest an abandoned lease of `lease` may take to free up: the
    /// lease, the backend's declared `expiry_slack`, and [`Ctx::margin`].
    pub fn expiry_bound(&self, lease: Duration) -> Duration {
        lease + self.caps.expiry_slack + self.margin
    }

    /// The longest a lock released early may stay taken: `at_least`, the
    /// declared `at_least_slack`, and [`Ctx::margin`].
    pub fn at_least_bound(&self, at_least: Duration) -> Duration {
        at_least + self.caps.at_least_slack + self.margin
    }

    /// A spec for `name` by `owner` with `at_most`.
    pub fn spec(&self, name: &str, owner: &str, at_most: Duration) -> LockSpec {
        LockSpec::new(LockName::new(name).expect("valid name"), owner, at_most).expect("valid spec")
    }

    /// Spawns this test binary as a child process playing `spec`'s role.
    pub fn spawn_child(&self, spec: Role) -> Result<ChildProc, String> {
        ChildProc::spawn(&self.url, spec, &[])
    }

    /// Like [`Ctx::spawn_child`], with extra environment variables.
    pub fn spawn_child_env(&self, spec: Role, env: &[(&str, &str)]) -> Result<ChildProc, String> {
        ChildProc::spawn(&self.url, spec, env)
    }
}

/// The part of every timing margin that is not measured: a poll step of the
/// cases' `try_lock` loops (25 ms), and room for one scheduling hiccup on a
/// loaded two-core machine. Small enough that a backend declaring 50 ms of
/// slack and holding a second longer fails.
pub const MARGIN_FLOOR: Duration = Duration::from_millis(200);

/// Fails the case with a message unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Converts any displayable error into a case failure with context.
pub trait Context<T> {
    /// Adds `what` to the error message.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}
