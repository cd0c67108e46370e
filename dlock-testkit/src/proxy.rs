//! A loopback TCP proxy the suite can cut, to make a coordinator "gone"
//! while the test process lives.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:<port>` to a coordinator until [`Proxy::cut`].
pub struct Proxy {
    addr: SocketAddr,
    cut_tx: watch::Sender<bool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("proxy bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (cut_tx, cut_rx) = watch::channel(false);
        let acceptor = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    // Every forwarding task watches the cut flag itself, so a
                    // connection accepted while cutting cannot survive it.
                    if *cut.borrow_and_update() {
                        return;
                    }
                    let Ok(mut up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            cut_tx,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every forwarded connection and stops listening: new connections
    /// are refused from now on.
    pub fn cut(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
        }
        self.cut_tx.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
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
}
