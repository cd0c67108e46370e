//! The nemesis: faults on a schedule, through `scripts/netlab.sh` for the
//! network and the members, signals for the client processes, and the
//! testkit's [`Proxy`] for the connections of the one client that reaches
//! its coordinator through proxies. Every fault is undone before the next
//! (`heal`, `restart`, `SIGCONT`, `resume`), with a quiet gap between them.

use super::Netlab;
use crate::history::mono_ns;
use crate::proxy::Proxy;
use std::collections::BTreeMap;
use std::time::Duration;

/// One kind of fault.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// A follower cut off from the other members (clients still reach it).
    IsolateFollower,
    /// The leader cut off from the other members.
    IsolateLeader,
    /// A client cut off from every member (its member stays in the majority).
    PartitionClient(String),
    /// The only member a client talks to cut off from the other members
    /// (the client still reaches it).
    IsolateClientsMember(String, String),
    /// kill -9 the leader (the server, for one server), restart it after
    /// the fault time.
    KillLeader,
    /// SIGSTOP the leader (the server) for the fault time.
    StopLeader,
    /// A follower's link down (nobody reaches it).
    CutFollower,
    /// SIGSTOP a client process for longer than its lease.
    StopClient(String),
    /// A client's connections stalled: its requests reach the coordinator
    /// (and apply there), the answers are held until the fault ends.
    StallClient(String),
    /// A client's connections slowed: every answer reaches it half a lease
    /// after the coordinator sent it.
    DelayClient(String),
    /// A client's connections dropped, once a second (it reconnects).
    ResetClient(String),
    /// The server's wall clock stepped forward by two leases, for good
    /// (SQL and Redis servers under libfaketime: README, "Guarantees and
    /// their limits"). Live leases there end early while their holders,
    /// timing themselves locally, still count them valid.
    StepServerClock,
}

impl Fault {
    /// Whether the cluster may elect a new leader during the fault or soon
    /// after it heals: the leader itself stopped, killed or cut off, or a
    /// member that, cut off, ran elections of its own and disrupts the
    /// leader when it returns. Faults of clients and their connections
    /// never do.
    pub fn may_move_the_leader(&self) -> bool {
        matches!(
            self,
            Fault::IsolateFollower
                | Fault::IsolateLeader
                | Fault::IsolateClientsMember(..)
                | Fault::KillLeader
                | Fault::StopLeader
                | Fault::CutFollower
        )
    }

    /// The fault's kind, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::IsolateFollower => "isolate a follower from its peers",
            Fault::IsolateLeader => "isolate the leader from its peers",
            Fault::PartitionClient(..) => "partition a client from the cluster",
            Fault::IsolateClientsMember(..) => "isolate a client's member from the majority",
            Fault::KillLeader => "kill -9 and restart the leader",
            Fault::StopLeader => "SIGSTOP/SIGCONT the leader",
            Fault::CutFollower => "cut a follower's link",
            Fault::StopClient(..) => "SIGSTOP a client past its lease",
            Fault::StallClient(..) => "stall a client's connections",
            Fault::DelayClient(..) => "delay a client's answers by half a lease",
            Fault::ResetClient(..) => "drop a client's connections each second",
            Fault::StepServerClock => "step the server's clock forward by two leases",
        }
    }
}

/// What the nemesis did.
#[derive(Clone, Debug)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// The member or client it hit.
    pub target: String,
    /// An error of the fault's commands, if any (the run then fails).
    pub error: Option<String>,
    /// CLOCK_MONOTONIC ns when the fault began.
    pub from_ns: u128,
    /// CLOCK_MONOTONIC ns when it was undone (healed).
    pub to_ns: u128,
}

/// Runs faults through `netlab`.
pub struct Nemesis {
    /// The lab's network.
    pub netlab: Netlab,
    /// How long each fault lasts.
    pub fault_for: Duration,
    /// The quiet gap after each fault.
    pub heal_for: Duration,
    /// The workers' `lock_for`: a stopped client stays stopped longer.
    pub lease: Duration,
    /// Client → the proxies its connections go through (see
    /// [`super::PROXIED_CLIENT`]).
    pub proxies: BTreeMap<String, Vec<Proxy>>,
}

impl Nemesis {
    async fn netlab(&self, args: &[&str]) -> Result<String, String> {
        self.netlab.run_async(args).await
    }

    /// The current leader (retried through an election).
    async fn leader(&self) -> Result<String, String> {
        let mut last = String::new();
        for _ in 0..50 {
            match self.netlab(&["leader"]).await {
                Ok(m) if !m.is_empty() => return Ok(m),
                Ok(_) => {}
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("no leader within 10 s: {last}"))
    }

    async fn follower(&self) -> Result<String, String> {
        let leader = self.leader().await?;
        Ok(["m1", "m2", "m3"]
            .into_iter()
            .find(|m| *m != leader)
            .unwrap_or("m2")
            .to_string())
    }

    /// Injects `fault` (client processes by pid in `clients`), waits the
    /// fault time, undoes it, waits the quiet gap.
    pub async fn inject(&self, fault: &Fault, clients: &[(String, u32)]) -> Injected {
        let from_ns = mono_ns();
        let r = self.apply(fault, clients).await;
        let (target, error) = match r {
            Ok(t) => (t, None),
            Err(e) => (String::new(), Some(e)),
        };
        // Whatever happened, heal before going on.
        let _ = self.netlab(&["heal"]).await;
        for p in self.proxies.values().flatten() {
            p.delay_answers(Duration::ZERO);
            p.resume();
        }
        let to_ns = mono_ns();
        tokio::time::sleep(self.heal_for).await;
        Injected {
            fault: fault.clone(),
            target,
            error,
            from_ns,
            to_ns,
        }
    }

    async fn apply(&self, fault: &Fault, clients: &[(String, u32)]) -> Result<String, String> {
        let pid_of = |c: &str| {
            clients
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("no client process {c}"))
        };
        let proxies_of = |c: &str| {
            self.proxies
                .get(c)
                .filter(|ps| !ps.is_empty())
                .ok_or_else(|| format!("client {c} does not go through proxies"))
        };
        match fault {
            Fault::StepServerClock => {
                let step = (self.lease * 2).as_secs().max(1).to_string();
                self.netlab(&["clock-step", "m1", &step]).await?;
                tokio::time::sleep(self.fault_for).await;
                Ok("m1".into())
            }
            Fault::StallClient(c) => {
                proxies_of(c)?.iter().for_each(Proxy::stall);
                tokio::time::sleep(self.fault_for).await;
                Ok(c.clone())
            }
            Fault::DelayClient(c) => {
                for p in proxies_of(c)? {
                    p.delay_answers(self.lease / 2);
                }
                tokio::time::sleep(self.fault_for).await;
                Ok(c.clone())
            }
            Fault::ResetClient(c) => {
                let ps = proxies_of(c)?;
                let until = tokio::time::Instant::now() + self.fault_for;
                while tokio::time::Instant::now() < until {
                    ps.iter().for_each(Proxy::reset);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(c.clone())
            }
            Fault::IsolateFollower | Fault::IsolateLeader | Fault::CutFollower => {
                let m = if *fault == Fault::IsolateLeader {
                    self.leader().await?
                } else {
                    self.follower().await?
                };
                let verb = if *fault == Fault::CutFollower {
                    "cut"
                } else {
                    "isolate"
                };
                self.netlab(&[verb, &m]).await?;
                tokio::time::sleep(self.fault_for).await;
                Ok(m)
            }
            Fault::PartitionClient(c) => {
                for m in ["m1", "m2", "m3"] {
                    self.netlab(&["sever", c, m]).await?;
                }
                tokio::time::sleep(self.fault_for).await;
                Ok(c.clone())
            }
            Fault::IsolateClientsMember(c, m) => {
                self.netlab(&["isolate", m]).await?;
                tokio::time::sleep(self.fault_for).await;
                Ok(format!("{m} (of {c})"))
            }
            Fault::KillLeader => {
                let m = self.leader().await?;
                self.netlab(&["kill", &m]).await?;
                tokio::time::sleep(self.fault_for).await;
                self.netlab(&["restart", &m]).await?;
                Ok(m)
            }
            Fault::StopLeader => {
                let m = self.leader().await?;
                self.netlab(&["stop", &m]).await?;
                tokio::time::sleep(self.fault_for).await;
                self.netlab(&["cont", &m]).await?;
                Ok(m)
            }
            Fault::StopClient(c) => {
                let pid = nix::unistd::Pid::from_raw(
                    i32::try_from(pid_of(c)?).map_err(|e| e.to_string())?,
                );
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
                    .map_err(|e| format!("SIGSTOP {c}: {e}"))?;
                // Past its lease, so that others take its locks meanwhile.
                tokio::time::sleep(self.fault_for.max(self.lease + Duration::from_secs(3))).await;
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)
                    .map_err(|e| format!("SIGCONT {c}: {e}"))?;
                Ok(c.clone())
            }
        }
    }
}
