//! Holders in child processes: the test binary re-executes itself in a role.

use crate::history::{work, Hold};
use crate::Suite;
use dlock_core::Locker;
use serde::{Deserialize, Serialize};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const ENV: &str = "DLOCK_TESTKIT_CHILD";

/// What a child process does after it acquired.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Release at once and exit.
    ReleaseAndExit,
    /// Keep holding until killed.
    Hang,
    /// Exit at once, without releasing (the cron pattern: the job returns
    /// and `main` ends before any background release runs).
    ExitWithoutRelease,
}

/// The role a child process plays.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum Role {
    /// Acquire (waiting up to `wait_ms`), print `ACQUIRED <token> <wall clock ms>`, then `after`.
    Hold {
        /// Lock name.
        name: String,
        /// Owner.
        owner: String,
        /// lock_at_most_for in ms.
        at_most_ms: u64,
        /// lock_at_least_for in ms.
        at_least_ms: u64,
        /// Keep the lease alive.
        keep_alive: bool,
        /// How long to wait for the lock, ms.
        wait_ms: u64,
        /// What to do once held.
        after: After,
    },
    /// One `try_lock`: prints `ACQUIRED <token> <wall clock ms>` (then releases) or `HELD`.
    Try {
        /// Lock name.
        name: String,
        /// Owner.
        owner: String,
        /// lock_at_most_for in ms.
        at_most_ms: u64,
    },
    /// Print `WAITING`, then one `lock()` waiting up to `wait_ms`: prints
    /// `ACQUIRED <token> <wall clock ms>` (then releases) or `HELD` when the
    /// wait ran out; an error is `ERROR ...` as for every role.
    Wait {
        /// Lock name.
        name: String,
        /// Owner.
        owner: String,
        /// lock_at_most_for in ms.
        at_most_ms: u64,
        /// How long to wait for the lock, ms.
        wait_ms: u64,
    },
    /// Campaign in the election `name` until leading, print `LEADING
    /// <epoch>`, then lead until killed.
    Lead {
        /// Election name.
        name: String,
        /// Owner.
        owner: String,
        /// The leader's lease, ms.
        lease_ms: u64,
    },
    /// A concurrency worker: `tasks` tasks, each `per_task` acquisitions; prints HOLD lines.
    Work {
        /// Names to contend for.
        names: Vec<String>,
        /// Tasks in this process.
        tasks: usize,
        /// Successful acquisitions per task.
        per_task: usize,
        /// Lease in ms.
        lease_ms: u64,
        /// Owner prefix.
        owner: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    url: String,
    role: Role,
}

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// If this process was started as a child, plays its role and returns the exit code.
pub(crate) fn maybe_run_child(suite: &Suite) -> Option<ExitCode> {
    let raw = std::env::var(ENV).ok()?;
    let code = match serde_json::from_str::<Envelope>(&raw) {
        Ok(env) => {
            let rt = match crate::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    println!("ERROR {e}");
                    return Some(ExitCode::from(2));
                }
            };
            match rt.block_on(play(suite, env)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    println!("ERROR {}", e.replace('\n', " "));
                    ExitCode::from(3)
                }
            }
        }
        Err(e) => {
            println!("ERROR bad {ENV}: {e}");
            ExitCode::from(2)
        }
    };
    Some(code)
}

async fn play(suite: &Suite, env: Envelope) -> Result<(), String> {
    let connect = suite.connect.clone().ok_or("no connect function")?;
    let backend = connect(env.url.clone())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let ms = Duration::from_millis;
    match env.role {
        Role::Hold {
            name,
            owner,
            at_most_ms,
            at_least_ms,
            keep_alive,
            wait_ms,
            after,
        } => {
            let locker = Locker::from_arc(backend)
                .with_owner(owner)
                .map_err(|e| e.to_string())?;
            let guard = locker
                .acquire(name)
                .lock_for(ms(at_most_ms))
                .at_least(ms(at_least_ms))
                .keep_alive(keep_alive)
                .wait(ms(wait_ms))
                .lock()
                .await
                .map_err(|e| format!("acquire: {e}"))?;
            let Some(guard) = guard else {
                println!("HELD");
                return Ok(());
            };
            println!("ACQUIRED {} {}", guard.token(), wall_ms());
            match after {
                After::ReleaseAndExit => {
                    guard.release().await.map_err(|e| format!("release: {e}"))?;
                    println!("RELEASED");
                    // Exit without any further cleanup: at_least must hold on its own.
                    std::process::exit(0);
                }
                After::ExitWithoutRelease => {
                    // No destructor runs: the guard's release never starts.
                    std::process::exit(0);
                }
                After::Hang => {
                    let lost = guard.lost().wait().await;
                    println!("LOST {}", lost.replace('\n', " "));
                    futures::future::pending::<()>().await;
                    Ok(())
                }
            }
        }
        Role::Lead {
            name,
            owner,
            lease_ms,
        } => {
            let locker = Locker::from_arc(backend)
                .with_owner(owner)
                .map_err(|e| e.to_string())?;
            let election = locker
                .election(name)
                .map_err(|e| e.to_string())?
                .lease(ms(lease_ms));
            let leading = election
                .campaign()
                .await
                .map_err(|e| format!("campaign: {e}"))?;
            println!("LEADING {}", leading.epoch());
            let lost = leading.lost().wait().await;
            println!("LOST {}", lost.replace('\n', " "));
            futures::future::pending::<()>().await;
            Ok(())
        }
        Role::Try {
            name,
            owner,
            at_most_ms,
        } => {
            let locker = Locker::from_arc(backend)
                .with_owner(owner)
                .map_err(|e| e.to_string())?;
            match locker
                .try_lock(name, ms(at_most_ms))
                .await
                .map_err(|e| format!("try_lock: {e}"))?
            {
                Some(g) => {
                    println!("ACQUIRED {} {}", g.token(), wall_ms());
                    g.release().await.map_err(|e| format!("release: {e}"))?;
                }
                None => println!("HELD {}", wall_ms()),
            }
            Ok(())
        }
        Role::Wait {
            name,
            owner,
            at_most_ms,
            wait_ms,
        } => {
            let locker = Locker::from_arc(backend)
                .with_owner(owner)
                .map_err(|e| e.to_string())?;
            println!("WAITING");
            match locker
                .acquire(name)
                .lock_for(ms(at_most_ms))
                .wait(ms(wait_ms))
                .lock()
                .await
                .map_err(|e| format!("lock: {e}"))?
            {
                Some(g) => {
                    println!("ACQUIRED {} {}", g.token(), wall_ms());
                    g.release().await.map_err(|e| format!("release: {e}"))?;
                }
                None => println!("HELD"),
            }
            Ok(())
        }
        Role::Work {
            names,
            tasks,
            per_task,
            lease_ms,
            owner,
        } => {
            let mut set = tokio::task::JoinSet::new();
            for t in 0..tasks {
                let locker = Locker::from_arc(backend.clone())
                    .with_owner(format!("{owner}-{t}"))
                    .map_err(|e| e.to_string())?;
                let names = names.clone();
                set.spawn(
                    async move { work(locker, names, per_task, ms(lease_ms), t % 2 == 1).await },
                );
            }
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                let holds = r.map_err(|e| format!("worker task: {e}"))??;
                for h in holds {
                    println!("HOLD {} {} {} {}", h.name, h.token, h.start_ns, h.end_ns);
                    n += 1;
                }
            }
            println!("DONE {n}");
            Ok(())
        }
    }
}

/// A running child process with its stdout read line by line.
pub struct ChildProc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far (for failure messages).
    pub seen: Vec<String>,
}

impl ChildProc {
    pub(crate) fn spawn(url: &str, role: Role, env: &[(&str, &str)]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let payload = serde_json::to_string(&Envelope {
            url: url.to_string(),
            role,
        })
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.env(ENV, payload)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn child: {e}"))?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        Ok(ChildProc {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        })
    }

    /// The next line, within `limit`.
    pub async fn next_line(&mut self, limit: Duration) -> Result<String, String> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Err(_) => Err(format!(
                "child said nothing within {limit:?} (so far: {:?})",
                self.seen
            )),
            Ok(Err(e)) => Err(format!("reading child output: {e}")),
            Ok(Ok(None)) => Err(format!("child exited early (it said: {:?})", self.seen)),
            Ok(Ok(Some(l))) => {
                self.seen.push(l.clone());
                if l.starts_with("ERROR") {
                    return Err(format!("child failed: {l}"));
                }
                Ok(l)
            }
        }
    }

    /// Reads lines until one starts with `prefix`; returns its words after the prefix.
    pub async fn expect(&mut self, prefix: &str, limit: Duration) -> Result<Vec<String>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next_line(left).await?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.split_whitespace().map(str::to_string).collect());
            }
        }
    }

    /// Reads every HOLD line until DONE.
    pub async fn holds(&mut self, limit: Duration) -> Result<Vec<Hold>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next_line(left).await?;
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["HOLD", name, token, s, e] => out.push(Hold {
                    name: name.to_string(),
                    token: token.parse().map_err(|_| format!("bad line {line}"))?,
                    start_ns: s.parse().map_err(|_| format!("bad line {line}"))?,
                    end_ns: e.parse().map_err(|_| format!("bad line {line}"))?,
                }),
                ["DONE", ..] => return Ok(out),
                _ => {}
            }
        }
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to the child process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), String> {
        let pid = self.child.id().ok_or("the child has already exited")?;
        let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| format!("signal {signal} to the child: {e}"))
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .await
            .map_err(|e| format!("kill child: {e}"))
    }

    /// Waits for exit within `limit`; returns whether it exited successfully.
    pub async fn wait(&mut self, limit: Duration) -> Result<bool, String> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Err(_) => Err(format!("child did not exit within {limit:?}")),
            Ok(r) => r.map(|s| s.success()).map_err(|e| e.to_string()),
        }
    }
}
