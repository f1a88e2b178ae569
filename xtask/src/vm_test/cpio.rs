//! The initramfs archive: the "newc" cpio format the kernel unpacks into
//! its rootfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//! Directories, files, symlinks and character devices, owned by root, with
//! mtime 0, so the same inputs give the same bytes.

use std::io::{self, Write};

/// What an entry is.
pub enum Kind<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a str),
    CharDev { major: u32, minor: u32 },
}

/// Writes entries one after the other; [`Writer::finish`] adds the trailer.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// Adds `name` (no leading `/`; parents come first) with permission bits `perm`.
    pub fn add(&mut self, name: &str, perm: u32, kind: Kind) -> io::Result<()> {
        let (type_bits, data, rdev): (u32, &[u8], (u32, u32)) = match kind {
            Kind::Dir => (0o040000, &[], (0, 0)),
            Kind::File(data) => (0o100000, data, (0, 0)),
            Kind::Symlink(target) => (0o120000, target.as_bytes(), (0, 0)),
            Kind::CharDev { major, minor } => (0o020000, &[], (major, minor)),
        };
        let nlink = if type_bits == 0o040000 { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.entry(ino, type_bits | perm, nlink, name, data, rdev)
    }

    /// The `TRAILER!!!` entry that ends the archive; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(0, 0, 1, "TRAILER!!!", &[], (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        name: &str,
        data: &[u8],
        (rmajor, rminor): (u32, u32),
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("`{name}` is over 4 GiB, too big for newc")))?;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{rmajor:08x}{rminor:08x}{:08x}{:08x}",
            0,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Header plus name, and the data, each end on a 4-byte boundary.
    fn pad(&mut self) -> io::Result<()> {
        let zeros = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..zeros as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut w = Writer::new(Vec::new());
        w.add("bin", 0o755, Kind::Dir).unwrap();
        w.add("bin/sh", 0o777, Kind::Symlink("busybox")).unwrap();
        w.add("init", 0o755, Kind::File(b"hello")).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        // 110-byte header + "bin\0" = 114, padded to 116.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(&bytes[116..122], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        // The symlink's mode (0o120777) and its target as data.
        assert!(text.contains("0000a1ff"), "{text}");
        assert!(text.contains("bin/sh\0\0\0\0busybox"), "{text}");
        assert!(text.contains("init\0\0hello"), "{text}");
        assert!(text.contains("TRAILER!!!\0"), "{text}");
    }

    #[test]
    fn a_char_device_carries_its_numbers_in_rdev() {
        let mut w = Writer::new(Vec::new());
        w.add("dev/console", 0o600, Kind::CharDev { major: 5, minor: 1 })
            .unwrap();
        let bytes = w.finish().unwrap();
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        // rdevmajor and rdevminor are the 11th and 12th fields.
        assert_eq!(&header[6 + 8 * 9..6 + 8 * 10], "00000005");
        assert_eq!(&header[6 + 8 * 10..6 + 8 * 11], "00000001");
        assert_eq!(&header[6 + 8..6 + 8 * 2], "00002180");
    }
}
