//! The fault lab: a 3-member coordinator cluster whose members and clients
//! each live in a network namespace of their own (`scripts/netlab.sh`),
//! worker processes in the client namespaces taking holds every way users
//! do, a nemesis injecting every fault kind on a schedule, and a checker
//! over the recorded histories (`check`). One run is one libtest trial,
//! `lab::<backend>::faults`; it fails on any violation.
//!
//! ```no_run
//! use std::sync::Arc;
//! fn main() -> std::process::ExitCode {
//!     dlock_testkit::lab::Lab::new("etcd")
//!         .client_url(|env, client| env.get("DLOCK_LAB_ETCD_URL").cloned().unwrap_or_default())
//!         .connect(|url: String| async move {
//!             # let b: Option<Arc<dyn dlock_core::LockBackend>> = None;
//!             # let _ = url;
//!             Ok(b.expect("your backend here"))
//!         })
//!         .run()
//! }
//! ```
//!
//! `DLOCK_LAB_MINUTES=N` repeats the fault schedule for N minutes (what
//! `scripts/chaos.sh` sets).

pub mod availability;
pub mod check;
pub mod fence;
pub mod nemesis;
pub mod record;
mod seeded;
mod worker;

use crate::proxy::Proxy;
use crate::ConnectFn;
use dlock_core::{LockBackend, Result};
use nemesis::{Fault, Injected, Nemesis};
use record::{Attempt, End, HoldRecord, Line, OpRecord};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use worker::WorkerSpec;

/// Picks a client's coordinator URL from `netlab.sh env`'s variables.
pub type UrlFn = Arc<dyn Fn(&HashMap<String, String>, &str) -> String + Send + Sync>;

/// The clients (network namespaces of `netlab.sh`), one worker process each.
pub const CLIENTS: &[&str] = &["c1", "c2", "c3"];

/// The client whose connections go through proxies in the driver (on the
/// bridge, `10.77.N.1`), so the nemesis can stall, delay and drop them.
pub const PROXIED_CLIENT: &str = "c2";

/// A fault-lab run for one backend.
#[derive(Clone)]
pub struct Lab {
    backend: &'static str,
    cluster: &'static str,
    client_url: Option<UrlFn>,
    connect: Option<ConnectFn>,
    lease: Duration,
    fault_for: Duration,
    heal_for: Duration,
    tasks: usize,
    names: Vec<String>,
    self_test: bool,
    clock_step: bool,
    request_timeout: Duration,
    availability: availability::Bounds,
}

/// Which trial a run is: each has a network of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trial {
    /// `faults`: the whole schedule on the backend as it is.
    Faults,
    /// `checker_catches_a_seeded_overlap`: on a backend claiming too long a
    /// validity (`seeded::Seeded::OverlongValidity`).
    SeededOverlap,
    /// `checker_catches_a_seeded_stuck_lock`: on a backend keeping locks
    /// past their lease (`seeded::Seeded::StuckLeases`).
    SeededStuck,
    /// `clock_step`: the SQL or Redis server under libfaketime, its clock
    /// stepped.
    ClockStep,
}

/// What one run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Every recorded hold.
    pub holds: Vec<HoldRecord>,
    /// Acquires that answered an error (expected while faults last).
    pub acquire_errors: Vec<Attempt>,
    /// `try_lock`s that found the lock held.
    pub busy: Vec<Attempt>,
    /// The backend's declared `expiry_slack`, as the workers reported it.
    pub expiry_slack: Duration,
    /// Calls that did not answer within their deadline.
    pub hangs: Vec<String>,
    /// Workers that failed (exit status, an error line).
    pub worker_failures: Vec<String>,
    /// Faults injected.
    pub faults: Vec<Injected>,
    /// Every acquire, extend and release, with how it answered.
    pub ops: Vec<OpRecord>,
}

impl Lab {
    /// A lab run for `backend` on a 3-member cluster of the same kind.
    pub fn new(backend: &'static str) -> Self {
        Lab {
            backend,
            cluster: backend,
            client_url: None,
            connect: None,
            lease: Duration::from_secs(3),
            fault_for: Duration::from_secs(6),
            heal_for: Duration::from_secs(3),
            tasks: 3,
            names: vec!["lab-a".into(), "lab-b".into(), "lab-c".into()],
            self_test: false,
            clock_step: false,
            request_timeout: Duration::from_secs(5),
            availability: availability::Bounds::CI,
        }
    }

    /// What the availability table may show before the run fails (default:
    /// [`availability::Bounds::CI`]; every run prints its figures next to
    /// [`availability::Bounds::TARGET`]).
    pub fn availability_bounds(mut self, bounds: availability::Bounds) -> Self {
        self.availability = bounds;
        self
    }

    /// The `request_timeout` the clients' URLs set (default 5 s, the
    /// adapters' default). On a cluster, operations sent later than this +
    /// 1 s after a fault began or healed must not fail while a majority is
    /// healthy and reachable ([`availability`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long after a fault begins or heals operations may still fail.
    fn grace(&self) -> Duration {
        self.request_timeout + Duration::from_secs(1)
    }

    /// How each client (`c1`, `c2`, `c3`) finds its URL in `netlab.sh
    /// env`'s variables. Give different clients different member lists.
    pub fn client_url(
        mut self,
        f: impl Fn(&HashMap<String, String>, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.client_url = Some(Arc::new(f));
        self
    }

    /// How to build the backend from a URL (in each worker process).
    pub fn connect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn LockBackend>>> + Send + 'static,
    {
        self.connect = Some(crate::connect_fn(f));
        self
    }

    /// The coordinator `netlab.sh` starts (`up KIND`): `etcd`, `zookeeper`,
    /// `consul` (3 members), `postgres`, `mariadb`, `redis` (one server),
    /// `sqlite` (none). Default: the backend's name.
    pub fn cluster(mut self, kind: &'static str) -> Self {
        self.cluster = kind;
        self
    }

    /// Also run the lab's self-tests (`checker_catches_a_seeded_overlap`,
    /// `checker_catches_a_seeded_stuck_lock`). They check the lab, not the
    /// backend: one backend's lab running them in CI is enough.
    pub fn self_test(mut self) -> Self {
        self.self_test = true;
        self
    }

    /// Also run `lab::<backend>::clock_step`: the server (PostgreSQL,
    /// MariaDB, Redis) runs under libfaketime and its wall clock is stepped
    /// forward by two leases, twice. That is the documented limit of
    /// coordinators that time leases by wall clock (README, "Guarantees and
    /// their limits"): the trial reports the overlaps it causes, and fails
    /// only on what fencing must still prevent (a lower token accepted,
    /// tokens not increasing) and on hangs and worker failures.
    pub fn clock_step(mut self) -> Self {
        self.clock_step = true;
        self
    }

    /// `lock_for` of every hold (default 3 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The network of this backend's lab (`DLOCK_LAB_ID`), so that the labs
    /// of different backends, and their trials, can run at once.
    fn lab_id(&self, trial: Trial) -> u8 {
        let base = match self.backend {
            "etcd" => 1,
            "zookeeper" => 2,
            "consul" => 3,
            "postgres" => 4,
            "mysql" => 5,
            "sqlite" => 6,
            "memory" => 7,
            "redis" => 8,
            _ => 9,
        };
        match trial {
            Trial::Faults => base,
            Trial::SeededOverlap => base + 10,
            Trial::ClockStep => base + 20,
            Trial::SeededStuck => base + 30,
        }
    }

    /// A 3-member cluster (etcd, ZooKeeper, Consul), not one server or file.
    fn is_cluster(&self) -> bool {
        !matches!(self.cluster, "postgres" | "mariadb" | "redis" | "sqlite")
    }

    /// The schedule: every fault kind the topology has, once.
    fn schedule(&self) -> Vec<Fault> {
        match self.cluster {
            // One server: it is killed and stopped, clients cut from it.
            "postgres" | "mariadb" | "redis" => {
                return vec![
                    Fault::PartitionClient("c3".into()),
                    Fault::KillLeader,
                    Fault::StopLeader,
                    Fault::StopClient("c2".into()),
                    Fault::StallClient(PROXIED_CLIENT.into()),
                    Fault::DelayClient(PROXIED_CLIENT.into()),
                    Fault::ResetClient(PROXIED_CLIENT.into()),
                ]
            }
            // One file on one host: only the clients can misbehave.
            "sqlite" => {
                return vec![
                    Fault::StopClient("c1".into()),
                    Fault::StopClient("c2".into()),
                ]
            }
            _ => {}
        }
        vec![
            Fault::IsolateFollower,
            Fault::IsolateLeader,
            Fault::PartitionClient("c3".into()),
            Fault::IsolateClientsMember("c1".into(), "m1".into()),
            Fault::KillLeader,
            Fault::StopLeader,
            Fault::CutFollower,
            Fault::StopClient("c2".into()),
            Fault::StallClient(PROXIED_CLIENT.into()),
            Fault::DelayClient(PROXIED_CLIENT.into()),
            Fault::ResetClient(PROXIED_CLIENT.into()),
        ]
    }

    /// Runs as a libtest-compatible binary (or as a worker, when the lab
    /// started this process as one). Its trials:
    /// - `lab::<backend>::faults`: the whole schedule; fails on any violation;
    /// - with [`Lab::self_test`], `lab::<backend>::checker_catches_a_seeded_overlap`: the lab's
    ///   self-test, on a backend whose leases claim too long a validity,
    ///   with clients stopped past their lease; fails unless the checker
    ///   reports the overlap (a lab that cannot fail proves nothing);
    /// - with [`Lab::self_test`], `lab::<backend>::checker_catches_a_seeded_stuck_lock`:
    ///   on a backend that leases three times longer than asked and never
    ///   releases; fails unless the checker reports locks held past
    ///   `lock_for` + slack;
    /// - with [`Lab::clock_step`], `lab::<backend>::clock_step`.
    pub fn run(self) -> ExitCode {
        if let Ok(spec) = std::env::var(worker::ENV) {
            return self.run_worker(&spec);
        }
        let args = libtest_mimic::Arguments::from_args();
        let lab = self.clone();
        let faults =
            libtest_mimic::Trial::test(format!("lab::{}::faults", self.backend), move || {
                lab.faults().map_err(libtest_mimic::Failed::from)
            });
        let lab = self.clone();
        let seeded = libtest_mimic::Trial::test(
            format!("lab::{}::checker_catches_a_seeded_overlap", self.backend),
            move || lab.seeded_overlap().map_err(libtest_mimic::Failed::from),
        );
        let lab = self.clone();
        let stuck = libtest_mimic::Trial::test(
            format!("lab::{}::checker_catches_a_seeded_stuck_lock", self.backend),
            move || lab.seeded_stuck().map_err(libtest_mimic::Failed::from),
        );
        let lab = self.clone();
        let clock =
            libtest_mimic::Trial::test(format!("lab::{}::clock_step", self.backend), move || {
                lab.clock_steps().map_err(libtest_mimic::Failed::from)
            });
        let mut trials = vec![faults];
        if self.self_test {
            trials.push(seeded);
            trials.push(stuck);
        }
        if self.clock_step {
            trials.push(clock);
        }
        libtest_mimic::run(&args, trials).exit_code()
    }

    fn seeded_overlap(&self) -> std::result::Result<(), String> {
        let stops = vec![
            Fault::StopClient("c1".into()),
            Fault::StopClient("c2".into()),
            Fault::StopClient("c3".into()),
        ];
        let (report, violations) = self.drive(stops, Trial::SeededOverlap)?;
        let found = violations.count("overlapping valid holds");
        if found == 0 {
            return Err(format!(
                "the checker found no overlap in {} holds on a backend that claims two lease \
                 lengths too much validity, with every client stopped past its lease: the lab \
                 cannot see the bug it exists to find",
                report.holds.len()
            ));
        }
        println!("self-test: the seeded overlong validity gave {found} overlaps, as it must");
        Ok(())
    }

    fn seeded_stuck(&self) -> std::result::Result<(), String> {
        // No fault: holders let go on time, the coordinator does not.
        let quiet = vec![Fault::StopClient("c1".into())];
        let (report, violations) = self.drive(quiet, Trial::SeededStuck)?;
        let found = violations.count("held past lock_for + declared slack");
        if found == 0 {
            return Err(format!(
                "the checker found no stuck lock in {} holds and {} busy try_locks on a backend \
                 that keeps every lock two lease lengths after its holder let go: the lab cannot \
                 see a lock that outlives its lease",
                report.holds.len(),
                report.busy.len()
            ));
        }
        println!(
            "self-test: the seeded stuck leases gave {found} stuck-lock reports, as they must"
        );
        Ok(())
    }

    fn run_worker(&self, spec: &str) -> ExitCode {
        let result = (|| {
            let spec: WorkerSpec = serde_json::from_str(spec).map_err(|e| e.to_string())?;
            let connect = self.connect.clone().ok_or("the lab has no .connect(..)")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(worker::run(spec, connect))
        })();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab worker: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// The driver: network and cluster up, workers, nemesis, checker, down.
    fn drive(
        &self,
        schedule: Vec<Fault>,
        trial: Trial,
    ) -> std::result::Result<(Report, check::Violations), String> {
        let seeded = match trial {
            Trial::SeededOverlap => Some(seeded::Seeded::OverlongValidity),
            Trial::SeededStuck => Some(seeded::Seeded::StuckLeases),
            Trial::Faults | Trial::ClockStep => None,
        };
        let netlab = Netlab {
            script: netlab_path()?,
            id: self.lab_id(trial),
            faketime: trial == Trial::ClockStep,
        };
        let _down = Down(netlab.clone());
        netlab.run(&["up", self.cluster])?;
        let env = netlab.env()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let report = rt.block_on(self.drive_in(netlab, env, schedule, seeded))?;
        let accepted = self.accepted();
        // One server (SQL, Redis with its append-only file) keeps its lease
        // deadlines across a restart; a cluster's new leader restarts its
        // lease timers.
        let leader_changes: Vec<(u128, u128)> = if self.is_cluster() {
            report
                .faults
                .iter()
                .filter(|f| f.fault.may_move_the_leader())
                .map(|f| (f.from_ns, f.to_ns + check::ELECTION_SETTLE.as_nanos()))
                .collect()
        } else {
            Vec::new()
        };
        let history = check::History {
            holds: &report.holds,
            busy: &report.busy,
            unknown: &report.acquire_errors,
            expiry_slack: report.expiry_slack,
            leader_changes: &leader_changes,
        };
        let violations = check::check(&history, &accepted);
        let topology = match self.cluster {
            "postgres" | "mariadb" | "redis" => "one server",
            "sqlite" => "one database file",
            _ => "3-member cluster",
        };
        print_report(self.backend, topology, &report, &violations);
        Ok((report, violations))
    }

    /// The whole schedule; any violation fails the run.
    /// On a cluster, also the availability target ([`availability`]).
    fn faults(&self) -> std::result::Result<(), String> {
        let (report, violations) = self.drive(self.schedule(), Trial::Faults)?;
        let judged = judge(&report, &violations, &[]);
        if !self.is_cluster() {
            return judged;
        }
        let mut a = availability::Availability::measure(
            &report.ops,
            &report.holds,
            &report.faults,
            self.grace(),
        );
        print!(
            "{}",
            a.table(self.backend, self.grace(), &self.availability)
        );
        let misses = a.misses(&self.availability);
        match (judged, misses.is_empty()) {
            (Ok(()), true) => Ok(()),
            (Ok(()), false) => Err(misses.join("\n")),
            (Err(e), true) => Err(e),
            (Err(e), false) => Err(format!("{e}\n{}", misses.join("\n"))),
        }
    }

    /// Two forward steps of the server's clock; see [`Lab::clock_step`].
    fn clock_steps(&self) -> std::result::Result<(), String> {
        let steps = vec![Fault::StepServerClock, Fault::StepServerClock];
        let (report, violations) = self.drive(steps, Trial::ClockStep)?;
        // What a wall-clock step is documented to cause: holds still valid
        // by their holders' clocks after the server ended their leases, and
        // so writes refused although is_held() said true. Reported above;
        // fencing must still have kept every stale write out.
        let limit = ["overlapping valid holds", "checked fenced write refused"];
        println!(
            "clock step (the documented limit): {} overlapping valid holds, {} checked writes refused by a newer token, 0 lower tokens accepted is required",
            violations.count(limit[0]),
            violations.count(limit[1]),
        );
        judge(&report, &violations, &limit)
    }
}

/// Fails a run on any violation not of a kind in `expected`, on hangs,
/// worker failures, faults that could not be injected, and a workload that
/// did not run.
fn judge(
    report: &Report,
    violations: &check::Violations,
    expected: &[&str],
) -> std::result::Result<(), String> {
    let mut wrong = Vec::new();
    let unexpected: BTreeMap<_, _> = violations
        .by_kind
        .iter()
        .filter(|(k, msgs)| !expected.contains(k) && !msgs.is_empty())
        .collect();
    if !unexpected.is_empty() {
        wrong.push(format!("{unexpected:?}"));
    }
    if !report.hangs.is_empty() {
        wrong.push(format!("hangs: {:?}", report.hangs));
    }
    if !report.worker_failures.is_empty() {
        wrong.push(format!("worker failures: {:?}", report.worker_failures));
    }
    let failed: Vec<String> = report
        .faults
        .iter()
        .filter_map(|f| f.error.clone())
        .collect();
    if !failed.is_empty() {
        wrong.push(format!("faults that could not be injected: {failed:?}"));
    }
    if report.holds.len() < 20 {
        wrong.push(format!(
            "only {} holds recorded: the workload did not run",
            report.holds.len()
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

impl Lab {
    fn fence_dir(&self) -> PathBuf {
        let base = std::env::var("DLOCK_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        base.join(format!("lab-fence-{}-{}", self.backend, std::process::id()))
    }

    fn accepted(&self) -> BTreeMap<String, Vec<u64>> {
        let Ok(fence) = fence::Fence::new(&self.fence_dir()) else {
            return BTreeMap::new();
        };
        self.names
            .iter()
            .map(|n| (n.clone(), fence.accepted(n)))
            .collect()
    }

    async fn drive_in(
        &self,
        netlab: Netlab,
        env: HashMap<String, String>,
        schedule: Vec<Fault>,
        seeded: Option<seeded::Seeded>,
    ) -> std::result::Result<Report, String> {
        let url_of = self
            .client_url
            .clone()
            .ok_or("the lab has no .client_url(..)")?;
        let minutes: f64 = std::env::var("DLOCK_LAB_MINUTES")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0.0);
        // A stopped client stays stopped past its lease (see Nemesis).
        let longest = self.fault_for.max(self.lease + Duration::from_secs(3));
        let one_round = (longest + self.heal_for) * (schedule.len() as u32) + self.lease * 2;
        let rounds = ((minutes * 60.0) / one_round.as_secs_f64()).ceil().max(1.0) as u32;
        // Workers run through every round, and a little past the last.
        let run_for = one_round * rounds + self.heal_for;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(self.fence_dir());
        let (proxied_env, proxies) = through_proxies(&env, netlab.id).await?;
        let mut children = Vec::new();
        for c in CLIENTS {
            let spec = WorkerSpec {
                process: (*c).to_string(),
                url: if *c == PROXIED_CLIENT {
                    url_of(&proxied_env, c)
                } else {
                    url_of(&env, c)
                },
                names: self.names.clone(),
                tasks: self.tasks,
                run_ms: u64::try_from(run_for.as_millis()).unwrap_or(u64::MAX),
                lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
                fence_dir: self.fence_dir(),
                seeded,
            };
            let json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
            let mut child = tokio::process::Command::new("ip")
                .args(["netns", "exec", &format!("dlab{}-{c}", netlab.id)])
                .arg(&exe)
                .env(worker::ENV, json)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("start worker {c}: {e}"))?;
            let pid = child.id().unwrap_or(0);
            let stdout = child.stdout.take().ok_or("no worker stdout")?;
            children.push(((*c).to_string(), pid, child, stdout));
        }
        let pids: Vec<(String, u32)> = children.iter().map(|(c, p, ..)| (c.clone(), *p)).collect();
        let mut readers = tokio::task::JoinSet::new();
        let mut waits = Vec::new();
        for (c, _, child, stdout) in children {
            readers.spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut got = Vec::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    got.push(l);
                }
                (c, got)
            });
            waits.push(child);
        }
        let nemesis = Nemesis {
            netlab,
            fault_for: self.fault_for,
            heal_for: self.heal_for,
            lease: self.lease,
            proxies: BTreeMap::from([(PROXIED_CLIENT.to_string(), proxies)]),
        };
        // Let the workers connect and take a few holds first.
        tokio::time::sleep(self.heal_for).await;
        let mut faults = Vec::new();
        for _ in 0..rounds {
            for f in &schedule {
                faults.push(nemesis.inject(f, &pids).await);
            }
        }
        let mut report = Report {
            faults,
            ..Report::default()
        };
        let limit = run_for + Duration::from_secs(90);
        for mut w in waits {
            match tokio::time::timeout(limit, w.wait()).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => report
                    .worker_failures
                    .push(format!("a worker exited with {s}")),
                Ok(Err(e)) => report
                    .worker_failures
                    .push(format!("waiting for a worker: {e}")),
                Err(_) => {
                    let _ = w.kill().await;
                    report
                        .hangs
                        .push(format!("a worker still ran {limit:?} after it started"));
                }
            }
        }
        while let Some(r) = readers.join_next().await {
            let (c, lines) = r.map_err(|e| e.to_string())?;
            let mut done = false;
            for l in lines {
                match serde_json::from_str::<Line>(&l) {
                    Ok(Line::Hold(h)) => report.holds.push(h),
                    Ok(Line::AcquireError(a, _)) => report.acquire_errors.push(a),
                    Ok(Line::Busy(a)) => report.busy.push(a),
                    Ok(Line::Op(o)) => report.ops.push(o),
                    Ok(Line::Started { expiry_slack_ms }) => {
                        report.expiry_slack = report
                            .expiry_slack
                            .max(Duration::from_millis(expiry_slack_ms));
                    }
                    Ok(Line::Hang(what)) => report.hangs.push(format!("{c}: {what}")),
                    Ok(Line::Done) => done = true,
                    Err(_) => report
                        .worker_failures
                        .push(format!("{c}: unexpected output {l:?}")),
                }
            }
            if !done {
                report
                    .worker_failures
                    .push(format!("{c} never finished its run"));
            }
        }
        Ok(report)
    }
}

/// One lab's network: `scripts/netlab.sh` with its `DLOCK_LAB_ID`.
#[derive(Clone, Debug)]
pub struct Netlab {
    /// `scripts/netlab.sh`.
    pub script: PathBuf,
    /// `DLOCK_LAB_ID`.
    pub id: u8,
    /// `DLOCK_LAB_FAKETIME=1`: `up` starts SQL and Redis servers under
    /// libfaketime, so that `clock-step` can step their clock.
    pub faketime: bool,
}

impl Netlab {
    /// Runs `netlab.sh ARGS` to completion; its stdout, trimmed.
    pub fn run(&self, args: &[&str]) -> std::result::Result<String, String> {
        let out = std::process::Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("DLOCK_LAB_ID", self.id.to_string())
            .env("DLOCK_LAB_FAKETIME", if self.faketime { "1" } else { "0" })
            .output()
            .map_err(|e| format!("netlab {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "netlab {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// [`Netlab::run`] on a blocking thread, so the runtime keeps serving.
    pub async fn run_async(&self, args: &[&str]) -> std::result::Result<String, String> {
        let (lab, args) = (
            self.clone(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.run(&args)
        })
        .await
        .map_err(|e| format!("netlab task: {e}"))?
    }

    fn env(&self) -> std::result::Result<HashMap<String, String>, String> {
        Ok(self
            .run(&["env"])?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

/// `env` with every member address (`10.77.N.1i:PORT`) replaced by a proxy
/// in this process, on the bridge, forwarding to it; and those proxies. A
/// backend without a network (SQLite) gets `env` unchanged and none.
async fn through_proxies(
    env: &HashMap<String, String>,
    lab: u8,
) -> std::result::Result<(HashMap<String, String>, Vec<Proxy>), String> {
    let bridge = std::net::IpAddr::from([10, 77, lab, 1]);
    let mut proxies: Vec<(String, Proxy)> = Vec::new();
    let mut out = env.clone();
    for value in out.values_mut() {
        for m in 1..=3 {
            let ip = format!("10.77.{lab}.1{m}:");
            while let Some(at) = value.find(&ip) {
                let port_len = value[at + ip.len()..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count();
                let member = value[at..at + ip.len() + port_len].to_string();
                let addr = match proxies.iter().find(|(u, _)| *u == member) {
                    Some((_, p)) => p.addr(),
                    None => {
                        let p = Proxy::start_on(bridge, member.clone()).await?;
                        let a = p.addr();
                        proxies.push((member.clone(), p));
                        a
                    }
                };
                value.replace_range(at..at + member.len(), &addr.to_string());
            }
        }
    }
    Ok((out, proxies.into_iter().map(|(_, p)| p).collect()))
}

/// Stops the lab's network and cluster when the run ends, however it ends.
struct Down(Netlab);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

fn netlab_path() -> std::result::Result<PathBuf, String> {
    if let Ok(p) = std::env::var("DLOCK_LAB_NETLAB") {
        return Ok(PathBuf::from(p));
    }
    // The test binary runs with the package directory as its working
    // directory; scripts/ is at the workspace root, one level up.
    let here = std::env::current_dir().map_err(|e| e.to_string())?;
    here.ancestors()
        .map(|d| d.join("scripts/netlab.sh"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "scripts/netlab.sh not found: run from the dlock workspace or set DLOCK_LAB_NETLAB"
                .to_string()
        })
}

fn print_report(backend: &str, topology: &str, r: &Report, v: &check::Violations) {
    let mut ends: BTreeMap<End, usize> = BTreeMap::new();
    for h in &r.holds {
        *ends.entry(h.end).or_default() += 1;
    }
    let writes: usize = r.holds.iter().map(|h| h.writes.len()).sum();
    let blind: Vec<_> = r
        .holds
        .iter()
        .flat_map(|h| h.writes.iter())
        .filter(|w| !w.checked)
        .collect();
    println!(
        "== fault lab: {backend}, {topology}, {} clients",
        CLIENTS.len()
    );
    println!(
        "holds: {} ({ends:?}); acquire errors: {}; try_locks that found it held: {}; fenced writes: {writes} (after a pause, unchecked: {} accepted, {} refused)",
        r.holds.len(),
        r.acquire_errors.len(),
        r.busy.len(),
        blind.iter().filter(|w| w.accepted).count(),
        blind.iter().filter(|w| !w.accepted).count(),
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &r.faults {
        *kinds.entry(f.fault.kind()).or_default() += 1;
    }
    println!("| fault | injected |");
    println!("|---|--:|");
    for (k, n) in &kinds {
        println!("| {k} | {n} |");
    }
    // When each began and healed, so that a failure the report blames on
    // one fault can be read against the next.
    if let Some(first) = r.faults.first().map(|f| f.from_ns) {
        let at = |ns: u128| ns.saturating_sub(first) as f64 / 1e9;
        let line: Vec<String> = r
            .faults
            .iter()
            .map(|f| {
                format!(
                    "{:.1}–{:.1} s {} ({})",
                    at(f.from_ns),
                    at(f.to_ns),
                    f.fault.kind(),
                    f.target
                )
            })
            .collect();
        println!("faults in order: {}", line.join("; "));
    }
    println!("| violation | count |");
    println!("|---|--:|");
    for k in check::KINDS {
        let n = match *k {
            "hangs" => r.hangs.len(),
            "worker failures" => r.worker_failures.len(),
            k => v.count(k),
        };
        println!("| {k} | {n} |");
    }
    if v.held_through_a_leader_change > 0 {
        println!(
            "locks held past lock_for + slack after their last renewal, explained by a leader change restarting lease timers: {}",
            v.held_through_a_leader_change
        );
    }
    for (k, msgs) in &v.by_kind {
        for m in msgs.iter().take(5) {
            println!("{k}: {m}");
        }
    }
}
