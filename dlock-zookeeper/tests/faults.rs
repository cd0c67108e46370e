//! Faults: the shared ZooKeeper killed and restarted with guards held, and a
//! holder process paused past its session timeout. The test script runs the
//! `faults` binaries alone and serially, so restarting the server here
//! disturbs nobody. Needs `DLOCK_TEST_ZOOKEEPER_URL` and
//! `DLOCK_TEST_COORDINATORS` (both written to .run/env).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dlock_core::{LockGuard, Locker};
use dlock_zookeeper::ZookeeperBackend;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILD_ENV: &str = "DLOCK_ZK_FAULT_CHILD";

/// The fault tests run one at a time even under libtest's parallel runner:
/// a restart of the server would disturb the paused-holder test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn locker(root: &str, owner: &str) -> Locker {
    let b = ZookeeperBackend::connect(&url(root)).await.unwrap();
    Locker::new(b).with_owner(owner).unwrap()
}

/// Polls `try_lock` until it succeeds; the guard and how long it took.
async fn take_when_free(l: &Locker, name: &str, limit: Duration) -> (LockGuard, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(g) = l.try_lock(name, Duration::from_secs(30)).await.unwrap() {
            return (g, t0.elapsed());
        }
        assert!(t0.elapsed() < limit, "{name} still held after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type ChildLines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The child's next output line starting with `what` (libtest's own lines are skipped).
async fn next(lines: &mut ChildLines, what: &str) -> String {
    let fut = async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("child exited early");
            // libtest prints "test child_holder ... " before the first line.
            if let Some(i) = line.find(what) {
                return line[i..].to_string();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("no {what} line from the child"))
}

fn coordinators() -> String {
    std::env::var("DLOCK_TEST_COORDINATORS").unwrap_or_else(|_| {
        panic!("DLOCK_TEST_COORDINATORS is not set: run scripts/test.sh or `source .run/env`")
    })
}

/// `$DLOCK_TEST_COORDINATORS restart --hard zookeeper` (kill -9, start).
///
/// Works around a race in the script: right after SIGKILL the JVM's main
/// thread is a zombie while its other threads still hold the listening
/// socket, so the start's "port in use" check can fire. Then start again.
async fn restart_hard() {
    let script = coordinators();
    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            std::process::Command::new(&script)
                .args(args)
                .output()
                .unwrap()
        };
        let out = run(&["restart", "--hard", "zookeeper"]);
        if out.status.success() {
            return;
        }
        let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
        for _ in 0..10 {
            if !err.contains("already in use") {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            let out = run(&["start", "zookeeper"]);
            if out.status.success() {
                return;
            }
            err = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("restart --hard zookeeper failed: {err}");
    })
    .await
    .unwrap();
}

/// The holder process of `paused_holder_loses_its_lock`, which starts this
/// binary with `--ignored --exact child_holder`; ignored in ordinary runs.
#[tokio::test]
#[ignore = "a child-process role, started by paused_holder_loses_its_lock"]
async fn child_holder() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (u, name) = spec.split_once('|').unwrap();
    let b = ZookeeperBackend::connect(u).await.unwrap();
    let l = Locker::new(b).with_owner("paused-child").unwrap();
    let g = l
        .acquire(name)
        .lock_for(Duration::from_secs(20))
        .keep_alive(true)
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    println!("ACQUIRED {}", g.token());
    let reason = g.lost().wait().await;
    println!("LOST held={} {}", g.is_held(), reason.replace('\n', " "));
    let r = g.release().await;
    println!(
        "RELEASE lock_lost={}",
        matches!(&r, Err(e) if e.is_lock_lost())
    );
}

#[tokio::test]
async fn paused_holder_loses_its_lock() {
    let _serial = SERIAL.lock().await;
    let root = unique_root("paused");
    let name = "paused";
    let me = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(me)
        .args([
            "child_holder",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{name}", url(&root)))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = next(&mut lines, "ACQUIRED").await;
    let child_token: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();

    let l = locker(&root, "parent").await;
    assert!(l
        .try_lock(name, Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    let st = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    // The paused child neither pings nor extends: the server expires its
    // 4 s session and the lock passes on, with a larger token.
    let (g, took) = take_when_free(&l, name, Duration::from_secs(15)).await;
    assert!(took >= Duration::from_secs(3), "free after only {took:?}");
    assert!(g.token().0 > child_token, "token did not grow");
    let st = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    // Awake again, the child's guard must report the loss at once.
    let t_cont = Instant::now();
    let line = next(&mut lines, "LOST").await;
    assert!(t_cont.elapsed() < Duration::from_secs(5), "{line}");
    assert!(line.starts_with("LOST held=false"), "{line}");
    let line = next(&mut lines, "RELEASE").await;
    assert_eq!(line, "RELEASE lock_lost=true");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(g.is_held(), "the new holder was disturbed");
    g.release().await.unwrap();
}

#[tokio::test]
async fn zookeeper_killed_and_restarted_with_guards_held() {
    let _serial = SERIAL.lock().await;
    let root = unique_root("restart");
    let a = locker(&root, "holder").await;
    let b = locker(&root, "other").await;
    let renewed = a
        .acquire("renewed")
        .lock_for(Duration::from_secs(2))
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    let long = a
        .acquire("long")
        .lock_for(Duration::from_secs(60))
        .keep_alive(false)
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    let before = renewed.token().max(long.token());

    restart_hard().await;

    // Whatever happened to the session, never two valid holders: whenever
    // another owner gets a lock, the old guard already reports it lost.
    for (g, name) in [(&renewed, "renewed"), (&long, "long")] {
        let t0 = Instant::now();
        loop {
            if let Some(g2) = b.try_lock(name, Duration::from_secs(10)).await.unwrap() {
                assert!(!g.is_held(), "{name}: two valid holders after the restart");
                assert!(
                    g.lost().is_lost(),
                    "{name}: taken over without lost() firing"
                );
                assert!(
                    g2.token() > before,
                    "{name}: token did not grow across the restart"
                );
                g2.release().await.unwrap();
                eprintln!(
                    "{name}: session lost in the restart; taken over after {:?}",
                    t0.elapsed()
                );
                break;
            }
            if g.is_held() && t0.elapsed() > Duration::from_secs(12) {
                // The session survived the restart (a reconnect within it):
                // the guard keeps the lock, and the lock stays taken.
                eprintln!("{name}: the session survived the restart; the guard still holds it");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{name}: neither held by its guard nor free 20 s after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The holder's backend works again (same session or a new one), with
    // tokens above everything before the restart.
    let (g3, _) = take_when_free(&a, "after", Duration::from_secs(20)).await;
    assert!(g3.token() > before);
    g3.release().await.unwrap();
    for g in [renewed, long] {
        let held = g.is_held();
        let r = g.release().await;
        assert_eq!(
            r.is_ok(),
            held,
            "release answered {r:?} for a guard held={held}"
        );
    }
}
