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

    // The command dies with its dlock (parent-death signal), not orphaned.
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
    let (c, e) = code(&["status", "x"], Some("redis://127.0.0.1:1"));
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
    assert!(e.contains("lock_at_least_for"), "{e}");
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

// --- lost lock: the command is signalled, exit 76 ------------------------------

#[test]
fn lost_lock_signals_the_command() {
    let env = Env::sqlite();
    let marker = env.path("got-term");
    let started = env.path("started");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; echo up > {}; while :; do sleep 0.1; done",
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
    wait_for_file(&started, Duration::from_secs(20));
    let out = env
        .dlock()
        .args(["release", "l", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("released lock \"l\""));
    let st = wait_child(&mut holder, Duration::from_secs(20));
    assert_eq!(st.code(), Some(LOST));
    assert_eq!(wait_for_file(&marker, Duration::from_secs(1)), "term");
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
