//! The mutation test: the conformance suite must kill every seeded bug.
//!
//! Run as a test (no `DLOCK_MUTATION_ROLE`), this binary has one trial,
//! `mutation::suite_kills_every_mutant`: it re-executes itself to run the
//! suite against the faithful SQLite copy (which must pass every case), and
//! beside it against each mutant of `adapter::MUTANTS`, a few at a time, each in a
//! child process of its own with a fresh SQLite directory and a time limit,
//! prints a table mutant -> failing case(s), and fails listing every
//! non-equivalent mutant whose run still passed (or timed out: a hang is
//! inconclusive, not a kill).
//!
//! With `DLOCK_MUTATION_ROLE=suite` it is that child: the conformance suite
//! (`dlock_testkit::Suite`) against `adapter::MutantSqlite`, the mutant
//! chosen by `DLOCK_MUTANT` (unset: the faithful copy).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod adapter;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROLE: &str = "DLOCK_MUTATION_ROLE";
const BACKEND: &str = "mutant";

/// Cases too slow to run for every mutant; a mutant lists the ones it needs.
const SLOW: &[&str] = &[
    "concurrency_no_overlap",
    "wait_runs_out_as_none_after_a_pause",
    "at_least_after_exit",
    "at_least_after_exit_without_release",
    "sigkill_frees_lock",
    // Built on the lock: any adapter bug they catch, the lock's cases do.
    "election_observers_see_every_term_in_order",
    "election_killed_leader_is_replaced",
];

/// Per-child limit: a hang is reported as inconclusive
/// (`DLOCK_MUTATION_CHILD_LIMIT_S` overrides it, in seconds).
const CHILD_LIMIT: Duration = Duration::from_secs(240);

fn child_limit() -> Duration {
    std::env::var("DLOCK_MUTATION_CHILD_LIMIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(CHILD_LIMIT)
}

/// `DLOCK_MUTATION_ONLY=a,b` runs only these mutants (after the faithful copy).
fn selected(name: &str) -> bool {
    match std::env::var("DLOCK_MUTATION_ONLY") {
        Ok(v) if !v.trim().is_empty() => v.split(',').any(|n| n.trim() == name),
        _ => true,
    }
}
/// Mutant runs at a time (besides the faithful copy's): each child mostly
/// waits on leases, so four keep two cores busy without starving them.
const PARALLEL: usize = 4;

fn main() -> ExitCode {
    if std::env::var_os(ROLE).is_some() {
        return run_suite();
    }
    let args = libtest_mimic::Arguments::from_args();
    let trial = libtest_mimic::Trial::test("mutation::suite_kills_every_mutant", || {
        drive().map_err(libtest_mimic::Failed::from)
    });
    libtest_mimic::run(&args, vec![trial]).exit_code()
}

fn run_suite() -> ExitCode {
    let dir = match std::env::var("DLOCK_MUTATION_DIR") {
        Ok(d) => d,
        Err(_) => {
            eprintln!("DLOCK_MUTATION_DIR is not set");
            return ExitCode::FAILURE;
        }
    };
    dlock_testkit::Suite::new(BACKEND)
        .url(format!("sqlite://{dir}/"))
        .namespace(|url: &str, ns: &str| format!("{url}{ns}.db?table=dlock_{ns}"))
        .unreachable_url(format!("sqlite://{dir}/no-such-directory/x.db"))
        .break_coordinator(drop_table)
        .connect(|url: String| async move {
            Ok(Arc::new(adapter::MutantSqlite::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}

/// `Suite::break_coordinator`: drops the run's lock table (`table=` in the
/// namespaced URL) under the connected adapter.
async fn drop_table(url: String) -> Result<(), String> {
    use sqlx::Connection;
    let (file, query) = url.split_once('?').ok_or("no table= in the URL")?;
    let table = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("table="))
        .ok_or("no table= in the URL")?;
    let mut c = sqlx::SqliteConnection::connect(file)
        .await
        .map_err(|e| format!("open {file}: {e}"))?;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut c)
        .await
        .map_err(|e| format!("drop {table}: {e}"))?;
    Ok(())
}

/// What one suite run showed.
enum Outcome {
    /// Every case passed.
    Passed,
    /// These cases failed; the second part is what the suite printed about
    /// them (its `failures:` section), for when the faithful copy fails.
    Killed(Vec<String>, String),
    /// The run failed without a failing case (crash), with its output's tail.
    Broken(String),
    /// The run did not finish within the limit.
    TimedOut,
}

fn run_child(mutant: Option<&str>, skip: &[&str]) -> Result<(Outcome, Duration), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let base = concat!(env!("CARGO_TARGET_TMPDIR"), "/dlock-mutation");
    let dir = format!(
        "{base}/{}-{}",
        mutant.unwrap_or("faithful"),
        dlock_testkit::namespace_id()
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {dir}: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env(ROLE, "suite")
        .env("DLOCK_MUTATION_DIR", &dir)
        .env_remove(adapter::ENV)
        .args(["--test-threads", "4", "--color", "never"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    for s in skip {
        cmd.args(["--skip", s]);
    }
    if let Some(m) = mutant {
        cmd.env(adapter::ENV, m);
    }
    let limit = child_limit();
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break Some(st);
        }
        if t0.elapsed() > limit {
            // The whole group: the suite and the holders it spawned.
            let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = t0.elapsed();
    let text = reader.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let Some(status) = status else {
        return Ok((Outcome::TimedOut, took));
    };
    let prefix = format!("test conformance::{BACKEND}::");
    let failed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.strip_suffix("FAILED"))
        .map(|l| l.trim_end_matches([' ', '.']).trim().to_string())
        .collect();
    Ok((
        match (status.success(), failed.is_empty()) {
            (true, true) => Outcome::Passed,
            (_, false) => Outcome::Killed(failed, failures_section(&text)),
            (false, true) => {
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                Outcome::Broken(tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            }
        },
        took,
    ))
}

/// The part of a libtest report from its first `failures:` line to its
/// summary: each failed case's message.
fn failures_section(text: &str) -> String {
    let from = text.find("\nfailures:\n").unwrap_or(text.len());
    let to = text[from..]
        .find("\ntest result:")
        .map_or(text.len(), |i| from + i);
    text[from..to].trim().to_string()
}

fn skips_for(needed: &[&str]) -> Vec<&'static str> {
    SLOW.iter()
        .copied()
        .filter(|s| {
            !needed
                .iter()
                .any(|n| n == s || n.starts_with(s) || s.starts_with(n))
        })
        .collect()
}

fn drive() -> Result<(), String> {
    let t0 = Instant::now();
    // Every case name the suite has, so the table names only real cases.
    let known: BTreeSet<&str> = dlock_testkit::cases().iter().map(|c| c.name).collect();
    // The faithful copy runs beside the mutants (the children mostly wait
    // on leases, not on the CPU); its verdict is checked before any
    // mutant's, which mean nothing unless it passed.
    let faithful = std::thread::spawn(|| run_child(None, &[]));
    let queue = Arc::new(Mutex::new(
        adapter::MUTANTS
            .iter()
            .filter(|m| selected(m.name))
            .collect::<Vec<_>>(),
    ));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (queue, results) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let Some(m) = queue.lock().unwrap().pop() else {
                    break;
                };
                let r = run_child(Some(m.name), &skips_for(m.slow));
                results.lock().unwrap().push((m, r));
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a worker thread panicked")?;
    }
    let (faithful, took) = faithful
        .join()
        .map_err(|_| "the faithful copy's thread panicked")??;
    match faithful {
        Outcome::Passed => println!("faithful copy: every case passed ({took:.1?})"),
        Outcome::Killed(f, why) => {
            return Err(format!(
                "the faithful SQLite copy failed {f:?}: the suite or the copy is broken, no mutant verdict means anything\n{why}"
            ))
        }
        Outcome::Broken(t) => return Err(format!("the faithful copy's suite run broke:\n{t}")),
        Outcome::TimedOut => {
            return Err(format!(
                "the faithful copy's suite run did not finish in {:?}",
                child_limit()
            ))
        }
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|(m, _)| adapter::MUTANTS.iter().position(|x| x.name == m.name));
    let mut bad = Vec::new();
    println!("{:<34} {:>6}  verdict", "mutant", "time");
    for (m, r) in &results {
        let (verdict, took, ok) = match r {
            Err(e) => (format!("ERROR running it: {e}"), Duration::ZERO, false),
            Ok((Outcome::Killed(cases, _), took)) => {
                let unknown: Vec<&String> = cases
                    .iter()
                    .filter(|c| !known.contains(c.as_str()))
                    .collect();
                if unknown.is_empty() {
                    (format!("killed by {}", cases.join(", ")), *took, true)
                } else {
                    (format!("failed unknown cases {unknown:?}"), *took, false)
                }
            }
            Ok((Outcome::Passed, took)) => match m.equivalent {
                Some(why) => (format!("survived, equivalent: {why}"), *took, true),
                None => (format!("SURVIVED ({})", m.breaks), *took, false),
            },
            Ok((Outcome::TimedOut, took)) => (
                format!(
                    "SURVIVED, inconclusive: no verdict within {:?}",
                    child_limit()
                ),
                *took,
                false,
            ),
            Ok((Outcome::Broken(tail), took)) => (
                format!("SURVIVED, inconclusive: the run failed without a failing case:\n{tail}"),
                *took,
                false,
            ),
        };
        println!("{:<34} {:>5.0}s  {verdict}", m.name, took.as_secs_f64());
        if !ok {
            bad.push(m.name);
        }
    }
    println!(
        "{} mutants, {} equivalent, wall time {:.0?}",
        results.len(),
        results
            .iter()
            .filter(|(m, _)| m.equivalent.is_some())
            .count(),
        t0.elapsed()
    );
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the conformance suite let {} non-equivalent mutant(s) survive: {}",
            bad.len(),
            bad.join(", ")
        ))
    }
}
