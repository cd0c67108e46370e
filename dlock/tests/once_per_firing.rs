//! Each firing of a scheduled job runs at most once across the cluster,
//! whatever the nodes' clocks and timers do: a node whose clock is behind
//! (libfaketime) or whose timer fires late (a process stopped with SIGSTOP
//! across a firing) skips a firing that already ran.
//!
//! One node runs in this process; the other is this test binary re-executed
//! as a child (`scheduler_node`), so that its clock and its process state
//! can differ. Both print or record every run; the check is over what the
//! jobs themselves recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::schedule::{Job, JobEvent, Schedule, Scheduler};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The child node's settings, `key=value` pairs separated by `;`.
const NODE_ENV: &str = "DLOCK_SCHEDULER_NODE";

/// One node's view: `RAN <firing> <node> <retried>` when its job started
/// a firing, `EVENT <firing> <outcome>` for every firing it handled.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Ran {
        firing: String,
        node: String,
        retried: bool,
    },
    Event {
        firing: String,
        outcome: String,
    },
}

fn parse(line: &str) -> Option<Line> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["RAN", firing, node, retried] => Some(Line::Ran {
            firing: firing.to_string(),
            node: node.to_string(),
            retried: *retried == "true",
        }),
        ["EVENT", firing, outcome] => Some(Line::Event {
            firing: firing.to_string(),
            outcome: outcome.to_string(),
        }),
        _ => None,
    }
}

#[derive(Clone, Debug)]
struct NodeConfig {
    url: String,
    name: String,
    owner: String,
    period: Duration,
    lock_for: Duration,
    at_least: Duration,
    job: Duration,
    run_for: Duration,
    /// `retry_within`; zero: none.
    retry: Duration,
}

impl NodeConfig {
    fn encode(&self) -> String {
        format!(
            "url={};name={};owner={};period_ms={};lock_for_ms={};at_least_ms={};job_ms={};run_for_ms={};retry_ms={}",
            self.url,
            self.name,
            self.owner,
            self.period.as_millis(),
            self.lock_for.as_millis(),
            self.at_least.as_millis(),
            self.job.as_millis(),
            self.run_for.as_millis(),
            self.retry.as_millis()
        )
    }

    fn decode(s: &str) -> NodeConfig {
        let kv: BTreeMap<&str, &str> = s.split(';').filter_map(|p| p.split_once('=')).collect();
        let ms = |k: &str| Duration::from_millis(kv[k].parse().unwrap());
        NodeConfig {
            url: kv["url"].to_string(),
            name: kv["name"].to_string(),
            owner: kv["owner"].to_string(),
            period: ms("period_ms"),
            lock_for: ms("lock_for_ms"),
            at_least: ms("at_least_ms"),
            job: ms("job_ms"),
            run_for: ms("run_for_ms"),
            retry: ms("retry_ms"),
        }
    }
}

/// Runs one node for `run_for`, sending a [`Line`] for every run and event.
async fn run_node(cfg: NodeConfig, out: mpsc::UnboundedSender<Line>) {
    let locker = dlock::connect(&cfg.url)
        .await
        .unwrap()
        .with_owner(cfg.owner.clone())
        .unwrap();
    let ran = out.clone();
    let job_len = cfg.job;
    let mut job = Job::new(
        cfg.name.clone(),
        Schedule::every(cfg.period).unwrap(),
        move |ctx| {
            let ran = ran.clone();
            async move {
                let _ = ran.send(Line::Ran {
                    firing: ctx.scheduled_at.to_rfc3339(),
                    node: ctx.owner.clone(),
                    retried: ctx.retried,
                });
                tokio::time::sleep(job_len).await;
            }
        },
    )
    .lock_for(cfg.lock_for);
    if !cfg.at_least.is_zero() {
        job = job.at_least(cfg.at_least);
    }
    if !cfg.retry.is_zero() {
        job = job.retry_within(cfg.retry);
    }
    let scheduler = Scheduler::new(locker).job(job);
    let mut events = scheduler.subscribe();
    let handle = scheduler.start();
    let forward = tokio::spawn(async move {
        while let Ok(JobEvent {
            scheduled_at,
            outcome,
            ..
        }) = events.recv().await
        {
            let _ = out.send(Line::Event {
                firing: scheduled_at.to_rfc3339(),
                outcome: outcome.label().to_string(),
            });
        }
    });
    tokio::time::sleep(cfg.run_for).await;
    handle.shutdown().await;
    forward.abort();
}

/// The child node: does nothing unless started by a test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a node of the tests below, which run it in a child process"]
async fn scheduler_node() {
    let Ok(cfg) = std::env::var(NODE_ENV) else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let node = tokio::spawn(run_node(NodeConfig::decode(&cfg), tx));
    while let Some(line) = rx.recv().await {
        match line {
            Line::Ran {
                firing,
                node,
                retried,
            } => println!("RAN {firing} {node} {retried}"),
            Line::Event { firing, outcome } => println!("EVENT {firing} {outcome}"),
        }
    }
    node.await.unwrap();
}

fn faketime_lib() -> String {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libfaketime is not installed (Debian package faketime; scripts/install-deps.sh installs it)")
    .to_string()
}

/// Starts the child node; its lines arrive on `out`.
fn spawn_node(cfg: &NodeConfig, faketime: Option<&str>, out: mpsc::UnboundedSender<Line>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "scheduler_node",
        "--exact",
        "--include-ignored",
        "--nocapture",
    ])
    .env(NODE_ENV, cfg.encode())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    if let Some(offset) = faketime {
        cmd.env("LD_PRELOAD", faketime_lib())
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_NO_CACHE", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(line) = parse(&l) {
                let _ = out.send(line);
            }
        }
    });
    child
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Every line both nodes produced, once the child has exited.
async fn finish(child: Child, rx: mpsc::UnboundedReceiver<Line>) -> Vec<Line> {
    let status = exit_of(child).await;
    assert!(status.success(), "the child node failed: {status}");
    drain(rx).await
}

async fn exit_of(mut child: Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the child node did not end")
        .unwrap()
}

/// What is left on `rx` (a reader task forwards a child's last lines
/// after it exited).
async fn drain(mut rx: mpsc::UnboundedReceiver<Line>) -> Vec<Line> {
    let mut all = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        all.push(l);
    }
    all
}

/// Runs per firing: firing -> nodes whose job ran it.
fn runs_by_firing(lines: &[Line]) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        if let Line::Ran { firing, node, .. } = l {
            by.entry(firing.clone()).or_default().push(node.clone());
        }
    }
    by
}

fn assert_each_firing_ran_once(lines: &[Line]) {
    let runs = runs_by_firing(lines);
    assert!(runs.len() >= 3, "too few firings ran: {lines:#?}");
    for (firing, nodes) in &runs {
        assert_eq!(
            nodes.len(),
            1,
            "firing {firing} ran on {nodes:?}; all: {lines:#?}"
        );
    }
}

fn events_of<'a>(lines: &'a [Line], firing: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Event { firing: f, outcome } if f == firing => Some(outcome.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(feature = "postgres")]
fn postgres_url() -> String {
    std::env::var("DLOCK_TEST_POSTGRES_URL").expect(
        "set DLOCK_TEST_POSTGRES_URL=postgres://user:pass@127.0.0.1:PORT/db \
         (scripts/coordinators.sh writes it to .run/env)",
    )
}

fn config(url: &str, name: &str, owner: &str, run_for: Duration) -> NodeConfig {
    NodeConfig {
        url: url.to_string(),
        name: name.to_string(),
        owner: owner.to_string(),
        period: Duration::from_secs(4),
        lock_for: Duration::from_secs(20),
        // What a user tunes today against drift: shorter than the skew below.
        at_least: Duration::from_secs(1),
        job: Duration::from_millis(200),
        run_for,
        retry: Duration::ZERO,
    }
}

/// A node whose clock is 2 s behind fires every firing 2 s after the
/// others. `at_least` (1 s) is shorter than that, so before firings had
/// their own locks it ran each firing a second time.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_slow_clock_skips_firings_that_ran() {
    // PostgreSQL: the coordinator's clock decides, not the skewed child's
    // (embedded SQLite would read the child's faked clock).
    let url = postgres_url();
    let name = unique("skewed");
    let run_for = Duration::from_millis(17_500);
    let (tx, rx) = mpsc::unbounded_channel();
    let child = spawn_node(
        &config(&url, &name, "behind", run_for),
        Some("-2"),
        tx.clone(),
    );
    run_node(config(&url, &name, "on-time", run_for), tx).await;
    let lines = finish(child, rx).await;
    assert_each_firing_ran_once(&lines);
    // The slow node did fire the firings, 2 s late, and skipped them.
    let runs = runs_by_firing(&lines);
    let skipped_late = runs
        .keys()
        .filter(|f| events_of(&lines, f).len() == 2)
        .count();
    assert!(
        skipped_late >= 2,
        "the slow node fired too few firings: {lines:#?}"
    );
}

/// A node stopped (SIGSTOP) across a firing wakes up after it and fires it
/// late; the firing already ran on the other node, so it must skip it.
async fn a_node_stopped_across_a_firing_skips_it(url: &str) {
    let name = unique("paused");
    let run_for = Duration::from_millis(17_500);
    let (child_tx, mut child_rx) = mpsc::unbounded_channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let child = spawn_node(&config(url, &name, "paused", run_for), None, child_tx);
    let pid = child.id().unwrap().to_string();
    let here = tokio::spawn(run_node(config(url, &name, "awake", run_for), tx));
    // Stop the child right after its first event: it is then asleep until
    // the next firing, which it will sleep through.
    let mut lines = Vec::new();
    let stopped_after = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), child_rx.recv())
            .await
            .expect("the child node said nothing")
            .expect("the child node ended early");
        lines.push(line.clone());
        if let Line::Event { firing, .. } = line {
            signal(&pid, "-STOP");
            break firing;
        }
    };
    // Past the next firing (4 s later) by about 2 s, well within 5 minutes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(&pid, "-CONT");
    here.await.unwrap();
    lines.extend(finish(child, child_rx).await);
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert_each_firing_ran_once(&lines);
    // The stopped node did fire the next firing after waking.
    let next = runs_by_firing(&lines)
        .keys()
        .find(|f| f.as_str() > stopped_after.as_str())
        .cloned()
        .expect("no firing after the stop");
    let seen = events_of(&lines, &next);
    assert_eq!(
        seen.len(),
        2,
        "both nodes should have fired {next}: {lines:#?}"
    );
}

fn signal(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_node_stopped_across_a_firing_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    a_node_stopped_across_a_firing_skips_it(&url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_node_stopped_across_a_firing_skips_it() {
    a_node_stopped_across_a_firing_skips_it(&postgres_url()).await;
}

#[cfg(feature = "postgres")]
/// The runner of a firing is killed (SIGKILL) mid-job. Node "late" fires
/// every firing 1 s after it (its clock is behind), finds it taken, and:
/// - with `retry_within`, waits, takes the firing over once the dead
///   runner's 3 s lease lapses, and runs it with `retried` set;
/// - without, skips it for good, and runs the next firing as usual.
async fn a_runner_killed_mid_job(retry: Duration) -> Vec<Line> {
    let url = postgres_url();
    let name = unique("killed");
    let run_for = Duration::from_millis(14_000);
    let node = |owner: &str| NodeConfig {
        url: url.clone(),
        name: name.clone(),
        owner: owner.to_string(),
        period: Duration::from_secs(5),
        // Well beyond the 1 s skew: the dead runner's lease is still on
        // when the late node fires, so it finds the firing taken.
        lock_for: Duration::from_secs(3),
        at_least: Duration::ZERO,
        job: Duration::from_secs(2),
        run_for,
        retry,
    };
    let (runner_tx, mut runner_rx) = mpsc::unbounded_channel();
    let (late_tx, late_rx) = mpsc::unbounded_channel();
    let mut runner = spawn_node(&node("runner"), None, runner_tx);
    let late = spawn_node(&node("late"), Some("-1"), late_tx);
    let first = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), runner_rx.recv())
            .await
            .expect("the runner never ran a firing")
            .expect("the runner ended early");
        if let Line::Ran { firing, .. } = line {
            runner.start_kill().unwrap();
            break firing;
        }
    };
    let _ = exit_of(runner).await;
    let mut lines = finish(late, late_rx).await;
    lines.push(Line::Ran {
        firing: first,
        node: "runner".into(),
        retried: false,
    });
    lines
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_within_takes_over_the_firing_of_a_dead_runner() {
    let lines = a_runner_killed_mid_job(Duration::from_secs(4)).await;
    let first = first_run(&lines);
    let runs: Vec<_> = lines
        .iter()
        .filter(|l| matches!(l, Line::Ran { firing, .. } if *firing == first))
        .collect();
    assert_eq!(runs.len(), 2, "{lines:#?}");
    assert!(
        runs.iter()
            .any(|l| matches!(l, Line::Ran { node, retried: true, .. } if node == "late")),
        "the late node did not retry the dead runner's firing: {lines:#?}"
    );
    assert!(events_of(&lines, &first).contains(&"ran"), "{lines:#?}");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_a_dead_runners_firing_is_not_run_again() {
    let lines = a_runner_killed_mid_job(Duration::ZERO).await;
    let first = first_run(&lines);
    let runs = runs_by_firing(&lines);
    assert_eq!(runs[&first], vec!["runner".to_string()], "{lines:#?}");
    assert_eq!(events_of(&lines, &first), vec!["skipped"], "{lines:#?}");
    // The next firing runs on the node that is left.
    assert!(
        runs.iter()
            .any(|(f, nodes)| *f > first && nodes == &vec!["late".to_string()]),
        "{lines:#?}"
    );
}

#[cfg(feature = "postgres")]
fn first_run(lines: &[Line]) -> String {
    lines
        .iter()
        .find_map(|l| match l {
            Line::Ran { node, firing, .. } if node == "runner" => Some(firing.clone()),
            _ => None,
        })
        .unwrap()
}
