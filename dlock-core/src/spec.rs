//! What a caller asks for: [`LockSpec`].

use crate::{Error, LockName, Result};
use std::time::Duration;

/// A request to take one lock: the name, who asks, and the lease bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSpec {
    /// The lock.
    pub name: LockName,
    /// The owner (a node name); see [`crate::default_owner`].
    pub owner: String,
    /// `lock_at_most_for`: if the holder dies or hangs, the lock is free
    /// again after at most this long (plus the backend's declared slack).
    pub at_most: Duration,
    /// `lock_at_least_for`: a release earlier than this keeps the lock until
    /// `acquired + at_least`, by the coordinator's clock.
    pub at_least: Duration,
}

impl LockSpec {
    /// A spec with `at_least` zero. Fails on a zero `at_most` or an empty owner.
    pub fn new(name: LockName, owner: impl Into<String>, at_most: Duration) -> Result<Self> {
        let spec = LockSpec {
            name,
            owner: owner.into(),
            at_most,
            at_least: Duration::ZERO,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Sets `lock_at_least_for`, checking it does not exceed `at_most`.
    pub fn with_at_least(mut self, at_least: Duration) -> Result<Self> {
        self.at_least = at_least;
        self.validate()?;
        Ok(self)
    }

    /// Checks the invariants every backend relies on.
    pub fn validate(&self) -> Result<()> {
        if self.at_most.is_zero() {
            return Err(Error::InvalidConfig(format!(
                "lock {:?}: lock_for (lock_at_most_for) must be greater than zero",
                self.name.as_str()
            )));
        }
        if self.at_least > self.at_most {
            return Err(Error::InvalidConfig(format!(
                "lock {:?}: at_least ({:?}) is longer than lock_for ({:?})",
                self.name.as_str(),
                self.at_least,
                self.at_most
            )));
        }
        validate_owner(&self.owner)
    }
}

/// Longest accepted owner string, in bytes.
pub const MAX_OWNER_BYTES: usize = 255;

/// Checks an owner string: non-empty, at most 255 bytes, no NUL.
pub fn validate_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > MAX_OWNER_BYTES || owner.contains('\0') {
        return Err(Error::InvalidConfig(format!(
            "owner must be 1..={MAX_OWNER_BYTES} bytes of UTF-8 without NUL, got {} bytes",
            owner.len()
        )));
    }
    Ok(())
}

/// A sensible default owner: `<host name>:<process id>`.
pub fn default_owner() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "unknown-host".to_string()
    } else {
        host
    };
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> LockName {
        LockName::new("n").unwrap()
    }

    #[test]
    fn zero_at_most_rejected() {
        let e = LockSpec::new(name(), "o", Duration::ZERO).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
    }

    #[test]
    fn at_least_longer_than_at_most_rejected() {
        let e = LockSpec::new(name(), "o", Duration::from_secs(1))
            .unwrap()
            .with_at_least(Duration::from_secs(2))
            .unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn owner_checked() {
        assert!(LockSpec::new(name(), "", Duration::from_secs(1)).is_err());
        assert!(LockSpec::new(name(), "x".repeat(256), Duration::from_secs(1)).is_err());
        assert!(default_owner().contains(':'));
    }
}
