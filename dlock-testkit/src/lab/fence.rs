//! The fenced resource: a store that accepts a write only if its token is
//! at least the highest it has seen, shared by every lab process through
//! files (the file system is not partitioned with the network). Each name
//! is a file holding the highest token, updated under `flock`, plus an
//! append-only log of every accepted write, in the order it was accepted.

use nix::fcntl::{Flock, FlockArg};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The resource under `dir`.
#[derive(Clone, Debug)]
pub struct Fence {
    dir: PathBuf,
}

/// The answer to one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: the token was at least the highest seen.
    Accepted,
    /// Refused: a higher token had written.
    Refused(u64),
}

impl Fence {
    /// The resource kept in `dir` (created when missing).
    pub fn new(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("fence dir {}: {e}", dir.display()))?;
        Ok(Fence {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        // Lab names are plain ([a-z0-9-]).
        self.dir.join(format!("{name}.{ext}"))
    }

    /// Writes as `token` to `name`.
    pub fn write(&self, name: &str, token: u64) -> Result<Verdict, String> {
        let path = self.file(name, "max");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("fence {}: {e}", path.display()))?;
        let mut f = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("flock {}: {e}", path.display()))?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let max: u64 = text.trim().parse().unwrap_or(0);
        if token < max {
            return Ok(Verdict::Refused(max));
        }
        f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        f.set_len(0).map_err(|e| e.to_string())?;
        write!(f, "{token}").map_err(|e| e.to_string())?;
        let log = self.file(name, "log");
        let mut l = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .map_err(|e| format!("fence log {}: {e}", log.display()))?;
        writeln!(l, "{token}").map_err(|e| e.to_string())?;
        Ok(Verdict::Accepted)
    }

    /// Every accepted token of `name`, in acceptance order.
    pub fn accepted(&self, name: &str) -> Vec<u64> {
        std::fs::read_to_string(self.file(name, "log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}
