//! The errno values the kernel answers with, printed as `ENOENT: No such
//! file or directory`. Our own small type, because nix (which has one) needs
//! std and the static init links none.

use alloc::string::String;
use core::fmt;

/// An error number from a failed system call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno(libc::$name);)*

            /// The symbolic name, for the common ones.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $(libc::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    ENOEXEC,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    ENOTDIR,
    EISDIR,
    EINVAL,
    EMFILE,
    ENOTTY,
    ETXTBSY,
    ENOSPC,
    EROFS,
    EPIPE,
    ENAMETOOLONG,
    ENOSYS,
    ELOOP,
);

impl Errno {
    /// errno as the last failed call left it.
    pub fn last() -> Errno {
        // SAFETY: errno is thread-local and always readable.
        Errno(unsafe { *libc::__errno_location() })
    }

    /// The C library's description, `No such file or directory`.
    pub fn desc(self) -> String {
        String::from_utf8_lossy(self.strerror()).into_owned()
    }

    /// [`Errno::desc`] without allocating, for a forked child: the bytes
    /// stay valid until the next strerror call (the init has one thread).
    /// glibc's words where musl's differ in the messages the originals print.
    pub fn strerror(self) -> &'static [u8] {
        if self == Errno::ENOTTY {
            return b"Inappropriate ioctl for device";
        }
        // SAFETY: strerror returns a NUL-terminated string in static or
        // thread-local storage.
        unsafe { core::ffi::CStr::from_ptr(libc::strerror(self.0)) }.to_bytes()
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}: {}", self.desc()),
            None => write!(f, "errno {}: {}", self.0, self.desc()),
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_name_and_description() {
        assert_eq!(
            alloc::format!("{}", Errno::ENOENT),
            "ENOENT: No such file or directory"
        );
        assert_eq!(alloc::format!("{:?}", Errno::EACCES), "EACCES");
        assert!(alloc::format!("{}", Errno(4000)).starts_with("errno 4000: "));
    }
}
