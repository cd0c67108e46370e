//! The `dlock` binary used as a user would: processes racing for one lock,
//! a holder killed with SIGKILL, status as JSON, exit codes, signals. Against
//! a real SQLite file, and PostgreSQL with the `postgres` feature
//! (DLOCK_TEST_POSTGRES_URL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SKIPPED: i32 = 75;
const LOCK_ERROR: i32 = 69;
const LOST: i32 = 76;
const USAGE: i32 = 64;

struct Env {
    url: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn sqlite() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("locks.db").display());
        Env { url, dir }
    }

    #[cfg(feature = "postgres")]
    fn postgres() -> Env {
        let url = std::env::var("DLOCK_TEST_POSTGRES_URL").expect(
            "set DLOCK_TEST_POSTGRES_URL=postgres://user:pass@127.0.0.1:PORT/db \
             (scripts/coordinators.sh writes it to .run/env) to test against PostgreSQL",
        );
        Env {
            url,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn dlock(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dlock"));
        c.env("DLOCK_URL", &self.url)
            .env_remove("DLOCK_TOKEN")
            .env_remove("DLOCK_NAME")
            .env_remove("DLOCK_OWNER")
            .stdin(Stdio::null());
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn status_json(&self, name: &str) -> serde_json::Value {
        let out = self
            .dlock()
            .args(["status", "--json", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_for_file(p: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_child(c: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = c.kill();
            panic!("dlock did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // pid (comm) STATE ...; comm may contain spaces: take after ')'.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

fn sigkill(c: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn sigterm(c: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

// --- two at once: exactly one runs ------------------------------------------

fn two_at_once_exactly_one_runs(env: &Env) {
    let name = unique("cli-race");
    let spawn = || {
        env.dlock()
            .args(["run", "--name", &name, "--lock-for", "10s", "--"])
            .args(["sh", "-c", "echo ran token=$DLOCK_TOKEN; sleep 1.5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
    let ran: Vec<_> = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("ran token="))
        .collect();
    assert_eq!(ran.len(), 1, "{}\n{}", show(&outs[0]), show(&outs[1]));
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, vec![Some(0), Some(SKIPPED)], "{codes:?}");
    let skipped = outs
        .iter()
        .find(|o| o.status.code() == Some(SKIPPED))
        .unwrap();
    let msg = String::from_utf8_lossy(&skipped.stderr);
    assert!(
        msg.contains("is held by") && msg.contains("skipped"),
        "{msg}"
    );
}

#[test]
fn sqlite_two_at_once_exactly_one_runs() {
    two_at_once_exactly_one_runs(&Env::sqlite());
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_two_at_once_exactly_one_runs() {
    two_at_once_exactly_one_runs(&Env::postgres());
}

// --- a holder killed with SIGKILL: skipped until the lease runs out ---------

fn sigkilled_holder_frees_after_lease(env: &Env) {
    let name = unique("cli-kill");
    let pid_file = env.path(&format!("{name}.pid"));
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let holder = env
        .dlock()
        .args(["run", "--name", &name, "--lock-for", "2s", "--"])
        .args(["sh", "-c", &script])
        .spawn()
        .unwrap();
    let child_pid = wait_for_file(&pid_file, Duration::from_secs(20));
    sigkill(&holder);
    let killed_at = Instant::now();
    let mut holder = holder;
    holder.wait().unwrap();

    // The command dies with its dlock (its group's sentinel stops it), not orphaned.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(&child_pid) {
        assert!(
            Instant::now() < deadline,
            "command {child_pid} outlived its SIGKILLed dlock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Right away the lease (kept alive until the kill) still holds.
    let out = env
        .dlock()
        .args(["run", "--name", &name, "--lock-for", "2s", "--", "true"])
        .output()
        .unwrap();
    if killed_at.elapsed() < Duration::from_millis(1000) {
        assert_eq!(out.status.code(), Some(SKIPPED), "{}", show(&out));
    }

    // After the lease (2 s + slack), the next run gets it.
    let deadline = killed_at + Duration::from_secs(15);
    loop {
        let out = env
            .dlock()
            .args([
                "run",
                "-q",
                "--name",
                &name,
                "--lock-for",
                "2s",
                "--",
                "true",
            ])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => break,
            Some(SKIPPED) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => panic!("after {:?}: {}", killed_at.elapsed(), show(&out)),
        }
    }
    assert!(
        killed_at.elapsed() >= Duration::from_millis(1000),
        "taken over after {:?}, before the 2 s lease could have run out",
        killed_at.elapsed()
    );
}

#[test]
fn sqlite_sigkilled_holder_frees_after_lease() {
    sigkilled_holder_frees_after_lease(&Env::sqlite());
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_sigkilled_holder_frees_after_lease() {
    sigkilled_holder_frees_after_lease(&Env::postgres());
}

// --- status --json shows holder and token ------------------------------------

fn status_json_shows_holder_and_token(env: &Env) {
    let name = unique("cli-status");
    let token_file = env.path(&format!("{name}.token"));
    // `exec`: the SIGTERM forwarded by dlock ends the sleep itself, not only sh.
    let script = format!(
        "echo $DLOCK_TOKEN > {}; exec sleep 30",
        token_file.display()
    );
    let mut holder = env
        .dlock()
        .args([
            "run",
            "--name",
            &name,
            "--lock-for",
            "30s",
            "--owner",
            "web-1",
        ])
        .args(["--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let token: u64 = wait_for_file(&token_file, Duration::from_secs(20))
        .parse()
        .unwrap();
    let v = env.status_json(&name);
    assert_eq!(v["name"], name.as_str());
    assert_eq!(v["held"], true);
    assert_eq!(v["owner"], "web-1");
    assert_eq!(v["token"], token);
    // RFC 3339 times by the coordinator, until after since.
    let since = v["locked_at"].as_str().unwrap();
    let until = v["lock_until"].as_str().unwrap();
    assert!(since.ends_with('Z') && until > since, "{v}");

    // Without a name, every held lock is listed, this one among them.
    let out = env.dlock().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == name.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{all}");
    assert_eq!(listed[0]["token"], token);
    assert_eq!(listed[0]["owner"], "web-1");

    // The table shows the same.
    let out = env.dlock().args(["status", &name]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("HOLDER") && table.contains("web-1") && table.contains(&token.to_string()),
        "{table}"
    );

    sigterm(&holder);
    wait_child(&mut holder, Duration::from_secs(20));
    // Released after the command ended (no at_least): free, and not listed.
    let v = env.status_json(&name);
    assert_eq!(v["held"], false, "{v}");
    assert!(v["token"].is_null());
    let out = env.dlock().args(["status", "--json"]).output().unwrap();
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == name.as_str()),
        "{all}"
    );
}

#[test]
fn sqlite_status_json_shows_holder_and_token() {
    status_json_shows_holder_and_token(&Env::sqlite());
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_status_json_shows_holder_and_token() {
    status_json_shows_holder_and_token(&Env::postgres());
}

// --- exit codes, environment ---------------------------------------------------

#[test]
fn command_exit_code_and_environment_pass_through() {
    let env = Env::sqlite();
    let out = env
        .dlock()
        .args([
            "run",
            "--name",
            "odd name/ü",
            "--lock-for",
            "5s",
            "--owner",
            "me",
        ])
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$DLOCK_NAME|$DLOCK_OWNER|$DLOCK_TOKEN\"; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<_> = line.trim().split('|').collect();
    assert_eq!(parts[..2], ["odd name/ü", "me"], "{line}");
    assert!(parts[2].parse::<u64>().unwrap() >= 1);

    // Killed by a signal: 128 + N.
    let out = env
        .dlock()
        .args([
            "run",
            "--name",
            "sig",
            "--lock-for",
            "5s",
            "--",
            "sh",
            "-c",
            "kill -9 $$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 9), "{}", show(&out));
}

#[test]
fn skipped_exit_code_is_configurable_and_at_least_holds() {
    let env = Env::sqlite();
    let run = |extra: &[&str]| {
        env.dlock()
            .args([
                "run",
                "--name",
                "daily",
                "--lock-for",
                "1m",
                "--at-least",
                "30s",
            ])
            .args(extra)
            .args(["--", "true"])
            .output()
            .unwrap()
    };
    // The job is short, but --at-least keeps the lock: the next node skips.
    assert_eq!(run(&[]).status.code(), Some(0));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(SKIPPED), "{}", show(&out));
    let out = run(&["--skipped-exit-code", "0", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
}

#[test]
fn wait_takes_the_lock_when_the_holder_ends() {
    let env = Env::sqlite();
    let mut holder = env
        .dlock()
        .args([
            "run",
            "--name",
            "w",
            "--lock-for",
            "10s",
            "--",
            "sleep",
            "1",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = env
        .dlock()
        .args([
            "run",
            "--name",
            "w",
            "--lock-for",
            "10s",
            "--wait",
            "20s",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(wait_child(&mut holder, Duration::from_secs(10)).success());
}

#[test]
fn lock_errors_usage_errors_and_missing_commands() {
    let env = Env::sqlite();
    let code = |args: &[&str], url: Option<&str>| {
        let mut c = env.dlock();
        if let Some(u) = url {
            c.env("DLOCK_URL", u);
        }
        let out = c.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c, e) = code(&["status", "x"], Some("mongodb://127.0.0.1:1"));
    assert_eq!(c, Some(LOCK_ERROR), "{e}");
    assert!(
        e.contains("unknown URL scheme") && e.contains("sqlite"),
        "{e}"
    );
    let (c, e) = code(&["status", "x"], Some(""));
    assert_eq!(c, Some(USAGE), "{e}");
    assert!(e.contains("DLOCK_URL"), "{e}");
    let (c, e) = code(
        &["run", "--name", "x", "--lock-for", "5s", "--", "true"],
        Some("sqlite:///nonexistent-dir/sub/locks.db"),
    );
    assert_eq!(c, Some(LOCK_ERROR), "{e}");
    let (c, e) = code(
        &[
            "run",
            "--name",
            "x",
            "--lock-for",
            "10 minuts",
            "--",
            "true",
        ],
        None,
    );
    assert_eq!(c, Some(USAGE), "{e}");
    assert!(e.contains("10 minuts"), "{e}");
    let (c, e) = code(
        &[
            "run",
            "--name",
            "x",
            "--lock-for",
            "1s",
            "--at-least",
            "5s",
            "--",
            "true",
        ],
        None,
    );
    assert_eq!(c, Some(LOCK_ERROR), "{e}");
    assert!(e.contains("at_least"), "{e}");
    let (c, e) = code(
        &["run", "--name", "", "--lock-for", "5s", "--", "true"],
        None,
    );
    assert_eq!(c, Some(LOCK_ERROR), "{e}");
    assert!(e.contains("invalid lock name"), "{e}");
    let (c, e) = code(
        &[
            "run",
            "--name",
            "x",
            "--lock-for",
            "5s",
            "--",
            "/no/such/cmd",
        ],
        None,
    );
    assert_eq!(c, Some(127), "{e}");
    let (c, e) = code(&["release", "x"], None);
    assert_eq!(c, Some(USAGE), "{e}");
    assert!(e.contains("--force"), "{e}");
    let (c, _) = code(&["run", "--name", "x", "--lock-for", "5s"], None);
    assert_eq!(c, Some(USAGE));
    let (c, _) = code(&["--help"], None);
    assert_eq!(c, Some(0));
}

// --- lost lock: the command is killed at once, exit 76 ------------------------

#[test]
fn lost_lock_kills_the_command_at_once() {
    let env = Env::sqlite();
    let marker = env.path("got-term");
    let started = env.path("started");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; echo $$ > {}; while :; do sleep 0.1; done",
        marker.display(),
        started.display()
    );
    let mut holder = env
        .dlock()
        .args([
            "run",
            "--name",
            "l",
            "--lock-for",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    let sh_pid = wait_for_file(&started, Duration::from_secs(20));
    // The operator frees the lock: from now on anyone may take it, so once
    // the holder learns (at its next keep-alive) there is no time left for
    // a graceful SIGTERM.
    let out = env
        .dlock()
        .args(["release", "l", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("released lock \"l\""));
    let st = wait_child(&mut holder, Duration::from_secs(20));
    assert_eq!(st.code(), Some(LOST));
    assert!(!alive(&sh_pid), "the command outlived the loss");
    assert!(
        !marker.exists(),
        "the command got SIGTERM and ran its handler after the lock was lost"
    );
}

// --- signals sent to dlock reach the command; the lock is released -------------

#[test]
fn sigterm_is_forwarded_and_the_lock_released() {
    let env = Env::sqlite();
    let marker = env.path("fwd");
    let started = env.path("started");
    let script = format!(
        "trap 'echo forwarded > {}; exit 3' TERM; echo up > {}; while :; do sleep 0.1; done",
        marker.display(),
        started.display()
    );
    let mut holder = env
        .dlock()
        .args([
            "run",
            "--name",
            "f",
            "--lock-for",
            "30s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    wait_for_file(&started, Duration::from_secs(20));
    sigterm(&holder);
    let st = wait_child(&mut holder, Duration::from_secs(20));
    assert_eq!(st.code(), Some(3), "dlock exits with the command's code");
    assert_eq!(wait_for_file(&marker, Duration::from_secs(1)), "forwarded");
    assert_eq!(env.status_json("f")["held"], false);
}

// --- children die with the lease ----------------------------------------------
//
// Whatever ends the first holder's lease, no process of its command may still
// run when a second `dlock run` has the lock. The second command itself takes
// the snapshot (it starts right after its lock was granted), so the check is
// made at that moment and not some time later.

/// How the first holder loses its lease.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    /// The coordinator becomes unreachable: the proxy in front of it is cut.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Cut,
    /// The first `dlock` is killed with SIGKILL.
    SigkillDlock,
    /// The first `dlock` is stopped (SIGSTOP): it can neither renew nor signal.
    StopDlock,
}

/// `argv` of process `pid` (empty for zombies and processes gone).
fn cmdline(pid: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `(pid, state, pgrp)` from one line of `/proc/PID/stat`.
fn parse_stat(line: &str) -> Option<(i32, char, i32)> {
    let (head, rest) = line.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((pid, state, pgrp))
}

fn pgrp_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    parse_stat(&stat).unwrap().2
}

/// The pid of the live process whose argv is exactly `argv`.
fn find_process(argv: &[&str], within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<i32>().is_ok() && cmdline(&name) == argv && alive(&name) {
                return name.parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no process {argv:?} appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills what the test started, pass or fail, so nothing outlives it.
struct Cleanup {
    pids: Vec<i32>,
    group: Option<i32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        if let Some(g) = self.group {
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
        for p in &self.pids {
            let _ = kill(Pid::from_raw(*p), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
    }
}

/// `url` with its host and port replaced by `addr`.
#[cfg(feature = "postgres")]
fn redirect(url: &str, addr: std::net::SocketAddr) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_host(Some(&addr.ip().to_string())).unwrap();
    u.set_port(Some(addr.port())).unwrap();
    u.to_string()
}

/// Runs `sh -c SCRIPT` (which must write its pid to `$1`, then run `sleep
/// SLEEP_ARG`, then touch `$2`) under a first `dlock run --lock-for 3s`, ends
/// that holder's lease as `loss` says, lets a second `dlock run` wait for the
/// lock, and checks from inside the second command that nothing of the first
/// command still runs.
fn command_is_dead_before_the_next_holder(env: &Env, loss: Loss, script: &str, sleep_arg: &str) {
    let name = unique("cli-children");
    let pid_file = env.path("first.pid");
    let done = env.path("done");
    // The first holder talks to the coordinator through a proxy the test can
    // cut (PostgreSQL); otherwise directly.
    let rt = tokio::runtime::Runtime::new().unwrap();
    #[cfg(feature = "postgres")]
    let (first_url, mut proxy) = if loss == Loss::Cut {
        let u = url::Url::parse(&env.url).unwrap();
        let upstream = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
        let p = rt.block_on(dlock_testkit::Proxy::start(upstream)).unwrap();
        (redirect(&env.url, p.addr()), Some(p))
    } else {
        (env.url.clone(), None)
    };
    #[cfg(not(feature = "postgres"))]
    let first_url = env.url.clone();
    let first_log = std::fs::File::create(env.path("first.log")).unwrap();
    let mut first = env
        .dlock()
        .env("DLOCK_URL", &first_url)
        .args(["run", "--name", &name, "--lock-for", "3s", "--"])
        .args(["sh", "-c", script, "sh"])
        .arg(&pid_file)
        .arg(&done)
        // Files, not pipes: a process that outlives the test must not keep
        // the test's pipes open.
        .stdout(Stdio::null())
        .stderr(first_log)
        .spawn()
        .unwrap();
    let mut cleanup = Cleanup {
        pids: vec![first.id() as i32],
        group: None,
    };
    let sh_pid: i32 = wait_for_file(&pid_file, Duration::from_secs(20))
        .parse()
        .unwrap();
    cleanup.pids.push(sh_pid);
    let sleep_pid = find_process(&["sleep", sleep_arg], Duration::from_secs(10));
    cleanup.pids.push(sleep_pid);
    let group = pgrp_of(sh_pid);
    let own_group = group != nix::unistd::getpgrp().as_raw();
    if own_group {
        cleanup.group = Some(group);
    }

    let lost_at = Instant::now();
    match loss {
        Loss::Cut => {
            #[cfg(feature = "postgres")]
            proxy.as_mut().unwrap().cut();
            #[cfg(not(feature = "postgres"))]
            panic!("Loss::Cut needs the postgres feature");
        }
        Loss::SigkillDlock => {
            sigkill(&first);
            first.wait().unwrap();
        }
        Loss::StopDlock => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first.id() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap(),
    }

    // The snapshot: every process's stat line, the pids whose command line
    // names the first command's unique sleep (the pattern is written so that
    // grep's and this shell's own command lines do not match it), whether
    // `done` exists.
    let pattern = sleep_arg.replace('.', "[.]");
    let snap = format!(
        "cat /proc/[0-9]*/stat > {stat} 2>/dev/null; \
         grep -alE '{pattern}' /proc/[0-9]*/cmdline > {cmd} 2>/dev/null; \
         if [ -e {done} ]; then echo present > {done_snap}; fi; \
         echo ok > {ok}",
        stat = env.path("stat.snap").display(),
        cmd = env.path("cmdline.snap").display(),
        done = done.display(),
        done_snap = env.path("done.snap").display(),
        ok = env.path("snap.ok").display(),
    );
    let second = env
        .dlock()
        .args([
            "run",
            "--name",
            &name,
            "--lock-for",
            "10s",
            "--wait",
            "60s",
            "--",
        ])
        .args(["sh", "-c", &snap])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = second.wait_with_output().unwrap();
    let took = lost_at.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        wait_for_file(&env.path("snap.ok"), Duration::from_secs(1)),
        "ok"
    );
    let first_log = || std::fs::read_to_string(env.path("first.log")).unwrap_or_default();

    // Whose command line names the sleep: the first command's processes (and
    // the first dlock itself, which may still be exiting or stopped).
    let first_pid = first.id().to_string();
    let named: Vec<String> = std::fs::read_to_string(env.path("cmdline.snap"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("/proc/")?
                .strip_suffix("/cmdline")
                .map(String::from)
        })
        .filter(|p| *p != first_pid)
        .collect();
    // Every live member of the first command's process group.
    let members: Vec<String> = std::fs::read_to_string(env.path("stat.snap"))
        .unwrap()
        .lines()
        .filter_map(parse_stat)
        .filter(|(_, state, pgrp)| own_group && *pgrp == group && !matches!(state, 'Z' | 'X'))
        .map(|(pid, state, _)| format!("{pid} ({state})"))
        .collect();
    let sleep_alive = std::fs::read_to_string(env.path("stat.snap"))
        .unwrap()
        .lines()
        .filter_map(parse_stat)
        .any(|(pid, state, _)| (pid == sleep_pid || pid == sh_pid) && !matches!(state, 'Z' | 'X'));
    assert!(
        named.is_empty() && members.is_empty() && !sleep_alive,
        "{loss:?}: the second holder got the lock {took:?} after the loss while the first \
         command still ran: processes naming {sleep_arg:?}: {named:?}; live members of its \
         process group {group}: {members:?}; sh {sh_pid} or sleep {sleep_pid} alive: \
         {sleep_alive}\nfirst dlock's stderr:\n{}",
        first_log()
    );
    assert!(
        !env.path("done.snap").exists() && !done.exists(),
        "the first command ran to its end under the second holder"
    );
    // The command ran in a process group of its own, so all of it could be
    // signalled at once.
    assert!(
        own_group,
        "the command ran in dlock's own process group {group}"
    );

    match loss {
        Loss::Cut => {
            let st = wait_child(&mut first, Duration::from_secs(30));
            assert_eq!(st.code(), Some(LOST), "{}", first_log());
        }
        Loss::SigkillDlock => {}
        Loss::StopDlock => {
            sigkill(&first);
            first.wait().unwrap();
        }
    }
    drop(cleanup);
    drop(rt);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_cut_coordinator_stops_the_whole_command_before_the_next_holder() {
    command_is_dead_before_the_next_holder(
        &Env::postgres(),
        Loss::Cut,
        r#"echo $$ > "$1"; sleep 30.4242; touch "$2""#,
        "30.4242",
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_cut_coordinator_kills_a_term_ignoring_command_before_the_next_holder() {
    command_is_dead_before_the_next_holder(
        &Env::postgres(),
        Loss::Cut,
        r#"trap "" TERM; echo $$ > "$1"; sleep 30.4343; touch "$2""#,
        "30.4343",
    );
}

#[test]
fn sqlite_sigkilled_dlock_stops_the_whole_command_before_the_next_holder() {
    command_is_dead_before_the_next_holder(
        &Env::sqlite(),
        Loss::SigkillDlock,
        r#"echo $$ > "$1"; sleep 30.4444; touch "$2""#,
        "30.4444",
    );
}

#[test]
fn sqlite_sigkilled_dlock_kills_a_term_ignoring_command_before_the_next_holder() {
    command_is_dead_before_the_next_holder(
        &Env::sqlite(),
        Loss::SigkillDlock,
        r#"trap "" TERM; echo $$ > "$1"; sleep 30.4545; touch "$2""#,
        "30.4545",
    );
}

#[test]
fn sqlite_stopped_dlock_cannot_keep_its_command_running_past_the_lease() {
    command_is_dead_before_the_next_holder(
        &Env::sqlite(),
        Loss::StopDlock,
        r#"echo $$ > "$1"; sleep 30.4646; touch "$2""#,
        "30.4646",
    );
}

#[test]
fn kill_after_must_leave_room_in_the_lease() {
    let env = Env::sqlite();
    let run = |extra: &[&str]| {
        env.dlock()
            .args(["run", "--name", "ka", "--lock-for", "3s"])
            .args(extra)
            .args(["--", "true"])
            .output()
            .unwrap()
    };
    // SIGTERM would come 10 s before the end of a 3 s lease: refused before
    // anything is taken or run.
    let out = run(&["--kill-after", "10s"]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", show(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--kill-after") && e.contains("--lock-for"),
        "{e}"
    );
    assert_eq!(env.status_json("ka")["held"], false);
    // One that fits, and the default (which fits any --lock-for).
    let out = run(&["--kill-after", "500ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

// --- secrets stay out of the command's environment -----------------------------

#[cfg(feature = "postgres")]
#[test]
fn postgres_command_environment_has_no_url_or_password() {
    let env = Env::postgres();
    let url = url::Url::parse(&env.url).unwrap();
    let password = url
        .password()
        .map(String::from)
        .expect("DLOCK_TEST_POSTGRES_URL must carry a password for this test to mean anything");
    let userinfo = format!("{}:{password}@", url.username());
    let name = unique("cli-env");
    // The URL from DLOCK_URL, and from --url. Nothing else in dlock's
    // environment carries it (the test's own DLOCK_TEST_* would).
    for via_flag in [false, true] {
        let mut c = env.dlock();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if via_flag {
            c.args(["--url", &env.url]);
        } else {
            c.env("DLOCK_URL", &env.url);
        }
        let out = c
            .args(["run", "--name", &name, "--lock-for", "5s", "--", "env"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let vars = String::from_utf8_lossy(&out.stdout);
        for var in ["DLOCK_TOKEN=", "DLOCK_NAME=", "DLOCK_OWNER="] {
            assert!(
                vars.lines().any(|l| l.starts_with(var)),
                "{var} missing: {vars}"
            );
        }
        let leaks: Vec<&str> = vars
            .lines()
            .filter(|l| {
                let value = l.split_once('=').map_or("", |(_, v)| v);
                l.starts_with("DLOCK_URL=") || l.contains(&userinfo) || value == password
            })
            .collect();
        assert!(
            leaks.is_empty(),
            "via {}: the command's environment carries the coordinator's secret: {leaks:?}",
            if via_flag { "--url" } else { "DLOCK_URL" }
        );
    }
}

// --- the whole group: forwarded signals, leftovers -------------------------------

#[test]
fn forwarded_sigterm_reaches_the_whole_group() {
    let env = Env::sqlite();
    let pid_file = env.path("sleep.pid");
    // sh waits for its foreground sleep: SIGTERM to sh alone would end sh
    // and leave the sleep running.
    let script = format!("sleep 30.4848 & echo $! > {}; wait", pid_file.display());
    let mut holder = env
        .dlock()
        .args(["run", "--name", "fwd-group", "--lock-for", "30s", "--"])
        .args(["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleep_pid = wait_for_file(&pid_file, Duration::from_secs(20));
    let _cleanup = Cleanup {
        pids: vec![sleep_pid.parse().unwrap()],
        group: None,
    };
    sigterm(&holder);
    wait_child(&mut holder, Duration::from_secs(20));
    assert!(
        !alive(&sleep_pid),
        "the command's child {sleep_pid} outlived the SIGTERM sent to dlock"
    );
}

#[test]
fn background_jobs_die_before_the_lock_is_released() {
    let env = Env::sqlite();
    let pid_file = env.path("bg.pid");
    // The command starts a job in the background and exits at once.
    let script = format!(
        "sleep 30.4949 > /dev/null 2>&1 & echo $! > {}",
        pid_file.display()
    );
    let out = env
        .dlock()
        .args(["run", "--name", "bg", "--lock-for", "30s", "--"])
        .args(["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let bg = wait_for_file(&pid_file, Duration::from_secs(1));
    let _cleanup = Cleanup {
        pids: vec![bg.parse().unwrap()],
        group: None,
    };
    // dlock has released the lock and exited: the job must be gone already.
    assert_eq!(env.status_json("bg")["held"], false);
    assert!(
        !alive(&bg),
        "background job {bg} of the command outlived the released lock"
    );
}
