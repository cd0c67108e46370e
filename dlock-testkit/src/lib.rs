//! The dlock conformance suite: one list of cases, run unchanged against
//! every adapter. See this crate's README for running it against a new adapter.
//!
//! ```no_run
//! use std::sync::Arc;
//! fn main() -> std::process::ExitCode {
//!     dlock_testkit::Suite::new("mybackend")
//!         .url_from_env("DLOCK_TEST_MYBACKEND_URL")
//!         .namespace(|url: &str, ns: &str| format!("{url}/{ns}"))
//!         .connect(|url: String| async move {
//!             # let b: Option<Arc<dyn dlock_core::LockBackend>> = None;
//!             # let _ = url;
//!             Ok(b.expect("your backend here"))
//!         })
//!         .run()
//! }
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bad_input;
pub mod bench;
mod broken_coordinator_cases;
mod cases;
mod child;
pub mod coordinators;
mod ctx;
mod delayed_extend;
mod election_cases;
mod history;
pub mod lab;
mod lease_length_cases;
mod name_cases;
mod proxy;
mod send_instant_cases;
mod validity_cases;
mod waiting_cases;

pub use cases::{cases, Case, Needs};
pub use child::{After, ChildProc, Role};
pub use ctx::{Context, Ctx, MARGIN_FLOOR};
pub use history::{check_history, Hold};
pub use proxy::Proxy;

use dlock_core::{LockBackend, Result};
use futures::future::BoxFuture;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Builds a backend from a URL; the suite calls it for every fresh connection.
pub type ConnectFn =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Arc<dyn LockBackend>>> + Send + Sync>;

/// `f` as a [`ConnectFn`] (the suite's and the lab's `.connect(..)`).
pub(crate) fn connect_fn<F, Fut>(f: F) -> ConnectFn
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<dyn LockBackend>>> + Send + 'static,
{
    Arc::new(move |u| Box::pin(f(u)))
}

/// Puts a run's namespace into a URL.
pub type NamespaceFn = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// What a case returns: `Err(message)` fails it.
pub type CaseResult = std::result::Result<(), String>;

/// Breaks the coordinator behind a (namespaced) URL: see
/// [`Suite::break_coordinator`].
pub type BreakFn =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::result::Result<(), String>> + Send + Sync>;

/// The conformance suite for one backend.
#[derive(Clone)]
pub struct Suite {
    backend: &'static str,
    url: std::result::Result<String, String>,
    namespace: Option<NamespaceFn>,
    connect: Option<ConnectFn>,
    unreachable_url: Option<String>,
    break_coordinator: Option<BreakFn>,
}

impl Suite {
    /// A suite for `backend` (used in test names: `conformance::<backend>::<case>`).
    pub fn new(backend: &'static str) -> Self {
        Suite {
            backend,
            url: Err(format!(
                "no URL given for the {backend} suite: call .url() or .url_from_env()"
            )),
            namespace: None,
            connect: None,
            unreachable_url: None,
            break_coordinator: None,
        }
    }

    /// The coordinator's base URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Ok(url.into());
        self
    }

    /// The base URL from environment variable `var`. When it is unset,
    /// every case fails saying what to set: a suite never skips silently.
    pub fn url_from_env(mut self, var: &str) -> Self {
        self.url = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(format!(
                "{var} is not set, so the {} coordinator is not configured: run scripts/test.sh \
                 (it starts every coordinator) or export {var}=<url>",
                self.backend
            )),
        };
        self
    }

    /// How to put a fresh namespace (`[a-z][a-z0-9_]{0,24}`) into the URL:
    /// a table name, a key prefix, a chroot. Every run gets its own.
    pub fn namespace(mut self, f: impl Fn(&str, &str) -> String + Send + Sync + 'static) -> Self {
        self.namespace = Some(Arc::new(f));
        self
    }

    /// How to build the backend from a (namespaced) URL.
    pub fn connect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn LockBackend>>> + Send + 'static,
    {
        self.connect = Some(connect_fn(f));
        self
    }

    /// How to break the coordinator after a backend connected to it, for
    /// `every_operation_errs_after_the_coordinator_breaks`: `f` gets a URL
    /// with a namespace of its own (so it needs [`Suite::namespace`]) and
    /// must leave the coordinator there unable to serve any lock operation
    /// — drop the lock table, revoke the credentials. Networked backends are
    /// also broken by cutting a proxy; an embedded backend has only this.
    pub fn break_coordinator<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), String>> + Send + 'static,
    {
        self.break_coordinator = Some(Arc::new(move |u| Box::pin(f(u))));
        self
    }

    /// A URL that names a coordinator which cannot be reached. By default
    /// the suite takes the base URL and points its `host:port` at a closed
    /// loopback port; backends without a network address give their own.
    pub fn unreachable_url(mut self, url: impl Into<String>) -> Self {
        self.unreachable_url = Some(url.into());
        self
    }

    /// Runs the suite as a libtest-compatible test binary (or, when started
    /// by the suite itself as a child process, plays the child's role).
    pub fn run(self) -> ExitCode {
        if let Some(code) = child::maybe_run_child(&self) {
            return code;
        }
        let args = libtest_mimic::Arguments::from_args();
        let listing = args.list;
        let trials = self.trials();
        let conclusion = libtest_mimic::run(&args, trials);
        if !listing && !conclusion.has_failed() && conclusion.num_passed == 0 {
            eprintln!(
                "the {} conformance suite ran no case: a suite that ran nothing is a failure",
                self.backend
            );
            return ExitCode::FAILURE;
        }
        conclusion.exit_code()
    }

    /// The suite's cases as libtest-mimic trials, for embedding in a custom harness.
    pub fn trials(&self) -> Vec<libtest_mimic::Trial> {
        let prepared = self.prepare();
        cases()
            .into_iter()
            .map(|case| {
                let name = format!("conformance::{}::{}", self.backend, case.name);
                let prepared = prepared.clone();
                let backend = self.backend;
                let ignored = match &prepared {
                    Ok(p) => !case.needs.met_by(&p.caps),
                    Err(_) => false,
                };
                libtest_mimic::Trial::test(name, move || {
                    let setup = prepared.map_err(libtest_mimic::Failed::from)?;
                    run_case(backend, setup, case).map_err(libtest_mimic::Failed::from)
                })
                .with_ignored_flag(ignored)
            })
            .collect()
    }

    /// Connects once to read capabilities and fixes this process's namespace.
    fn prepare(&self) -> std::result::Result<Prepared, String> {
        let base = self.url.clone()?;
        let connect = self
            .connect
            .clone()
            .ok_or_else(|| "the suite has no .connect(..) function".to_string())?;
        let ns = namespace_id();
        let url = match &self.namespace {
            Some(f) => f(&base, &ns),
            None => base.clone(),
        };
        let rt = runtime()?;
        let caps = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), connect(url.clone())).await
            })
            .map_err(|_| format!("connecting to {} took more than 60 s", self.backend))?
            .map_err(|e| {
                format!(
                    "cannot connect to the {} coordinator at the configured URL: {e}",
                    self.backend
                )
            })?
            .capabilities();
        Ok(Prepared {
            base_url: base,
            url,
            connect,
            caps,
            unreachable_url: self.unreachable_url.clone(),
            namespace: self.namespace.clone(),
            break_coordinator: self.break_coordinator.clone(),
        })
    }
}

#[derive(Clone)]
pub(crate) struct Prepared {
    pub base_url: String,
    pub url: String,
    pub connect: ConnectFn,
    pub caps: dlock_core::Capabilities,
    pub unreachable_url: Option<String>,
    pub namespace: Option<NamespaceFn>,
    pub break_coordinator: Option<BreakFn>,
}

fn run_case(backend: &'static str, p: Prepared, case: Case) -> CaseResult {
    let rt = runtime()?;
    let mut ctx = Ctx::new(backend, p).for_case(case.name);
    let limit = case_time_limit(&ctx);
    rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), ctx.measure_margin())
            .await
            .map_err(|_| "measuring the timing margin took more than 60 s".to_string())??;
        match tokio::time::timeout(limit, (case.run)(ctx)).await {
            Ok(r) => r,
            Err(_) => Err(format!("case did not finish within {limit:?}")),
        }
    })
}

fn case_time_limit(ctx: &Ctx) -> Duration {
    Duration::from_secs(120) + (ctx.lease() + ctx.caps.expiry_slack) * 8
}

fn runtime() -> std::result::Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime: {e}"))
}

/// A fresh namespace id: `t` + 10 random lower-case hex digits.
pub fn namespace_id() -> String {
    format!("t{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}
