//! Wakes waiters when a lock is released: one pub/sub connection per
//! backend, subscribed to `<prefix>:released`, where the release and
//! force-release scripts publish the name they freed.
//!
//! Every waiter of the backend shares the one subscription (a Redis
//! connection costs the server a client slot, and a release costs it one
//! message per subscribed connection, not per waiter). Each notice goes to
//! every waiter of this backend, which keeps those for its own name.
//!
//! Every release publishes, also one that leaves the lock taken until
//! `at_least` ends, so a waiter looks again and learns the new end. A lock
//! that frees itself (its lease or `at_least` running out) publishes
//! nothing: the waiter read the lock's end before it waited and wakes when
//! that comes. While the subscription is down, waiters poll.

use crate::errors::connect_error;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A notice that anything may have been released (the subscription was
/// lost or came back): every waiter looks again.
pub(crate) const ANY: &str = "";

/// How often a live subscription is checked with a PING: a connection cut
/// off without a reset would otherwise miss releases unnoticed.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Pause between failed attempts to (re)subscribe.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// How many notices a slow waiter may fall behind; one that falls further
/// behind looks again, as for [`ANY`].
const BACKLOG: usize = 1024;

/// Where the subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Its first attempt has not ended yet.
    Starting,
    /// Subscribed: releases are heard.
    Live,
    /// Down, being brought up again: waiters poll.
    Down,
}

/// The shared subscription of one backend.
pub(crate) struct ReleaseFeed {
    client: redis::Client,
    channel: String,
    target: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    notices: broadcast::Sender<Arc<str>>,
    /// Whether the subscription is up; the task starts with the first waiter.
    state: watch::Sender<State>,
    /// Whether the subscription's task runs. Cleared when it ends (its
    /// runtime shut down), so the next waiter starts another.
    running: AtomicBool,
}

impl ReleaseFeed {
    pub(crate) fn new(
        client: redis::Client,
        channel: String,
        target: String,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(ReleaseFeed {
            client,
            channel,
            target,
            connect_timeout,
            request_timeout,
            notices: broadcast::channel(BACKLOG).0,
            state: watch::channel(State::Starting).0,
            running: AtomicBool::new(false),
        })
    }

    /// Notices of releases from now on, or `None` while the subscription is
    /// down (the caller polls). The first call starts the subscription;
    /// until its first attempt ends, callers wait for it (up to the connect
    /// and request deadlines, and never longer than `max_wait`).
    pub(crate) async fn listen(
        self: &Arc<Self>,
        max_wait: Duration,
    ) -> Option<broadcast::Receiver<Arc<str>>> {
        if !self.running.swap(true, Ordering::SeqCst) {
            self.state.send_replace(State::Starting);
            tokio::spawn(subscribe_loop(Arc::downgrade(self)));
        }
        // Taken before looking at the state, so a notice published once
        // the subscription is up is not missed.
        let rx = self.notices.subscribe();
        let mut state = self.state.subscribe();
        let _ = tokio::time::timeout(
            (self.connect_timeout + self.request_timeout).min(max_wait),
            state.wait_for(|s| *s != State::Starting),
        )
        .await;
        let live = *state.borrow() == State::Live;
        live.then_some(rx)
    }
}

/// Marks the subscription down when its task ends, however it ends (the
/// backend gone, or its runtime shutting down mid-await): waiters then poll,
/// are told to look again, and the next one starts a new task.
struct Running(Weak<ReleaseFeed>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(f) = self.0.upgrade() {
            f.state.send_replace(State::Down);
            let _ = f.notices.send(ANY.into());
            f.running.store(false, Ordering::SeqCst);
        }
    }
}

/// Keeps the subscription up for as long as its backend lives.
async fn subscribe_loop(feed: Weak<ReleaseFeed>) {
    let _running = Running(feed.clone());
    let mut resubscribed = false;
    loop {
        let Some(f) = feed.upgrade() else { return };
        match subscribe(&f).await {
            Ok((sink, stream)) => {
                f.state.send_replace(State::Live);
                // Releases published while no subscription was up were
                // lost. (The first time, every waiter read its lock after
                // it started listening: nothing was missed.)
                if resubscribed {
                    let _ = f.notices.send(ANY.into());
                }
                resubscribed = true;
                let (channel, deadline) = (f.channel.clone(), f.request_timeout);
                drop(f);
                let why = serve(&feed, sink, stream, &channel, deadline).await;
                let Some(f) = feed.upgrade() else { return };
                f.state.send_replace(State::Down);
                let _ = f.notices.send(ANY.into());
                tracing::debug!(
                    backend = crate::KIND,
                    why,
                    "dlock: the release subscription ended; subscribing again"
                );
            }
            Err(e) => {
                f.state.send_replace(State::Down);
                drop(f);
                tracing::debug!(backend = crate::KIND, error = %format!("{e:#}"), "dlock: subscribing to releases failed; waiters poll meanwhile");
            }
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

async fn subscribe(
    f: &ReleaseFeed,
) -> dlock_core::Result<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let connected = tokio::time::timeout(f.connect_timeout, f.client.get_async_pubsub()).await;
    let pubsub = match connected {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(connect_error(&f.target, e, f.connect_timeout)),
        Err(_) => {
            return Err(dlock_core::Error::Timeout {
                operation: "subscribe",
                after: f.connect_timeout,
            })
        }
    };
    let (mut sink, stream) = pubsub.split();
    crate::errors::within("subscribe", f.request_timeout, sink.subscribe(&f.channel)).await?;
    Ok((sink, stream))
}

/// Forwards notices until the connection fails or the backend is gone;
/// returns why it stopped.
async fn serve(
    feed: &Weak<ReleaseFeed>,
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
    channel: &str,
    deadline: Duration,
) -> &'static str {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "the connection closed" };
                let Some(f) = feed.upgrade() else { return "the backend is gone" };
                if msg.get_channel_name() != channel {
                    continue;
                }
                let name: Arc<str> = String::from_utf8_lossy(msg.get_payload_bytes()).into();
                let _ = f.notices.send(name);
            }
            _ = ping.tick() => {
                if feed.strong_count() == 0 {
                    return "the backend is gone";
                }
                let pong = tokio::time::timeout(deadline, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return "a PING went unanswered";
                }
            }
        }
    }
}
