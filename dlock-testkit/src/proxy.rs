//! A loopback TCP proxy the suite can cut, to make a coordinator "gone"
//! while the test process lives, or stall, to make its answers "late".
//!
//! - [`Proxy::cut`]: every connection is dropped and new ones are refused.
//! - [`Proxy::stall`]: requests still reach the coordinator (and apply
//!   there), but no byte of its answers reaches the client until
//!   [`Proxy::resume`] (or never, after [`Proxy::cut`]). From the client's
//!   side this is a request whose outcome is unknown: it times out, yet it
//!   may have been applied.
//! - [`Proxy::delay_answers`]: every byte of the coordinator's answers
//!   reaches the client a fixed time after the coordinator sent it, so a
//!   request applies well before its answer is read.
//! - [`Proxy::reset`]: every open connection is dropped at once; new ones
//!   are accepted (a middlebox or a server restart resetting connections).
//! - [`Proxy::stall_after_requests`]: the same stall, armed to start exactly
//!   at the n-th HTTP/2 request to come (etcd speaks gRPC over HTTP/2), so a
//!   test can let the first step of a multi-request operation through and
//!   lose the answer to the second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// No stall armed.
const UNARMED: u64 = u64::MAX;

/// State every forwarding task shares.
struct Shared {
    /// `true` while answers are held back.
    stall_tx: watch::Sender<bool>,
    /// HTTP/2 requests clients have sent through the proxy so far.
    requests: AtomicU64,
    /// Round trips clients have begun so far, over every connection (see
    /// [`Proxy::round_trips`]).
    round_trips: AtomicU64,
    /// Stall before forwarding the request that makes `requests` reach this.
    stall_at: AtomicU64,
    /// How long answers are held before delivery, in nanoseconds.
    answer_delay_ns: AtomicU64,
    /// Bumped by [`Proxy::reset`]: connections open then are dropped.
    reset_tx: watch::Sender<u64>,
}

impl Shared {
    /// Counts `n` more requests, about to be forwarded; starts the armed
    /// stall if they reach its threshold.
    fn count(&self, n: u64) {
        if n == 0 {
            return;
        }
        let total = self.requests.fetch_add(n, Ordering::SeqCst) + n;
        let at = self.stall_at.load(Ordering::SeqCst);
        if total >= at
            && self
                .stall_at
                .compare_exchange(at, UNARMED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.stall_tx.send_replace(true);
        }
    }
}

/// Forwards `127.0.0.1:<port>` to a coordinator until [`Proxy::cut`]; can
/// hold the coordinator's answers back ([`Proxy::stall`]).
pub struct Proxy {
    addr: SocketAddr,
    cut_tx: watch::Sender<bool>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<a free port>` to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Result<Self, String> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), upstream).await
    }

    /// Starts forwarding `<bind>:<a free port>` to `upstream`: the fault lab
    /// binds its bridge address, which the clients' namespaces reach.
    pub async fn start_on(bind: std::net::IpAddr, upstream: String) -> Result<Self, String> {
        let listener = TcpListener::bind(SocketAddr::new(bind, 0))
            .await
            .map_err(|e| format!("proxy bind {bind}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (cut_tx, cut_rx) = watch::channel(false);
        let (stall_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            stall_tx,
            requests: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            stall_at: AtomicU64::new(UNARMED),
            answer_delay_ns: AtomicU64::new(0),
            reset_tx: watch::channel(0).0,
        });
        let for_tasks = shared.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut cut = cut_rx.clone();
                let shared = for_tasks.clone();
                let mut reset = shared.reset_tx.subscribe();
                tokio::spawn(async move {
                    // Every forwarding task watches the cut flag itself, so a
                    // connection accepted while cutting cannot survive it.
                    if *cut.borrow_and_update() {
                        return;
                    }
                    let Ok(up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let (down_r, down_w) = down.into_split();
                    let (up_r, up_w) = up.into_split();
                    // Whether the coordinator spoke since the client last did.
                    let answered = AtomicBool::new(true);
                    let requests = forward_requests(down_r, up_w, &shared, &answered);
                    let answers = forward_answers(up_r, down_w, &shared, &answered);
                    tokio::select! {
                        _ = async { tokio::try_join!(requests, answers) } => {}
                        _ = cut.wait_for(|c| *c) => {}
                        _ = reset.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            cut_tx,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every forwarded connection and stops listening: new connections
    /// are refused from now on. Answers held by a stall are never delivered.
    pub fn cut(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
        }
        self.cut_tx.send_replace(true);
    }

    /// Drops every connection open now (both ends see it closed, and any
    /// answer held by a stall is lost) and goes on accepting new ones.
    pub fn reset(&self) {
        self.shared.reset_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Holds back the coordinator's answers on every connection, current and
    /// new, from now on. Requests are still forwarded (and applied by the
    /// coordinator); the answers wait, undelivered, until [`Proxy::resume`],
    /// or are dropped by [`Proxy::cut`]. Connections stay open: a client
    /// sees requests that neither fail nor answer, and times out.
    pub fn stall(&self) {
        self.shared.stall_at.store(UNARMED, Ordering::SeqCst);
        self.shared.stall_tx.send_replace(true);
    }

    /// Arms a [`Proxy::stall`] that starts right before the `n`-th HTTP/2
    /// request clients send from now on (counted over all connections) is
    /// forwarded: requests up to the `(n-1)`-th are answered normally (as far
    /// as they are answered before that request goes out), the `n`-th reaches
    /// the coordinator but its answer, and every later one, is held.
    /// `n == 0` stalls at once. A request is an HTTP/2 stream a client opens
    /// (a gRPC call); protocols other than HTTP/2 never trigger this.
    ///
    /// Etcd example: an operation that grants a lease and then runs a
    /// transaction gets its lease (request 1) and loses the transaction's
    /// answer (request 2) with `stall_after_requests(2)`.
    pub fn stall_after_requests(&self, n: u64) {
        if n == 0 {
            self.stall();
            return;
        }
        let now = self.shared.requests.load(Ordering::SeqCst);
        self.shared
            .stall_at
            .store(now.saturating_add(n), Ordering::SeqCst);
    }

    /// Ends a stall (started or armed): the held answers are delivered, in
    /// order, and forwarding goes on normally.
    pub fn resume(&self) {
        self.shared.stall_at.store(UNARMED, Ordering::SeqCst);
        self.shared.stall_tx.send_replace(false);
    }

    /// From now on, delivers every byte of the coordinator's answers `delay`
    /// after the proxy read it (on every connection, current and new;
    /// `Duration::ZERO` turns it off). Requests are not delayed: a request
    /// applies at the coordinator `delay` before the client reads its answer.
    pub fn delay_answers(&self, delay: Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.answer_delay_ns.store(ns, Ordering::SeqCst);
    }

    /// True while answers are held back.
    pub fn is_stalled(&self) -> bool {
        *self.shared.stall_tx.borrow()
    }

    /// How many HTTP/2 requests clients have sent through the proxy so far
    /// (0 for other protocols).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// How many round trips clients have begun through the proxy so far,
    /// over all connections, for any protocol: on each connection, the
    /// client's first bytes and its first bytes after every answer begin
    /// one. Requests pipelined without waiting for an answer are one round
    /// trip; a connection's handshake counts its own.
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Client → coordinator: always forwarded; HTTP/2 requests are counted (and
/// an armed stall started) before the bytes carrying them go out, so the
/// answer to the request that starts a stall is held for certain.
async fn forward_requests(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    shared: &Shared,
    answered: &AtomicBool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut h2 = H2Requests::default();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        shared.count(h2.feed(&buf[..n]));
        if answered.swap(false, Ordering::SeqCst) {
            shared.round_trips.fetch_add(1, Ordering::SeqCst);
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Coordinator → client: held while stalled, and each chunk delivered
/// [`Proxy::delay_answers`] after it was read. Bytes read while a stall
/// starts wait in the buffer, so no answer slips through. Reading and
/// delivering are separate, so a delay is added once, not once per chunk.
async fn forward_answers(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    shared: &Shared,
    answered: &AtomicBool,
) -> std::io::Result<()> {
    let mut stalled = shared.stall_tx.subscribe();
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if stalled.wait_for(|s| !*s).await.is_err() {
                return Ok(());
            }
            let n = from.read(&mut buf).await?;
            if stalled.wait_for(|s| !*s).await.is_err() || n == 0 {
                return Ok(());
            }
            // Before delivery: the client's next request comes after it.
            answered.store(true, Ordering::SeqCst);
            let delay = Duration::from_nanos(shared.answer_delay_ns.load(Ordering::SeqCst));
            if chunks
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let delivering = async {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            to.write_all(&bytes).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(reading, delivering).map(|_| ())
}

/// The HTTP/2 connection preface every client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 frame type HEADERS: a client sends one to open each request stream.
const H2_HEADERS: u8 = 0x1;

/// Counts requests (HEADERS frames) in a client's HTTP/2 byte stream, fed
/// in arbitrary chunks.
#[derive(Debug, Default)]
struct H2Requests {
    /// Preface bytes matched so far (until it is complete).
    preface: usize,
    /// Not HTTP/2: count nothing.
    other: bool,
    /// The frame header being read.
    head: [u8; 9],
    /// How much of `head` has been read.
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl H2Requests {
    /// Feeds the next bytes; returns how many requests began in them.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut found = 0;
        while !bytes.is_empty() && !self.other {
            if self.preface < H2_PREFACE.len() {
                let n = bytes.len().min(H2_PREFACE.len() - self.preface);
                if bytes[..n] != H2_PREFACE[self.preface..self.preface + n] {
                    self.other = true;
                    break;
                }
                self.preface += n;
                bytes = &bytes[n..];
            } else if self.skip > 0 {
                let n = bytes.len().min(self.skip);
                self.skip -= n;
                bytes = &bytes[n..];
            } else {
                let n = bytes.len().min(9 - self.head_len);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len == 9 {
                    self.head_len = 0;
                    let h = self.head;
                    self.skip =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    if h[3] == H2_HEADERS {
                        found += 1;
                    }
                }
            }
        }
        found
    }
}

/// `url` with its `host:port` replaced by `addr`; `None` when the URL has
/// no single explicit host and port.
pub fn redirect(url: &str, addr: SocketAddr) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    u.host_str()?;
    u.port()?;
    u.set_host(Some(&addr.ip().to_string())).ok()?;
    u.set_port(Some(addr.port())).ok()?;
    Some(u.to_string())
}

/// The `host:port` of a URL.
pub fn upstream(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_everything_else() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            redirect("postgres://u:p@127.0.0.1:5432/db?table=t", a).unwrap(),
            "postgres://u:p@127.0.0.1:4000/db?table=t"
        );
        assert_eq!(
            redirect("zk://127.0.0.1:2181/ch", a).unwrap(),
            "zk://127.0.0.1:4000/ch"
        );
        assert!(redirect("sqlite:///tmp/x.db", a).is_none());
        assert_eq!(
            upstream("etcd://127.0.0.1:2379/p").unwrap(),
            "127.0.0.1:2379"
        );
    }

    /// An HTTP/2 frame: 9-byte header + payload.
    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn h2_stream() -> Vec<u8> {
        let mut s = H2_PREFACE.to_vec();
        s.extend(frame(0x4, &[0; 6])); // SETTINGS
        s.extend(frame(H2_HEADERS, &[H2_HEADERS; 3])); // payload bytes look like a header type
        s.extend(frame(0x0, &[1; 300])); // DATA
        s.extend(frame(H2_HEADERS, &[])); // empty HEADERS
        s.extend(frame(0x8, &[0; 4])); // WINDOW_UPDATE
        s
    }

    #[test]
    fn counts_http2_requests_in_any_chunking() {
        let s = h2_stream();
        assert_eq!(H2Requests::default().feed(&s), 2);
        for size in [1, 2, 7, 9, 10, 64] {
            let mut c = H2Requests::default();
            let n: u64 = s.chunks(size).map(|ch| c.feed(ch)).sum();
            assert_eq!(n, 2, "chunks of {size}");
        }
        // Anything that does not start with the preface counts nothing.
        let mut c = H2Requests::default();
        assert_eq!(c.feed(b"GET / HTTP/1.1\r\n\r\n"), 0);
        assert_eq!(c.feed(&s), 0);
    }

    /// An upstream that echoes every byte and reports what it received.
    async fn echo() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        let _ = tx.send(buf[..n].to_vec());
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn read_some(c: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(std::time::Duration::from_millis(ms), c.read(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            Ok(Err(_)) => Some(Vec::new()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn stall_forwards_requests_and_holds_answers_until_resume() {
        let (up, mut seen) = echo().await;
        let mut proxy = Proxy::start(up).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"one").await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), b"one");
        assert_eq!(read_some(&mut c, 5000).await.unwrap(), b"one");
        proxy.stall();
        assert!(proxy.is_stalled());
        c.write_all(b"two").await.unwrap();
        // The request reached the server, which answered; the answer is held.
        assert_eq!(seen.recv().await.unwrap(), b"two");
        assert_eq!(
            read_some(&mut c, 300).await,
            None,
            "answer leaked through a stall"
        );
        proxy.resume();
        assert!(!proxy.is_stalled());
        assert_eq!(read_some(&mut c, 5000).await.unwrap(), b"two");
        // Cut while stalled: the held answer is never delivered.
        proxy.stall();
        c.write_all(b"three").await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), b"three");
        proxy.cut();
        let got = read_some(&mut c, 5000)
            .await
            .expect("cut connection still open");
        assert!(
            got.is_empty(),
            "a held answer was delivered after cut: {got:?}"
        );
    }

    #[tokio::test]
    async fn round_trips_count_each_request_after_an_answer_once() {
        let (up, mut seen) = echo().await;
        let proxy = Proxy::start(up).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(proxy.round_trips(), 0);
        // Two writes before any answer (held back, so the second surely
        // goes out before the first is answered): one round trip.
        proxy.stall();
        c.write_all(b"a").await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), b"a");
        c.write_all(b"b").await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), b"b");
        proxy.resume();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(read_some(&mut c, 5000).await.unwrap());
        }
        assert_eq!(proxy.round_trips(), 1);
        // Each request after an answer begins another.
        for (i, m) in [b"c", b"d"].into_iter().enumerate() {
            c.write_all(m).await.unwrap();
            assert_eq!(read_some(&mut c, 5000).await.unwrap(), m);
            assert_eq!(proxy.round_trips(), 2 + i as u64);
        }
        // Connections count apart.
        let mut other = TcpStream::connect(proxy.addr()).await.unwrap();
        other.write_all(b"e").await.unwrap();
        assert_eq!(read_some(&mut other, 5000).await.unwrap(), b"e");
        assert_eq!(proxy.round_trips(), 4);
    }

    #[tokio::test]
    async fn reset_drops_open_connections_and_accepts_new_ones() {
        let (up, mut seen) = echo().await;
        let proxy = Proxy::start(up).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"one").await.unwrap();
        assert_eq!(read_some(&mut c, 5000).await.unwrap(), b"one");
        proxy.reset();
        let got = read_some(&mut c, 5000)
            .await
            .expect("a reset connection stayed open");
        assert!(got.is_empty(), "a reset connection answered {got:?}");
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(b"two").await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), b"one");
        assert_eq!(seen.recv().await.unwrap(), b"two");
        assert_eq!(read_some(&mut again, 5000).await.unwrap(), b"two");
    }

    #[tokio::test]
    async fn stall_after_requests_starts_at_the_nth_request() {
        let (up, mut seen) = echo().await;
        let proxy = Proxy::start(up).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut hello = H2_PREFACE.to_vec();
        hello.extend(frame(0x4, &[]));
        c.write_all(&hello).await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), hello);
        assert_eq!(read_some(&mut c, 5000).await.unwrap(), hello);
        assert_eq!(proxy.requests(), 0);
        proxy.stall_after_requests(2);
        let first = frame(H2_HEADERS, b"req-1");
        c.write_all(&first).await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), first);
        assert_eq!(read_some(&mut c, 5000).await.unwrap(), first);
        assert!(!proxy.is_stalled());
        let second = frame(H2_HEADERS, b"req-2");
        c.write_all(&second).await.unwrap();
        assert_eq!(
            seen.recv().await.unwrap(),
            second,
            "the n-th request must be forwarded"
        );
        assert!(proxy.is_stalled());
        assert_eq!(read_some(&mut c, 300).await, None, "the n-th answer leaked");
        assert_eq!(proxy.requests(), 2);
        proxy.resume();
        assert_eq!(read_some(&mut c, 5000).await.unwrap(), second);
    }
}
