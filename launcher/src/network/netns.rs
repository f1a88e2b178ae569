//! Reaching into a container's network namespace from the launcher: by a
//! file descriptor of it, and a netlink socket opened inside it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::Error;
use super::netlink::Netlink;

/// A network namespace: a process's (`/proc/PID/ns/net`) or a bind-mounted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    Pid(u32),
    Path(PathBuf),
}

impl Netns {
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Self::Path(p) => p.clone(),
        }
    }

    /// An fd of the namespace, which keeps it alive while open.
    pub fn open(&self) -> io::Result<OwnedFd> {
        File::open(self.path()).map(OwnedFd::from)
    }
}

/// A netlink socket living in `netns`. A socket belongs to the namespace of
/// the thread that created it (network_namespaces(7)), so a short-lived
/// thread enters the namespace, makes the socket and exits: the caller's
/// own namespace never changes, and the container needs no tools.
pub fn open_netlink_in(netns: &OwnedFd) -> io::Result<Netlink> {
    let fd = netns.as_raw_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns on this thread only; the thread ends right
                // after, so no other code runs in the entered namespace.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Netlink::open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netlink thread panicked")))
    })
}

/// Brings `lo` up in the calling thread's namespace: for `--network none`,
/// called by the container's child after it has its own namespace.
pub fn bring_up_loopback() -> Result<(), Error> {
    let fail = |source| Error::Netlink {
        op: "bring up",
        operand: "lo".into(),
        source,
    };
    let mut nl = Netlink::open().map_err(fail)?;
    let index = nl
        .link_index("lo")
        .map_err(fail)?
        .ok_or_else(|| fail(io::Error::from_raw_os_error(libc::ENODEV)))?;
    nl.set_up(index).map_err(fail)
}
