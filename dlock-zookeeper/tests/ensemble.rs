//! A 3-member ZooKeeper ensemble of this test's own (three JVMs on loopback,
//! free ports, a temp dir; all removed when the test ends, also on failure),
//! with every link between members running through a proxy of this test
//! that can blackhole it: connections stay open, nothing passes, new ones
//! are refused. That is how a member looks when the network drops its
//! packets — it notices only when its own read timeout
//! (`syncLimit × tickTime`) runs out, and until then a follower keeps
//! answering its clients' reads from its own copy.
//!
//! Needs only the Debian packages scripts/install-deps.sh installs
//! (`zookeeper`, `libslf4j-java`, Java); it FAILS, never skips, without them.
//! It does not touch the shared coordinators.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{unique_root, url_for};
use dlock_core::Locker;
use dlock_testkit::{check_history, Hold};
use dlock_zookeeper::ZookeeperBackend;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const JAVA: &str = "/usr/bin/java";
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
const SLF4J_JAR: &str = "/usr/share/java/slf4j-simple.jar";

/// Server timing. A follower cut off from the leader notices after
/// `SYNC_LIMIT × TICK` = 5 s, longer than the clients' 4 s session timeout
/// (the URL's `session_timeout=4s`): the window in which a follower still
/// serves reads while the leader has already expired the session.
const TICK_MS: u64 = 500;
const SYNC_LIMIT: u64 = 10;
const INIT_LIMIT: u64 = 10;

/// Nanoseconds since the first call: one clock for every hold of the test.
fn now_ns() -> u128 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos()
}

// ------------------------------------------------------------------ links

/// A TCP forwarder for one direction of one member pair, which can turn
/// into a blackhole.
struct Link {
    addr: SocketAddr,
    hole: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Link {
    async fn start(upstream: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hole, _) = watch::channel(false);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (h, t) = (hole.clone(), tasks.clone());
        let acceptor = tokio::spawn(async move {
            let mut closed = h.subscribe();
            loop {
                let (mut down, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => return },
                    // Dropping the listener refuses every new connection.
                    _ = closed.wait_for(|b| *b) => return,
                };
                let mut hole = h.subscribe();
                let conn = tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => return,
                        _ = hole.wait_for(|b| *b) => {}
                    }
                    // Blackholed: hold both sockets open, pass nothing, until
                    // the test ends (the task is aborted then).
                    std::future::pending::<()>().await;
                    drop((down, up));
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(acceptor);
        Link { addr, hole, tasks }
    }

    fn blackhole(&self) {
        self.hole.send_replace(true);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

// --------------------------------------------------------------- ensemble

/// Three ZooKeeper servers. Server `i`'s zoo.cfg names itself by its real
/// addresses and every other member `j` by the proxies `links[i][j]`, so
/// each member's traffic to each other member passes a [`Link`] (except
/// election connections a higher id opens back to a lower one, which
/// ZooKeeper makes to the address the lower one announced; those carry
/// nothing between elections, and a member cut off from the quorum port of
/// its leader cannot follow it whatever they say).
struct Ensemble {
    dir: PathBuf,
    servers: Vec<Child>,
    client_ports: Vec<u16>,
    /// `(from, to, quorum link, election link)`.
    links: Vec<(usize, usize, Link, Link)>,
}

/// A free port below the kernel's ephemeral range (32768 and up): a port
/// from `bind(0)` lies in that range, where any test's outgoing connection
/// can take it before the member binds it, and a member that cannot bind
/// its election port exits (seen once in CI: "Exiting JVM with code 14").
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    // Never the same port twice in this process (none is bound yet).
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7919)) % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Ensemble {
    async fn start() -> Ensemble {
        for f in [JAVA, ZK_JAR, SLF4J_JAR] {
            assert!(
                Path::new(f).exists(),
                "{f} is missing: this test runs its own ZooKeeper ensemble and needs the \
                 packages scripts/install-deps.sh installs (zookeeper, libslf4j-java, Java)"
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "dlock-zk-ensemble-{}-{:x}",
            std::process::id(),
            now_ns() ^ std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
        ));
        let mut zk = Ensemble {
            dir,
            servers: Vec::new(),
            client_ports: Vec::new(),
            links: Vec::new(),
        };
        // From here on, Drop cleans up whatever has been started.
        std::fs::create_dir_all(&zk.dir).unwrap();
        let peer: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        zk.client_ports = (0..3).map(|_| free_port()).collect();
        for from in 0..3 {
            for to in (0..3).filter(|&t| t != from) {
                let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
                let q = Link::start(at(peer[to].0)).await;
                let e = Link::start(at(peer[to].1)).await;
                zk.links.push((from, to, q, e));
            }
        }
        for i in 0..3 {
            let data = zk.dir.join(format!("zk{}", i + 1));
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{}\n", i + 1)).unwrap();
            let mut cfg = format!(
                "tickTime={TICK_MS}\ninitLimit={INIT_LIMIT}\nsyncLimit={SYNC_LIMIT}\n\
                 dataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr,stat,mntr,ruok,cons\n\
                 standaloneEnabled=false\nreconfigEnabled=false\n",
                data.display(),
                zk.client_ports[i],
            );
            for (j, &own) in peer.iter().enumerate() {
                let (q, e) = if i == j {
                    own
                } else {
                    let (_, _, q, e) = zk
                        .links
                        .iter()
                        .find(|(f, t, _, _)| *f == i && *t == j)
                        .unwrap();
                    (q.addr.port(), e.addr.port())
                };
                cfg += &format!("server.{}=127.0.0.1:{q}:{e}\n", j + 1);
            }
            let cfg_path = zk.dir.join(format!("zoo{}.cfg", i + 1));
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = std::fs::File::create(zk.dir.join(format!("zk{}.log", i + 1))).unwrap();
            // setpriv --pdeathsig: the JVM dies with this test's thread even
            // if the test process is killed before Drop runs.
            let child = Command::new("setpriv")
                .args(["--pdeathsig", "KILL", "--", JAVA])
                .args([
                    "-Xmx256m",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",
                    "-cp",
                ])
                .arg(format!("{ZK_JAR}:{SLF4J_JAR}"))
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {JAVA} through setpriv (util-linux): {e}")
                });
            zk.servers.push(child);
        }
        zk
    }

    fn client(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    /// Member `i`'s answer to a four-letter word, if it answers.
    async fn four_letters(&self, i: usize, word: &str) -> Option<String> {
        let ask = async {
            let mut s = TcpStream::connect(self.client(i)).await.ok()?;
            s.write_all(word.as_bytes()).await.ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).await.ok()?;
            Some(out)
        };
        tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .ok()
            .flatten()
    }

    /// The `Mode:` member `i` reports through `srvr`, if it answers.
    async fn mode(&self, i: usize) -> Option<String> {
        let out = self.four_letters(i, "srvr").await?;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }

    /// Whether member `i` has a client connection of session `sid` (`cons`).
    async fn serves(&self, i: usize, sid: &str) -> bool {
        let needle = format!("sid=0x{sid},");
        self.four_letters(i, "cons")
            .await
            .is_some_and(|out| out.contains(&needle))
    }

    /// Kills member `i` at once (SIGKILL): its connections close.
    fn kill(&mut self, i: usize) {
        let _ = self.servers[i].kill();
        let _ = self.servers[i].wait();
    }

    /// Waits for one leader and two followers: `(leader, [followers])`.
    async fn roles(&mut self, limit: Duration) -> (usize, [usize; 2]) {
        let t0 = Instant::now();
        loop {
            let mut modes = Vec::new();
            for i in 0..3 {
                modes.push(self.mode(i).await);
            }
            let is = |i: usize, m: &str| modes[i].as_deref() == Some(m);
            let leader = (0..3).find(|&i| is(i, "leader"));
            let followers: Vec<usize> = (0..3).filter(|&i| is(i, "follower")).collect();
            if let (Some(l), &[f, g]) = (leader, followers.as_slice()) {
                return (l, [f, g]);
            }
            for (i, s) in self.servers.iter_mut().enumerate() {
                if let Ok(Some(st)) = s.try_wait() {
                    panic!(
                        "ZooKeeper member {} exited ({st}):\n{}",
                        i + 1,
                        self.log_tail(i)
                    );
                }
            }
            assert!(
                t0.elapsed() < limit,
                "no leader and two followers within {limit:?}: {modes:?}\n{}",
                (0..3)
                    .map(|i| self.log_tail(i))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(format!("zk{}.log", i + 1))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- member {} log tail ---\n{tail}", i + 1)
    }

    /// Cuts member `i` off from both others: every link to or from it
    /// turns into a blackhole.
    fn isolate(&self, i: usize) {
        for (from, to, q, e) in &self.links {
            if *from == i || *to == i {
                q.blackhole();
                e.blackhole();
            }
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        self.links.clear();
        if std::env::var_os("DLOCK_KEEP_ENSEMBLE").is_some() {
            eprintln!("ensemble files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ------------------------------------------------------------------ tests

/// A locker on the members at `hosts` (`host:port[,host:port]`), 4 s sessions.
async fn locker(hosts: &str, root: &str, owner: &str) -> Locker {
    let u = url_for(hosts, None, root, "");
    let b = ZookeeperBackend::connect(&u).await.unwrap();
    Locker::new(b).with_owner(owner).unwrap()
}

/// Holder A is connected only to follower F; B only to the leader. F is
/// cut off from both other members. The leader expires A's session after
/// its timeout (4 s) and B gets the lock, while F, not knowing yet, keeps
/// answering A's reads for up to 5 s. A's guard must have stopped saying
/// "held" before B got the lock: liveness may be proven only by requests
/// that went through the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_with_its_follower_stops_holding_before_another_gets_in() {
    let t_test = Instant::now();
    let mut zk = Ensemble::start().await;
    let (leader, [follower, _]) = zk.roles(Duration::from_secs(40)).await;
    eprintln!(
        "ensemble up in {:?}: leader member {}, holder's follower member {}",
        t_test.elapsed(),
        leader + 1,
        follower + 1
    );
    let root = unique_root("ensemble");
    let a = locker(&zk.client(follower), &root, "a-on-the-follower").await;
    let b = locker(&zk.client(leader), &root, "b-on-the-leader").await;

    let ga = a
        .acquire("cut-off")
        .lock_for(Duration::from_secs(60))
        .keep_alive(true)
        .try_lock()
        .await
        .unwrap()
        .expect("the lock is free");
    let a_start = now_ns();
    // Several heartbeats pass through the follower before the cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ga.is_held(),
        "lost before the cut: {:?}",
        ga.lost().reason()
    );

    zk.isolate(follower);
    let cut = Instant::now();
    // B waits as a user does: an acquire that fails on a connection broken
    // by the cut (its outcome unknown) is asked again, within the 25 s.
    let waiter = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(25);
        loop {
            let g = b
                .acquire("cut-off")
                .lock_for(Duration::from_secs(60))
                .wait(until.saturating_duration_since(Instant::now()))
                .lock()
                .await;
            if g.is_ok() || Instant::now() >= until {
                return (now_ns(), Instant::now(), g);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // A's hold lasts until the last instant its is_held() said true (the
    // instant before that call: the checker gets the shorter hold).
    let mut a_end = now_ns();
    let mut a_last = cut;
    loop {
        let (ns, at) = (now_ns(), Instant::now());
        if !ga.is_held() {
            break;
        }
        (a_end, a_last) = (ns, at);
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "A still says held 30 s after its follower was cut off"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let a_reason = tokio::time::timeout(Duration::from_secs(5), ga.lost().wait()).await;
    let (b_start, b_at, gb) = waiter.await.unwrap();
    let gb = gb
        .unwrap()
        .expect("B did not get the lock within 25 s of the cut");
    let b_end = now_ns();
    eprintln!(
        "after the cut: A said held until +{:?}; B got the lock at +{:?}; A's loss: {a_reason:?}",
        a_last - cut,
        b_at - cut
    );
    let holds = [
        Hold {
            name: "cut-off".into(),
            token: ga.token().0,
            start_ns: a_start,
            end_ns: a_end,
        },
        Hold {
            name: "cut-off".into(),
            token: gb.token().0,
            start_ns: b_start,
            end_ns: b_end,
        },
    ];
    if let Err(e) = check_history(&holds) {
        panic!(
            "{e}\nA (connected to the cut-off follower) still said held {:?} after B \
             (on the leader) had the lock: its liveness proof came from a follower that \
             no longer reached the leader",
            a_last.saturating_duration_since(b_at)
        );
    }
    assert!(
        a_reason.is_ok(),
        "A's is_held() turned false but lost() did not complete within 5 s"
    );
    gb.release().await.unwrap();
}

/// The other side of the same rule: a session that merely moves to another
/// member keeps its locks. A is connected to one of two followers; that
/// follower is killed; A's client reconnects to the other one within the
/// session, and the heartbeat (a sync through the new follower) proves the
/// session again before the guard's proof runs out. A's guard says held
/// the whole time, B on the leader does not get the lock, and A's release
/// afterwards succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_moves_to_another_member_keeps_its_lock() {
    let mut zk = Ensemble::start().await;
    let (leader, [f, g]) = zk.roles(Duration::from_secs(40)).await;
    let root = unique_root("ensemble_move");
    let hosts = format!("{},{}", zk.client(f), zk.client(g));
    let a = locker(&hosts, &root, "a-on-the-followers").await;
    let b = locker(&zk.client(leader), &root, "b-on-the-leader").await;
    let kept = a
        .acquire("moves")
        .lock_for(Duration::from_secs(60))
        .keep_alive(true)
        .try_lock()
        .await
        .unwrap()
        .expect("the lock is free");
    let sid = kept.lease().handle.split(':').next().unwrap().to_string();
    let mut on = None;
    for _ in 0..50 {
        for i in [f, g] {
            if zk.serves(i, &sid).await {
                on = Some(i);
            }
        }
        if on.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on = on.unwrap_or_else(|| panic!("session 0x{sid} is on neither follower"));
    let other = if on == f { g } else { f };
    tokio::time::sleep(Duration::from_millis(500)).await;

    zk.kill(on);
    let killed = Instant::now();
    // Three proof windows (2/3 of the 4 s session timeout each) after the
    // kill, the guard must never have said "not held".
    while killed.elapsed() < Duration::from_secs(8) {
        assert!(
            kept.is_held(),
            "A's guard turned false {:?} after its server was killed, although the session \
             could move to another member: {:?}",
            killed.elapsed(),
            kept.lost().reason()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        zk.serves(other, &sid).await,
        "session 0x{sid} did not move to member {}",
        other + 1
    );
    assert!(
        b.try_lock("moves", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "B got the lock although A's session lives on another member"
    );
    kept.release().await.unwrap();
    let gb = b
        .acquire("moves")
        .wait(Duration::from_secs(10))
        .lock()
        .await
        .unwrap()
        .expect("B gets the lock after A released it");
    gb.release().await.unwrap();
}
