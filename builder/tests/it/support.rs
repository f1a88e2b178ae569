//! Helpers: hand-made tar entries (including the ones `tar::Builder` refuses
//! to write), and listing a directory tree.

use std::path::{Path, PathBuf};

/// A tar stream built entry by entry, names written verbatim.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    fn header(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
        link: Option<&str>,
    ) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_old_mut().name;
        assert!(name.len() < field.len(), "name too long for this helper");
        field[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            let field = &mut header.as_old_mut().linkname;
            field[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_000_000);
        header
    }

    fn push(&mut self, mut header: tar::Header, data: &[u8]) -> &mut Tar {
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        let h = self.header(
            name,
            tar::EntryType::Regular,
            0o644,
            data.len() as u64,
            None,
        );
        self.push(h, data)
    }

    pub fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Regular, mode, data.len() as u64, None);
        self.push(h, data)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Directory, mode, 0, None);
        self.push(h, &[])
    }

    pub fn symlink(&mut self, name: &str, to: &str) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Symlink, 0o777, 0, Some(to));
        self.push(h, &[])
    }

    pub fn hardlink(&mut self, name: &str, to: &str) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Link, 0o644, 0, Some(to));
        self.push(h, &[])
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Tar {
        let mut h = self.header(name, tar::EntryType::Char, 0o666, 0, None);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    /// The finished archive (two zero blocks at the end).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }

    pub fn gzip(&self) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.bytes()).unwrap();
        gz.finish().unwrap()
    }
}

/// Every path under `dir`, relative, sorted, directories marked with `/`.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The `builder` binary built for these tests.
pub fn builder_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_builder"))
}
