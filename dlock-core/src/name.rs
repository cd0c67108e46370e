//! Validated lock names.

use crate::{Error, Result};
use std::fmt;

/// Longest accepted lock name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// A lock name: any non-empty UTF-8 string of at most 255 bytes.
///
/// The same name means the same lock on every backend. Backends never splice
/// it into SQL or paths: it travels as a bound parameter or an encoded key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(String);

impl LockName {
    /// Validates `name`.
    ///
    /// ```
    /// use dlock_core::LockName;
    /// assert!(LockName::new("emailLock").is_ok());
    /// assert!(LockName::new("").is_err());
    /// assert!(LockName::new("x".repeat(256)).is_err());
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::InvalidName {
                name,
                reason: "a lock name must not be empty".into(),
            });
        }
        if name.len() > MAX_NAME_BYTES {
            let len = name.len();
            let mut cut = 64;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            return Err(Error::InvalidName {
                name: format!("{}...", &name[..cut]),
                reason: format!(
                    "a lock name is at most {MAX_NAME_BYTES} bytes of UTF-8, this one has {len}"
                ),
            });
        }
        if name.contains('\0') {
            return Err(Error::InvalidName {
                name: name.replace('\0', "\\0"),
                reason: "a lock name must not contain NUL characters".into(),
            });
        }
        Ok(LockName(name))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-case hexadecimal of the name's bytes, for backends whose keys
    /// must avoid every special character. Injective and order-preserving.
    pub fn hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(self.0.len() * 2);
        for b in self.0.bytes() {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Percent-encodes every byte outside `[A-Za-z0-9_.-]` (and a leading
    /// `.`), so the result is one safe path segment: never empty, never `.`
    /// or `..`, never containing `/`. Injective.
    pub fn path_segment(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(self.0.len());
        for (i, b) in self.0.bytes().enumerate() {
            let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
            if plain {
                s.push(b as char);
            } else {
                let _ = write!(s, "%{b:02X}");
            }
        }
        s
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for LockName {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        LockName::new(value)
    }
}

impl TryFrom<String> for LockName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        LockName::new(value)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(LockName::new("a").is_ok());
        assert!(LockName::new("é".repeat(127)).is_ok()); // 254 bytes
        assert!(LockName::new("x".repeat(255)).is_ok());
        let e = LockName::new("x".repeat(256)).unwrap_err();
        assert!(e.to_string().contains("256"), "{e}");
        let e = LockName::new("").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        // 2-byte characters cut at a boundary without panicking
        assert!(LockName::new("é".repeat(200)).is_err());
    }

    #[test]
    fn path_segment_is_safe_and_injective() {
        let names = ["a", "a/b", "..", ".", "a%2Fb", "%", " ", "ü", "a.b"];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let seg = LockName::new(n).unwrap().path_segment();
            assert!(!seg.is_empty() && seg != "." && seg != ".." && !seg.contains('/'));
            assert!(seen.insert(seg.clone()), "collision on {seg}");
        }
    }
}
