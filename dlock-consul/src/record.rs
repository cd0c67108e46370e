//! What dlock stores in Consul: the lock key's value (who holds it) and the
//! lease handle (which session, and how long the acquire took).

use crate::KIND;
use base64::Engine as _;
use dlock_core::{Error, Lease, LockName, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The JSON value of a held lock key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The lock name as given (the key only carries its encoded form).
    pub name: String,
    /// The owner (node name).
    pub owner: String,
    /// The acquisition id.
    pub id: String,
    /// The acquisition's fencing token. Absent right after the acquire (the
    /// token is the key's ModifyIndex then); written when the key moves to
    /// another session (extend with a new lease length, release with
    /// `at_least`) so inspect still reports the acquisition's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

impl Holder {
    pub fn new(name: &LockName, owner: &str, id: &str, token: Option<u64>) -> Self {
        Holder {
            name: name.as_str().to_owned(),
            owner: owner.to_owned(),
            id: id.to_owned(),
            token,
        }
    }

    /// The value as `/v1/txn` wants it: base64 of the JSON.
    pub fn to_base64(&self) -> Result<String> {
        let json = serde_json::to_vec(self).map_err(|e| Error::backend(KIND, "encode value", e))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(json))
    }

    /// Parses a base64 value read back from Consul; `None` when the key was
    /// not written by dlock.
    pub fn from_base64(v: Option<&str>) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Backend-private state of a lease, kept in [`Lease::handle`] as
/// `<session id>;<acquire round trip in µs>;<acquisition id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    /// The session holding the key for this lease.
    pub session: String,
    /// How long the acquire took from `Lease::acquired_at` to its answer:
    /// the coordinator took the lock no later than `acquired_at + rtt`.
    pub rtt: Duration,
    /// The acquisition the session was created for. A lease whose `id`
    /// differs is not that acquisition and may neither extend nor release.
    pub id: String,
}

impl Handle {
    pub fn encode(&self) -> String {
        format!("{};{};{}", self.session, self.rtt.as_micros(), self.id)
    }

    /// The handle of `lease`, checked against the lease's own id.
    pub fn of(lease: &Lease) -> Result<Self> {
        let bad = || {
            Error::InvalidConfig(format!(
                "lease of lock {:?} was not granted by the consul backend (malformed handle)",
                lease.name.as_str()
            ))
        };
        let mut parts = lease.handle.splitn(3, ';');
        let (Some(session), Some(rtt), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let rtt: u64 = rtt.parse().map_err(|_| bad())?;
        if session.is_empty() {
            return Err(bad());
        }
        if id != lease.id {
            return Err(Error::lost(
                &lease.name,
                "this lease is not the acquisition its Consul session was created for \
                 (another acquisition's handle); nothing was changed",
            ));
        }
        Ok(Handle {
            session: session.to_owned(),
            rtt: Duration::from_micros(rtt),
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn holder_round_trip() {
        let n = LockName::new("a/b?c#d%e ü").unwrap();
        let h = Holder::new(&n, "node-1", "abc", None);
        let b = h.to_base64().unwrap();
        assert_eq!(Holder::from_base64(Some(&b)), Some(h));
        assert_eq!(Holder::from_base64(Some("eA==")), None);
        assert_eq!(Holder::from_base64(None), None);
    }
}
