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

pub mod check;
pub mod fence;
pub mod nemesis;
mod overlong;
pub mod record;
mod worker;

use crate::ConnectFn;
use dlock_core::{LockBackend, Result};
use nemesis::{Fault, Injected, Nemesis};
use record::{End, HoldRecord, Line};
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
}

/// What one run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Every recorded hold.
    pub holds: Vec<HoldRecord>,
    /// Acquire errors (expected while faults last).
    pub acquire_errors: usize,
    /// Calls that did not answer within their deadline.
    pub hangs: Vec<String>,
    /// Workers that failed (exit status, an error line).
    pub worker_failures: Vec<String>,
    /// Faults injected.
    pub faults: Vec<Injected>,
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
        }
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
    /// `consul` (3 members), `postgres`, `mariadb` (one server), `sqlite`
    /// (none). Default: the backend's name.
    pub fn cluster(mut self, kind: &'static str) -> Self {
        self.cluster = kind;
        self
    }

    /// Also run the lab's self-test (`checker_catches_a_seeded_overlap`).
    /// It checks the lab, not the backend: one backend's lab running it in
    /// CI is enough.
    pub fn self_test(mut self) -> Self {
        self.self_test = true;
        self
    }

    /// `lock_for` of every hold (default 3 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The network of this backend's lab (`DLOCK_LAB_ID`), so that the labs
    /// of different backends can run at once; the self-test uses its own.
    fn lab_id(&self, self_test: bool) -> u8 {
        let base = match self.backend {
            "etcd" => 1,
            "zookeeper" => 2,
            "consul" => 3,
            "postgres" => 4,
            "mysql" => 5,
            "sqlite" => 6,
            "memory" => 7,
            _ => 9,
        };
        if self_test {
            base + 10
        } else {
            base
        }
    }

    /// The schedule: every fault kind the topology has, once.
    fn schedule(&self) -> Vec<Fault> {
        match self.cluster {
            // One server: it is killed and stopped, clients cut from it.
            "postgres" | "mariadb" => {
                return vec![
                    Fault::PartitionClient("c3".into()),
                    Fault::KillLeader,
                    Fault::StopLeader,
                    Fault::StopClient("c2".into()),
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
        ]
    }

    /// Runs as a libtest-compatible binary (or as a worker, when the lab
    /// started this process as one). Its trials:
    /// - `lab::<backend>::faults`: the whole schedule; fails on any violation;
    /// - with [`Lab::self_test`], `lab::<backend>::checker_catches_a_seeded_overlap`: the lab's
    ///   self-test, on a backend whose leases claim too long a validity,
    ///   with clients stopped past their lease; fails unless the checker
    ///   reports the overlap (a lab that cannot fail proves nothing).
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
        let trials = if self.self_test {
            vec![faults, seeded]
        } else {
            vec![faults]
        };
        libtest_mimic::run(&args, trials).exit_code()
    }

    fn seeded_overlap(&self) -> std::result::Result<(), String> {
        let stops = vec![
            Fault::StopClient("c1".into()),
            Fault::StopClient("c2".into()),
            Fault::StopClient("c3".into()),
        ];
        let (report, violations) = self.drive(stops, true)?;
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
        overlong_validity: bool,
    ) -> std::result::Result<(Report, check::Violations), String> {
        let netlab = Netlab {
            script: netlab_path()?,
            id: self.lab_id(overlong_validity),
        };
        let _down = Down(netlab.clone());
        netlab.run(&["up", self.cluster])?;
        let env = netlab.env()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let report = rt.block_on(self.drive_in(netlab, env, schedule, overlong_validity))?;
        let accepted = self.accepted();
        let violations = check::check(&report.holds, &accepted);
        let topology = match self.cluster {
            "postgres" | "mariadb" => "one server",
            "sqlite" => "one database file",
            _ => "3-member cluster",
        };
        print_report(self.backend, topology, &report, &violations);
        Ok((report, violations))
    }

    /// The whole schedule; any violation fails the run.
    fn faults(&self) -> std::result::Result<(), String> {
        let (report, violations) = self.drive(self.schedule(), false)?;
        let mut wrong = Vec::new();
        if !violations.is_empty() {
            wrong.push(format!("{:?}", violations.by_kind));
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
        overlong_validity: bool,
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
        let mut children = Vec::new();
        for c in CLIENTS {
            let spec = WorkerSpec {
                process: (*c).to_string(),
                url: url_of(&env, c),
                names: self.names.clone(),
                tasks: self.tasks,
                run_ms: u64::try_from(run_for.as_millis()).unwrap_or(u64::MAX),
                lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
                fence_dir: self.fence_dir(),
                overlong_validity,
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
                    Ok(Line::AcquireError(_)) => report.acquire_errors += 1,
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
}

impl Netlab {
    /// Runs `netlab.sh ARGS` to completion; its stdout, trimmed.
    pub fn run(&self, args: &[&str]) -> std::result::Result<String, String> {
        let out = std::process::Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("DLOCK_LAB_ID", self.id.to_string())
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
        "holds: {} ({ends:?}); acquire errors: {}; fenced writes: {writes} (after a pause, unchecked: {} accepted, {} refused)",
        r.holds.len(),
        r.acquire_errors,
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
    for (k, msgs) in &v.by_kind {
        for m in msgs.iter().take(5) {
            println!("{k}: {m}");
        }
    }
}
