//! Address leases: one file per address in use under the state directory,
//! held with flock(2) by the launcher that owns it for as long as it runs.
//!
//! A lease file whose lock anyone can take belongs to a launcher that is
//! gone (the kernel drops the lock with the last fd, SIGKILL included), so
//! no pid is trusted and pid reuse cannot fool the check. Allocation,
//! release and reclaiming all run under one state lock, so two launchers
//! never pick the same address.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::Error;

/// The state directory's lock: held while leases, the bridge and firewall
/// rules change.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn take(state_dir: &Path) -> Result<Self, Error> {
        let path = state_dir.join("lock");
        let io_err = |source| Error::State {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io_err)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        flock(&file, libc::LOCK_EX).map_err(io_err)?;
        Ok(Self { _file: file })
    }
}

/// What a lease records, so that whoever reclaims it knows what to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The container's address.
    pub address: Ipv4Addr,
    /// The host end of its veth pair.
    pub host_if: String,
    /// The comment on its firewall rules.
    pub tag: String,
    /// The launcher that took it, for people reading the file.
    pub pid: u32,
}

impl Record {
    fn to_text(&self) -> String {
        format!(
            "address={}\nhost_if={}\ntag={}\npid={}\n",
            self.address, self.host_if, self.tag, self.pid
        )
    }

    fn from_text(text: &str) -> Option<Self> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        Some(Self {
            address: field("address")?.parse().ok()?,
            host_if: field("host_if")?.to_string(),
            tag: field("tag")?.to_string(),
            pid: field("pid")?.parse().ok()?,
        })
    }
}

/// A held lease; released (file removed) by [`Lease::release`] or on drop.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    state_dir: PathBuf,
    file: Option<File>,
    pub record: Record,
    owner: u32,
}

/// Takes the first free address among `candidates` in the pool directory
/// `state_dir/leases/POOL`. The caller holds the [`StateLock`]. A stale
/// lease met on the way is handed to `reclaim` and then reused.
pub fn acquire(
    state_dir: &Path,
    pool: &str,
    candidates: impl Iterator<Item = Ipv4Addr>,
    make_record: impl Fn(Ipv4Addr) -> Record,
    mut reclaim: impl FnMut(&Record),
) -> Result<Lease, Error> {
    let dir = state_dir.join("leases").join(pool);
    std::fs::create_dir_all(&dir).map_err(|source| Error::State {
        path: dir.clone(),
        source,
    })?;
    for address in candidates {
        let path = dir.join(address.to_string());
        let io_err = |source| Error::State {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => continue,
            Err(e) => return Err(io_err(e)),
        }
        let mut old = String::new();
        file.read_to_string(&mut old).map_err(io_err)?;
        if let Some(stale) = Record::from_text(&old) {
            reclaim(&stale);
        }
        let record = make_record(address);
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        file.write_all(record.to_text().as_bytes())
            .map_err(io_err)?;
        return Ok(Lease {
            path,
            state_dir: state_dir.into(),
            file: Some(file),
            record,
            owner: std::process::id(),
        });
    }
    Err(Error::PoolExhausted { pool: pool.into() })
}

/// Removes every stale lease of the pool, after `reclaim` undid what it
/// records. The caller holds the [`StateLock`]. Returns their records.
pub fn reclaim_stale(
    state_dir: &Path,
    pool: &str,
    mut reclaim: impl FnMut(&Record),
) -> Result<Vec<Record>, Error> {
    let dir = state_dir.join("leases").join(pool);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            continue;
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        if let Some(stale) = Record::from_text(&text) {
            reclaim(&stale);
            out.push(stale);
        }
        std::fs::remove_file(&path).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
    }
    Ok(out)
}

/// The pools' names under `state_dir/leases`.
pub fn pools(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("leases")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

impl Lease {
    /// Removes the lease file, then lets go of its lock.
    pub fn release(mut self) -> Result<(), Error> {
        self.release_file()
    }

    fn release_file(&mut self) -> Result<(), Error> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        // Under the state lock, so no allocator sees the file half gone.
        let _lock = StateLock::take(&self.state_dir)?;
        let result = std::fs::remove_file(&self.path);
        drop(file);
        result.map_err(|source| Error::State {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
impl Lease {
    /// Lets go of the lock but leaves the file, as a SIGKILLed owner does.
    pub(super) fn abandon(mut self) {
        drop(self.file.take());
        std::mem::forget(self);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Not in a forked child: the lease is its parent's.
        if std::process::id() != self.owner {
            return;
        }
        let _ = self.release_file();
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(address: Ipv4Addr) -> Record {
        Record {
            address,
            host_if: format!("if{}", address.octets()[3]),
            tag: "t".into(),
            pid: std::process::id(),
        }
    }

    fn addrs() -> impl Iterator<Item = Ipv4Addr> {
        (2..6).map(|n| Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn leases_are_distinct_while_held_and_reused_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let a = acquire(dir.path(), "p", addrs(), record, |_| {
            panic!("nothing stale")
        })
        .unwrap();
        let b = acquire(dir.path(), "p", addrs(), record, |_| {
            panic!("nothing stale")
        })
        .unwrap();
        assert_eq!(
            (a.record.address, b.record.address),
            ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap())
        );
        a.release().unwrap();
        assert!(!dir.path().join("leases/p/10.0.0.2").exists());
        let c = acquire(dir.path(), "p", addrs(), record, |_| {
            panic!("nothing stale")
        })
        .unwrap();
        assert_eq!(c.record.address, "10.0.0.2".parse::<Ipv4Addr>().unwrap());
        drop((b, c));
        assert_eq!(
            std::fs::read_dir(dir.path().join("leases/p"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_full_pool_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let _held: Vec<Lease> = (0..4)
            .map(|_| acquire(dir.path(), "p", addrs(), record, |_| {}).unwrap())
            .collect();
        let err = acquire(dir.path(), "p", addrs(), record, |_| {}).unwrap_err();
        assert!(matches!(err, Error::PoolExhausted { .. }), "{err}");
    }

    #[test]
    fn an_abandoned_lease_is_reclaimed_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let lease = acquire(dir.path(), "p", addrs(), record, |_| {}).unwrap();
        // What a SIGKILLed owner leaves: the file, without a lock on it.
        let mut abandoned = lease;
        drop(abandoned.file.take());
        std::mem::forget(abandoned);
        let mut seen = Vec::new();
        let again = acquire(dir.path(), "p", addrs(), record, |r| seen.push(r.clone())).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].host_if, "if2");
        assert_eq!(again.record.address, seen[0].address);
    }

    #[test]
    fn reclaim_removes_only_unlocked_leases() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), "p", addrs(), record, |_| {}).unwrap();
        let mut abandoned = acquire(dir.path(), "p", addrs(), record, |_| {}).unwrap();
        drop(abandoned.file.take());
        std::mem::forget(abandoned);
        let gone = reclaim_stale(dir.path(), "p", |_| {}).unwrap();
        assert_eq!(
            gone.iter().map(|r| r.host_if.as_str()).collect::<Vec<_>>(),
            ["if3"]
        );
        assert!(dir.path().join("leases/p/10.0.0.2").exists());
        assert!(!dir.path().join("leases/p/10.0.0.3").exists());
        assert_eq!(pools(dir.path()), ["p"]);
        drop(held);
    }

    #[test]
    fn concurrent_allocators_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let many = || (0..64).map(|n| Ipv4Addr::new(10, 0, 1, n));
        let leases: Vec<Lease> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|_| {
                    s.spawn(|| {
                        let _lock = StateLock::take(dir.path()).unwrap();
                        acquire(dir.path(), "p", many(), record, |_| {}).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut got: Vec<Ipv4Addr> = leases.iter().map(|l| l.record.address).collect();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 32);
    }
}
