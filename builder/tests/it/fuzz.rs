//! Fuzzing, with proptest on the stable toolchain, the parsers that read
//! untrusted input: the tar unpacker, image archives (OCI layouts and
//! `docker save`), registry references and image definitions. Each target
//! mutates seeds: archives built here entry by entry (names absolute, with
//! `..`, through symlinks, hardlinks out, devices, FIFOs, huge sizes, GNU
//! long names, PAX records, whiteouts), the real tools' output kept in
//! `tests/fuzz-corpus/` (remade by its `make.sh`), and JSON and TOML edited
//! node by node. A case may end in an error; a panic, a case running past
//! [`testkit::fuzz::DEADLINE`], or a write outside the unpacker's target fails the test.
//!
//! CI runs the case counts below (about 20 s for all the targets on a
//! 2-core machine); `CRADLE_FUZZ_CASES=N` runs N cases per target instead,
//! and proptest's `PROPTEST_RNG_SEED` replays a run.

use builder::archive::ImageArchive;
use builder::unpack::{self, Options};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::Config;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Cases per target in CI. On the 2-core machine, not otherwise busy, a
/// case costs about 2 ms for the unpacker, 1 ms for archives, 0.2 ms for
/// the rest: some 20 s for the lot, 2 tests at a time.
const UNPACK_CASES: u32 = 5000;
const ARCHIVE_CASES: u32 = 4000;
#[cfg(feature = "fetch")]
const REFERENCE_CASES: u32 = 30_000;
const DEFINITION_CASES: u32 = 20_000;

fn config(cases: u32) -> Config {
    let cases = testkit::fuzz::cases(cases);
    Config {
        cases,
        // No regression files: a failure found becomes a named test.
        failure_persistence: None,
        // Shrinking a hang costs a deadline per step.
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// An error and its causes, as `{:#}` prints them with anyhow.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

// ---------------------------------------------------------------------
// Tar streams, entry by entry, names and fields written verbatim.

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// A GNU sparse file (`S`) `real` bytes long, all hole but `data` at `at`.
    Sparse {
        real: u64,
        at: u64,
        data: Vec<u8>,
    },
    /// Another type flag: a volume label, a dumpdir, a PAX header with no
    /// records, a reserved digit.
    Other(u8),
}

/// Where an entry's name (and link) is written.
#[derive(Debug, Clone, Copy)]
enum NameIn {
    Header,
    GnuLong,
    Pax,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `@OUT@` and `@ROOT@` stand for the scene's paths (see [`Scene::subst`]).
    name: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    mtime: u64,
    name_in: NameIn,
    /// PAX records for this entry besides the name, as (key, value), or
    /// raw bytes when the key is empty.
    pax: Vec<(&'static str, Vec<u8>)>,
    /// A size field that is not the data's length.
    size_lie: Option<u64>,
}

impl Entry {
    fn file(name: &str, data: &[u8]) -> Entry {
        Entry {
            name: name.to_string(),
            kind: Kind::File(data.to_vec()),
            mode: 0o644,
            uid: 0,
            mtime: 0,
            name_in: NameIn::Header,
            pax: Vec::new(),
            size_lie: None,
        }
    }

    fn with_kind(mut self, kind: Kind) -> Entry {
        self.kind = kind;
        self
    }
}

/// One PAX record, its length field counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn header(name: &[u8], flag: u8, mode: u32, uid: u64, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_entry_type(tar::EntryType::new(flag));
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

fn push(out: &mut Vec<u8>, mut h: tar::Header, data: &[u8]) {
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The entries as a tar stream, placeholders replaced by `subst`; `end`
/// adds the two zero blocks.
fn tar_bytes(entries: &[Entry], subst: &dyn Fn(&str) -> String, end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let name = subst(&e.name).into_bytes();
        let link = match &e.kind {
            Kind::Symlink(l) | Kind::Hardlink(l) => subst(l).into_bytes(),
            _ => Vec::new(),
        };
        let gnu_long = matches!(e.name_in, NameIn::GnuLong);
        if gnu_long || name.len() >= 100 {
            let data = [name.as_slice(), b"\0"].concat();
            push(
                &mut out,
                header(b"././@LongLink", b'L', 0, 0, 0, data.len() as u64),
                &data,
            );
        }
        if gnu_long && !link.is_empty() || link.len() >= 100 {
            let data = [link.as_slice(), b"\0"].concat();
            push(
                &mut out,
                header(b"././@LongLink", b'K', 0, 0, 0, data.len() as u64),
                &data,
            );
        }
        let mut records: Vec<u8> = Vec::new();
        for (key, value) in &e.pax {
            let value = subst(&String::from_utf8_lossy(value)).into_bytes();
            match key {
                &"" => records.extend_from_slice(&value),
                key => records.extend(pax_record(key, &value)),
            }
        }
        if matches!(e.name_in, NameIn::Pax) {
            records.extend(pax_record("path", &name));
            if !link.is_empty() {
                records.extend(pax_record("linkpath", &link));
            }
        }
        if !records.is_empty() {
            let h = header(b"PaxHeaders/x", b'x', 0o644, 0, 0, records.len() as u64);
            push(&mut out, h, &records);
        }
        let (flag, data): (u8, &[u8]) = match &e.kind {
            Kind::File(data) => (b'0', data),
            Kind::Dir => (b'5', &[]),
            Kind::Symlink(_) => (b'2', &[]),
            Kind::Hardlink(_) => (b'1', &[]),
            Kind::Char(..) => (b'3', &[]),
            Kind::Block(..) => (b'4', &[]),
            Kind::Fifo => (b'6', &[]),
            Kind::Sparse { data, .. } => (b'S', data),
            Kind::Other(flag) => (*flag, &[]),
        };
        let size = e.size_lie.unwrap_or(data.len() as u64);
        let mut h = header(&name, flag, e.mode, e.uid, e.mtime, size);
        let n = link.len().min(100);
        h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
        match &e.kind {
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
            }
            Kind::Sparse { real, at, data } => {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.sparse[0].set_offset(*at);
                gnu.sparse[0].set_length(data.len() as u64);
                gnu.sparse[1].set_offset(*real);
                gnu.sparse[1].set_length(0);
                gnu.set_real_size(*real);
            }
            _ => {}
        }
        push(&mut out, h, data);
    }
    if end {
        out.resize(out.len() + 1024, 0);
    }
    out
}

// ---------------------------------------------------------------------
// Byte mutations, some of them aware of tar headers.

/// (offset, length) of the header fields worth breaking: name, mode, uid,
/// gid, size, mtime, checksum, type, link name, magic, device numbers,
/// the ustar prefix, GNU's first sparse region, its extension flag and its
/// real size.
const FIELDS: &[(usize, usize)] = &[
    (0, 100),
    (100, 8),
    (108, 8),
    (116, 8),
    (124, 12),
    (136, 12),
    (148, 8),
    (156, 1),
    (157, 100),
    (257, 8),
    (329, 8),
    (337, 8),
    (345, 155),
    (386, 12),
    (398, 12),
    (482, 1),
    (483, 12),
];

fn field_values() -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = [
        &b"../../../../x"[..],
        b"/x",
        b"l/x",
        b".wh..wh..opq",
        b".wh...",
        b"77777777777\0",
        b"00000000000\0",
        b"0000001\0",
        b"-1",
        b" 12 ",
        b"",
        b"\x80\0\0\0\0\0\0\0\x7f\xff\xff\xff",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"ustar\x0000",
        b"ustar  \0",
        b"\x01",
    ]
    .iter()
    .map(|v| v.to_vec())
    .collect();
    // Every type flag that means something to someone.
    values.extend(b"01234567LKxgSVDMNA\0".iter().map(|&b| vec![b]));
    values
}

#[derive(Debug, Clone)]
enum Mutation {
    Byte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Copies `len` bytes from one place over another (a header over data).
    Splice(Index, Index, usize),
    /// Writes a value into a header field of one 512-byte block, and
    /// then, when `fix`, gives that block a valid checksum again.
    Field {
        block: Index,
        field: (usize, usize),
        value: Vec<u8>,
        fix: bool,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        1 => (any::<Index>(), 1usize..1024).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..1024)
            .prop_map(|(from, to, n)| Mutation::Splice(from, to, n)),
        5 => (
            any::<Index>(),
            select(FIELDS),
            select(field_values()),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(block, field, value, fix)| Mutation::Field {
                block,
                field,
                value,
                fix,
            }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Byte(at, b) if len > 0 => bytes[at.index(len)] = *b,
            Mutation::Truncate(at) if len > 0 => bytes.truncate(at.index(len)),
            Mutation::Insert(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove(at, n) if len > 0 => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Splice(from, to, n) if len > 0 => {
                let (from, to) = (from.index(len), to.index(len));
                let n = (*n).min(len - from).min(len - to);
                bytes.copy_within(from..from + n, to);
            }
            Mutation::Field {
                block,
                field: (offset, flen),
                value,
                fix,
            } if len >= 512 => {
                let start = block.index(len / 512) * 512;
                let header = &mut bytes[start..start + 512];
                let field = &mut header[*offset..offset + flen];
                field.fill(0);
                let n = value.len().min(*flen);
                field[..n].copy_from_slice(&value[..n]);
                if *fix {
                    header[148..156].fill(b' ');
                    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
                    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// The seed corpus.

fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(kind)
}

/// The files in `tests/fuzz-corpus/KIND`, by name.
fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(kind))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no seeds in {}",
        corpus_dir(kind).display()
    );
    files
}

static TAR_SEEDS: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(|| corpus("tar"));
static ARCHIVE_SEEDS: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(|| corpus("archive"));

// ---------------------------------------------------------------------
// The unpacker: never a write outside the target.

/// A scratch root holding, three levels down, `target/` and beside it
/// `outside/` (a file `secret` and an empty `dir/`): what a hostile
/// archive would like to reach. Names climb at most four `..`, so an
/// escape of theirs lands inside the root too.
struct Scene {
    root: tempfile::TempDir,
}

/// A scratch directory, on a tmpfs where there is one: thousands of trees
/// made and removed then cost no disk I/O, which on a disk busy with other
/// work made the unpacker's cases wait minutes in all.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cradle-fuzz-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

impl Scene {
    fn new() -> Scene {
        let root = scratch();
        let dir = root.path().join("s1/s2/s3");
        std::fs::create_dir_all(dir.join("outside/dir")).unwrap();
        std::fs::create_dir(dir.join("target")).unwrap();
        std::fs::write(dir.join("outside/secret"), "secret").unwrap();
        Scene { root }
    }

    fn target(&self) -> PathBuf {
        self.root.path().join("s1/s2/s3/target")
    }

    /// `@OUT@` is the absolute path of `outside`, `@ROOT@` the root's path
    /// without its leading `/` (so `l/@ROOT@/x` reaches it through a
    /// symlink `l` to `/`).
    fn subst(&self, text: &str) -> String {
        let root = self.root.path().to_str().unwrap();
        text.replace("@OUT@", &format!("{root}/s1/s2/s3/outside"))
            .replace("@ROOT@", root.trim_start_matches('/'))
    }

    /// Everything under the root but what is inside the target: kind,
    /// mode, owner, link count, size, change and modification times, and
    /// contents or link target. A write, a chmod, a chown, a utimes or a
    /// hardlink through an escape changes one of these.
    fn snapshot(&self) -> Vec<String> {
        fn walk(root: &Path, path: &Path, target: &Path, out: &mut Vec<String>) {
            let meta = std::fs::symlink_metadata(path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(path).unwrap().display())
            } else if meta.is_file() {
                String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
            } else {
                String::new()
            };
            if path == target {
                out.push(format!("{rel} dir:{}", meta.is_dir()));
                return;
            }
            out.push(format!(
                "{rel} {:o} {}:{} n{} s{} c{}.{} m{}.{} {what}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.nlink(),
                meta.size(),
                meta.ctime(),
                meta.ctime_nsec(),
                meta.mtime(),
                meta.mtime_nsec(),
            ));
            if meta.is_dir() {
                let mut children: Vec<_> = std::fs::read_dir(path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                children.sort();
                for child in children {
                    walk(root, &child, target, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &self.target(), &mut out);
        out
    }
}

impl Drop for Scene {
    /// Directories unpacked `0555` or `0000` are opened up first, or a
    /// user without privileges could not remove them.
    fn drop(&mut self) {
        fn open_up(dir: &Path) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&entry.path());
                }
            }
        }
        open_up(&self.target());
    }
}

/// Path components, weighted so that an archive of a few entries holds
/// a hostile one or two, not one in every entry (the first refusal ends
/// the archive, and what comes after it would never run).
fn component() -> impl Strategy<Value = String> {
    let benign = select(vec![
        "a",
        "b",
        "d",
        "f",
        "l",
        "h",
        "outside",
        "secret",
        "ünï cödé",
        ".",
    ]);
    let whiteout = select(vec![
        ".wh.a",
        ".wh.l",
        ".wh.secret",
        ".wh..wh..opq",
        ".wh.",
        ".wh..",
        ".wh...",
    ]);
    prop_oneof![
        80 => benign.prop_map(str::to_string),
        12 => whiteout.prop_map(str::to_string),
        4 => select(vec!["..", "..", "@ROOT@", ""]).prop_map(str::to_string),
        3 => Just("n".repeat(150)),
        1 => Just("n".repeat(300)),
    ]
}

/// Whole names that escape, or try to, in one go.
const SPECIAL_NAMES: &[&str] = &[
    "@OUT@/x",
    "@OUT@",
    "@OUT@/secret",
    "/@ROOT@/x",
    "../outside/x",
    "../../../../x",
    "./a/../../x",
    "l/@ROOT@/x",
    "l/x",
    "l/secret",
    "l/dir/x",
    "/",
    "./",
    ".",
    "",
    "//",
    "a//b",
    "a\0b",
];

/// Link targets: out of the target in every way, and into it.
const LINK_TARGETS: &[&str] = &[
    "../outside",
    "../../../../",
    "..",
    "/",
    "@OUT@",
    "@OUT@/secret",
    "@OUT@/dir",
    "/@ROOT@",
    "../outside/secret",
    "l/secret",
    "a",
    "a/b",
    "l",
    "d",
    ".",
    "",
    "/proc/self/root/@ROOT@",
];

fn entry_name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => select(SPECIAL_NAMES).prop_map(str::to_string),
        15 => prop::collection::vec(component(), 1..=4).prop_map(|c| c.join("/")),
    ]
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(LINK_TARGETS).prop_map(str::to_string),
        1 => entry_name(),
        1 => Just("t".repeat(300)),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..32),
        1 => Just(vec![0u8; 8192]),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => data().prop_map(Kind::File),
        3 => Just(Kind::Dir),
        3 => link_target().prop_map(Kind::Symlink),
        2 => link_target().prop_map(Kind::Hardlink),
        1 => select(vec![(1, 3), (1, 5), (0, 0), (5, 1)]).prop_map(|(a, b)| Kind::Char(a, b)),
        1 => select(vec![(7, 0), (8, 0)]).prop_map(|(a, b)| Kind::Block(a, b)),
        1 => Just(Kind::Fifo),
        1 => (
            // Holes are read as zeros (tar's reader), 64 GiB in seconds:
            // up to 256 MiB here, so that a dozen of them stay well within
            // the deadline; past the 64 GiB limit they are refused.
            select(vec![0, 4096, 1 << 20, 1 << 28, 1 << 40, u64::MAX]),
            select(vec![0, 512, 4096, 1 << 20, u64::MAX - 1]),
            data(),
        )
            .prop_map(|(real, at, data)| Kind::Sparse { real, at, data }),
        1 => select(b"VDMNA79gx".to_vec()).prop_map(Kind::Other),
    ]
}

fn pax_records() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let record = select(vec![
        ("SCHILY.xattr.user.fuzz", &b"y"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.redirect", b"/@ROOT@"),
        (
            "SCHILY.xattr.security.capability",
            b"\x01\0\0\x02\xff\xff\xff\xff",
        ),
        ("SCHILY.xattr.", b""),
        ("SCHILY.xattr.system.posix_acl_access", b"\x02\0\0\0"),
        ("size", b"99999999999999999999"),
        ("size", b"1099511627776"),
        ("size", b"-1"),
        ("uid", b"4294967296"),
        ("gid", b"-1"),
        ("mtime", b"1e400"),
        ("mtime", b"-1.5"),
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.size", b"1099511627776"),
        ("path", b"../../x"),
        ("path", b"@OUT@/pax"),
        ("linkpath", b"@OUT@"),
        ("hdrcharset", b"BINARY"),
        ("", b"999999 path=x\n"),
        ("", b"5 a=b\n"),
        ("", b"0 =\n"),
        ("", b"garbage"),
    ])
    .prop_map(|(k, v)| (k, v.to_vec()));
    prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(record, 1..=3),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        entry_name(),
        kind(),
        select(vec![0o644, 0o755, 0o000, 0o555, 0o4755, 0o7777, 0o1777]),
        prop_oneof![
            40 => Just(0),
            5 => Just(1000),
            3 => Just(65534),
            1 => select(vec![1 << 32, 1 << 40]),
        ],
        select(vec![0, 1_000_000_000, 1 << 33, 1 << 40]),
        select(vec![NameIn::Header, NameIn::GnuLong, NameIn::Pax]),
        pax_records(),
        prop::option::weighted(
            0.1,
            select(vec![0, 1, 511, 1 << 20, 1 << 33, 1 << 40, u64::MAX >> 1]),
        ),
    )
        .prop_map(
            |(name, kind, mode, uid, mtime, name_in, pax, size_lie)| Entry {
                name,
                kind,
                mode,
                uid,
                mtime,
                name_in,
                pax,
                size_lie,
            },
        )
}

#[derive(Debug, Clone)]
enum TarSeed {
    /// A file of the corpus (some compressed).
    Corpus(Index),
    /// Entries built here; the bool says whether the end blocks follow.
    Built(Vec<Entry>, bool),
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    None,
    Gzip,
    #[cfg(feature = "xz")]
    Xz,
    #[cfg(feature = "zstd")]
    Zstd,
}

fn codec() -> impl Strategy<Value = Codec> {
    select(vec![
        Codec::None,
        Codec::None,
        Codec::Gzip,
        #[cfg(feature = "xz")]
        Codec::Xz,
        #[cfg(feature = "zstd")]
        Codec::Zstd,
    ])
}

fn compress(codec: Codec, bytes: Vec<u8>) -> Vec<u8> {
    match codec {
        Codec::None => bytes,
        Codec::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        }
        #[cfg(feature = "xz")]
        Codec::Xz => {
            let mut xz = xz2::write::XzEncoder::new(Vec::new(), 0);
            xz.write_all(&bytes).unwrap();
            xz.finish().unwrap()
        }
        #[cfg(feature = "zstd")]
        Codec::Zstd => zstd::encode_all(bytes.as_slice(), 1).unwrap(),
    }
}

#[derive(Debug, Clone)]
struct TarCase {
    seed: TarSeed,
    /// On the tar stream.
    mutations: Vec<Mutation>,
    codec: Codec,
    /// On the compressed stream.
    packed: Vec<Mutation>,
    options: Options,
}

impl TarCase {
    fn bytes(&self, scene: &Scene) -> Vec<u8> {
        let mut bytes = match &self.seed {
            TarSeed::Corpus(i) => TAR_SEEDS[i.index(TAR_SEEDS.len())].1.clone(),
            TarSeed::Built(entries, end) => tar_bytes(entries, &|s| scene.subst(s), *end),
        };
        mutate(&mut bytes, &self.mutations);
        let mut bytes = compress(self.codec, bytes);
        mutate(&mut bytes, &self.packed);
        bytes
    }
}

fn options() -> impl Strategy<Value = Options> {
    (
        0..3u8,
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::bool::weighted(0.8),
        select(vec![
            unpack::DEFAULT_MAX_SIZE,
            unpack::DEFAULT_MAX_SIZE,
            unpack::DEFAULT_MAX_SIZE,
            1 << 20,
            100,
        ]),
        prop_oneof![
            9 => Just(unpack::DEFAULT_MAX_ENTRIES),
            1 => Just(3),
        ],
    )
        .prop_map(
            |(whiteouts, devices, user_xattr, xattrs, max_size, max_entries)| {
                let opaque: &'static [&'static str] = if user_xattr {
                    &["user.overlay.opaque"]
                } else {
                    &["trusted.overlay.opaque"]
                };
                Options {
                    whiteouts: whiteouts == 1,
                    overlay_whiteouts: whiteouts == 2,
                    overlay_opaque_xattrs: opaque,
                    allow_devices: devices,
                    xattrs,
                    max_size,
                    max_entries,
                    ..Options::default()
                }
            },
        )
}

fn tar_case() -> impl Strategy<Value = TarCase> {
    let seed = prop_oneof![
        1 => any::<Index>().prop_map(TarSeed::Corpus),
        3 => (prop::collection::vec(entry(), 1..12), prop::bool::weighted(0.9))
            .prop_map(|(entries, end)| TarSeed::Built(entries, end)),
    ];
    (
        seed,
        prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec(mutation(), 1..4),
        ],
        codec(),
        prop_oneof![
            4 => Just(Vec::new()),
            1 => prop::collection::vec(mutation(), 1..3),
        ],
        options(),
    )
        .prop_map(|(seed, mutations, codec, packed, options)| TarCase {
            seed,
            mutations,
            codec,
            packed,
            options,
        })
}

proptest! {
    #![proptest_config(config(UNPACK_CASES))]

    #[test]
    fn unpacking_mutated_archives_never_writes_outside_the_target(case in tar_case()) {
        let scene = Scene::new();
        let bytes = case.bytes(&scene);
        let before = scene.snapshot();
        let (target, options) = (scene.target(), case.options.clone());
        let outcome = testkit::fuzz::within_deadline(move || {
            unpack::extract(bytes.as_slice(), &target, &options)
                .map(|_| ())
                .map_err(|e| chain(&e))
        });
        let after = scene.snapshot();
        prop_assert_eq!(after, before, "written outside the target; the unpacker said {:?}", outcome);
    }
}

/// The seeds parse: mutations start from archives that get all the way
/// through, not from ones refused at their first block.
#[test]
fn the_fuzzing_seeds_unpack_and_read() {
    for (name, bytes) in TAR_SEEDS.iter() {
        // GNU tar's PAX sparse format is refused (a known limit), and a
        // compression may not be built in.
        if name == "sparse-posix.tar"
            || name.ends_with(".xz") && cfg!(not(feature = "xz"))
            || name.ends_with(".zst") && cfg!(not(feature = "zstd"))
        {
            continue;
        }
        let scene = Scene::new();
        match unpack::extract(bytes.as_slice(), &scene.target(), &Options::default()) {
            Ok(stats) => assert!(stats.entries > 0, "{name}"),
            // Without privileges a device node is refused, as it should be.
            Err(builder::Error::Refused {
                reason: builder::Refusal::Device,
                ..
            }) if !testkit::is_root() => {}
            Err(e) => panic!("{name}: {}", chain(&e)),
        }
    }
    for (name, bytes) in ARCHIVE_SEEDS.iter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let archive = ImageArchive::open(&path).unwrap();
        let image = archive.image(None).unwrap();
        assert_eq!(image.layers.len(), 1, "{name}");
        for layer in &image.layers {
            let blob = archive.verified_layer(layer).unwrap();
            let scene = Scene::new();
            unpack::extract(blob, &scene.target(), &Options::default()).unwrap();
        }
    }
}

// ---------------------------------------------------------------------
// Image archives: never a panic, and a verified layer is what its digest
// says.

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The JSON documents of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doc {
    Config,
    Manifest,
    /// Every nested index.
    Index,
    /// `index.json`, or docker's `manifest.json`.
    Top,
}

#[derive(Debug, Clone)]
enum Op {
    Replace(Value),
    /// A key into an object, or an element onto an array.
    Insert(&'static str, Value),
    Remove,
}

/// An edit of one node (numbered depth first) of one document, made
/// before the document is hashed: the digests that name it stay right, so
/// the edit reaches the parser instead of the digest check.
#[derive(Debug, Clone)]
struct JsonEdit {
    doc: Doc,
    node: Index,
    op: Op,
}

fn deep(depth: usize) -> Value {
    (0..depth).fold(json!(0), |v, _| json!([v]))
}

fn hostile_json() -> impl Strategy<Value = Value> {
    let digest = |hex: &str| json!(format!("sha256:{hex}"));
    prop_oneof![
        4 => select(vec![
            Value::Null,
            json!(true),
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e308),
            json!(""),
            json!({}),
            json!([]),
            json!([{}]),
            digest(&"a".repeat(64)),
            digest(&"A".repeat(64)),
            digest(&"a".repeat(63)),
            digest("../../../../etc/passwd"),
            json!("sha512:00"),
            json!("sha256"),
            json!(MANIFEST),
            json!(INDEX),
            json!("application/vnd.docker.distribution.manifest.list.v2+json"),
            json!({"architecture": "s390x", "os": "linux"}),
            json!({"architecture": "amd64", "os": "windows"}),
            json!("../../../../x"),
            json!("/etc/passwd"),
            json!("fuzz"),
            json!("x".repeat(70_000)),
            deep(100),
            deep(200),
        ]),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(|n| json!(n)),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let key = select(vec![
        "manifests",
        "layers",
        "config",
        "mediaType",
        "size",
        "digest",
        "annotations",
        "platform",
        "urls",
        "Config",
        "Layers",
        "RepoTags",
        "rootfs",
        "diff_ids",
        REF_NAME,
        "x-unknown",
    ]);
    let op = prop_oneof![
        3 => hostile_json().prop_map(Op::Replace),
        1 => (key, hostile_json()).prop_map(|(k, v)| Op::Insert(k, v)),
        1 => Just(Op::Remove),
    ];
    (
        select(vec![Doc::Config, Doc::Manifest, Doc::Index, Doc::Top]),
        any::<Index>(),
        op,
    )
        .prop_map(|(doc, node, op)| JsonEdit { doc, node, op })
}

fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(child, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn edited(doc: Doc, mut value: Value, edits: &[JsonEdit]) -> Vec<u8> {
    for edit in edits.iter().filter(|e| e.doc == doc) {
        let mut all = Vec::new();
        pointers(&value, "", &mut all);
        let at = &all[edit.node.index(all.len())];
        match &edit.op {
            Op::Replace(new) => *value.pointer_mut(at).unwrap() = new.clone(),
            Op::Insert(key, new) => match value.pointer_mut(at).unwrap() {
                Value::Object(map) => {
                    map.insert(key.to_string(), new.clone());
                }
                Value::Array(items) => items.push(new.clone()),
                _ => {}
            },
            Op::Remove => {
                if let Some((parent, last)) = at.rsplit_once('/') {
                    match value.pointer_mut(parent).unwrap() {
                        Value::Object(map) => {
                            map.remove(&last.replace("~1", "/").replace("~0", "~"));
                        }
                        Value::Array(items) => {
                            items.remove(last.parse::<usize>().unwrap());
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    serde_json::to_vec(&value).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Oci,
    /// `docker save` of Docker 25 and later: blobs by digest.
    DockerBlobs,
    /// `docker save` before it: `<id>/layer.tar`, `<hex>.json`.
    DockerLegacy,
}

/// An edit of the archive's list of files.
#[derive(Debug, Clone)]
enum FileEdit {
    Drop(Index),
    /// The same name again, with other contents: whichever is read must
    /// be checked against the digest that names it.
    Duplicate(Index, Vec<u8>),
    Rename(Index, &'static str),
    /// The file made a symlink to `index.json`, or a directory.
    Kind(Index, Kind),
    /// A size field past the end of the archive.
    SizeLie(Index, u64),
}

fn file_edit() -> impl Strategy<Value = FileEdit> {
    prop_oneof![
        any::<Index>().prop_map(FileEdit::Drop),
        (any::<Index>(), data()).prop_map(|(i, d)| FileEdit::Duplicate(i, d)),
        (
            any::<Index>(),
            select(vec!["./{}", "/{}", "{}/", "../{}", "x/{}", "{}.json"])
        )
            .prop_map(|(i, f)| FileEdit::Rename(i, f)),
        (
            any::<Index>(),
            select(vec![
                Kind::Symlink("index.json".into()),
                Kind::Hardlink("index.json".into()),
                Kind::Dir,
                Kind::Fifo,
            ])
        )
            .prop_map(|(i, k)| FileEdit::Kind(i, k)),
        (
            any::<Index>(),
            select(vec![1 << 24, 1 << 40, u64::MAX >> 1])
        )
            .prop_map(|(i, n)| FileEdit::SizeLie(i, n)),
    ]
}

#[derive(Debug, Clone)]
struct BuiltImage {
    style: Style,
    /// Contents, and whether they are gzipped.
    layers: Vec<(Vec<u8>, bool)>,
    /// Indexes between `index.json` and the manifest.
    nesting: usize,
    /// Another platform's manifest (not in the archive) listed first.
    other_platform: bool,
    edits: Vec<JsonEdit>,
    files: Vec<FileEdit>,
}

#[derive(Debug, Clone)]
enum ImageSeed {
    Corpus(Index),
    Built(BuiltImage),
}

/// The image asked for: the first, the one the archive names, another.
#[derive(Debug, Clone, Copy)]
enum Named {
    First,
    Right,
    Wrong,
}

#[derive(Debug, Clone)]
struct ImageCase {
    seed: ImageSeed,
    mutations: Vec<Mutation>,
    named: Named,
}

impl ImageCase {
    fn reference(&self) -> Option<&'static str> {
        let oci = match &self.seed {
            ImageSeed::Corpus(i) => ARCHIVE_SEEDS[i.index(ARCHIVE_SEEDS.len())]
                .0
                .contains("oci"),
            ImageSeed::Built(image) => image.style == Style::Oci,
        };
        match self.named {
            Named::First => None,
            Named::Right if oci => Some("fuzz"),
            Named::Right => Some("localhost/fuzz:latest"),
            Named::Wrong => Some("nope"),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A valid layer: a small tree.
fn layer_tar() -> Vec<u8> {
    let entries = [
        Entry::file("etc", b"").with_kind(Kind::Dir),
        Entry::file("etc/hostname", b"fuzz\n"),
        Entry::file("bin/sh", b"#!\n"),
        Entry::file("link", b"").with_kind(Kind::Symlink("bin/sh".into())),
    ];
    tar_bytes(&entries, &|s| s.to_string(), true)
}

impl BuiltImage {
    fn files(&self) -> Vec<Entry> {
        let mut files = Vec::new();
        let blob = |files: &mut Vec<Entry>, bytes: &[u8]| {
            let hex = sha256_hex(bytes);
            files.push(Entry::file(&format!("blobs/sha256/{hex}"), bytes));
            (format!("sha256:{hex}"), bytes.len())
        };
        let stored: Vec<Vec<u8>> = self
            .layers
            .iter()
            .map(|(bytes, gzip)| {
                compress(if *gzip { Codec::Gzip } else { Codec::None }, bytes.clone())
            })
            .collect();
        // The legacy layout's layers are uncompressed, named by their diff_id.
        let diff_ids: Vec<String> = if self.style == Style::DockerLegacy {
            stored
                .iter()
                .map(|b| format!("sha256:{}", sha256_hex(b)))
                .collect()
        } else {
            self.layers
                .iter()
                .map(|(b, _)| format!("sha256:{}", sha256_hex(b)))
                .collect()
        };
        let config = edited(
            Doc::Config,
            json!({
                "architecture": go_arch(), "os": "linux",
                "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }),
            &self.edits,
        );
        if self.style == Style::Oci {
            files.push(Entry::file(
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            ));
            let (config, config_size) = blob(&mut files, &config);
            let layers: Vec<Value> = stored
                .iter()
                .zip(&self.layers)
                .map(|(bytes, (_, gzip))| {
                    let (digest, size) = blob(&mut files, bytes);
                    let media = if *gzip {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar"
                    };
                    json!({"mediaType": media, "digest": digest, "size": size})
                })
                .collect();
            let manifest = json!({
                "schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": config, "size": config_size},
                "layers": layers,
            });
            let (digest, size) = blob(&mut files, &edited(Doc::Manifest, manifest, &self.edits));
            let mut desc = json!({
                "mediaType": MANIFEST, "digest": digest, "size": size,
                "platform": {"architecture": go_arch(), "os": "linux"},
            });
            for _ in 0..self.nesting {
                let mut manifests = vec![desc];
                if self.other_platform {
                    let other = json!({
                        "mediaType": MANIFEST, "size": 5,
                        "digest": format!("sha256:{}", sha256_hex(b"other")),
                        "platform": {"architecture": "s390x", "os": "linux"},
                    });
                    manifests.insert(0, other);
                }
                let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
                let (digest, size) = blob(&mut files, &edited(Doc::Index, index, &self.edits));
                desc = json!({"mediaType": INDEX, "digest": digest, "size": size});
            }
            desc["annotations"] = json!({ REF_NAME: "fuzz" });
            let top = json!({"schemaVersion": 2, "manifests": [desc]});
            files.push(Entry::file(
                "index.json",
                &edited(Doc::Top, top, &self.edits),
            ));
        } else {
            let legacy = self.style == Style::DockerLegacy;
            let config_name = if legacy {
                let name = format!("{}.json", sha256_hex(&config));
                files.push(Entry::file(&name, &config));
                name
            } else {
                let name = format!("blobs/sha256/{}", sha256_hex(&config));
                files.push(Entry::file(&name, &config));
                name
            };
            let layers: Vec<String> = stored
                .iter()
                .enumerate()
                .map(|(i, bytes)| {
                    let name = if legacy {
                        format!("{i}/layer.tar")
                    } else {
                        format!("blobs/sha256/{}", sha256_hex(bytes))
                    };
                    files.push(Entry::file(&name, bytes));
                    name
                })
                .collect();
            let top = json!([{
                "Config": config_name,
                "RepoTags": ["localhost/fuzz:latest"],
                "Layers": layers,
            }]);
            files.push(Entry::file(
                "manifest.json",
                &edited(Doc::Top, top, &self.edits),
            ));
        }
        for edit in &self.files {
            let n = files.len();
            match edit {
                FileEdit::Drop(i) => {
                    files.remove(i.index(n));
                }
                FileEdit::Duplicate(i, data) => {
                    let name = files[i.index(n)].name.clone();
                    files.push(Entry::file(&name, data));
                }
                FileEdit::Rename(i, form) => {
                    let file = &mut files[i.index(n)];
                    file.name = form.replace("{}", &file.name);
                }
                FileEdit::Kind(i, kind) => files[i.index(n)].kind = kind.clone(),
                FileEdit::SizeLie(i, size) => files[i.index(n)].size_lie = Some(*size),
            }
            if files.is_empty() {
                break;
            }
        }
        files
    }
}

fn image_case() -> impl Strategy<Value = ImageCase> {
    let layer = (
        prop_oneof![
            2 => Just(layer_tar()),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ],
        any::<bool>(),
    );
    let built = (
        select(vec![
            Style::Oci,
            Style::Oci,
            Style::DockerBlobs,
            Style::DockerLegacy,
        ]),
        prop::collection::vec(layer, 0..3),
        prop_oneof![3 => Just(0usize), 2 => 1usize..3, 1 => 4usize..8],
        any::<bool>(),
        prop::collection::vec(json_edit(), 0..3),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec(file_edit(), 1..3),
        ],
    )
        .prop_map(|(style, layers, nesting, other_platform, edits, files)| {
            ImageSeed::Built(BuiltImage {
                style,
                layers,
                nesting,
                other_platform,
                edits,
                files,
            })
        });
    let seed = prop_oneof![
        3 => built,
        1 => any::<Index>().prop_map(ImageSeed::Corpus),
    ];
    (
        seed,
        prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec(mutation(), 1..4),
        ],
        select(vec![Named::First, Named::First, Named::Right, Named::Wrong]),
    )
        .prop_map(|(seed, mutations, named)| ImageCase {
            seed,
            mutations,
            named,
        })
}

fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Reads what the launcher reads: the image, each layer verified. Err says
/// what was wrong with what the reader handed out.
fn read_image(path: &Path, reference: Option<&str>) -> Result<(), String> {
    let Ok(archive) = ImageArchive::open(path) else {
        return Ok(());
    };
    if let Ok(index) = archive.index() {
        for d in index.manifests() {
            let _ = archive.read_blob(d.digest().as_ref(), d.size());
        }
    }
    let Ok(image) = archive.image(reference) else {
        return Ok(());
    };
    if !is_digest(&image.config_digest) {
        return Err(format!("config digest {:?}", image.config_digest));
    }
    for layer in &image.layers {
        // The launcher names a layer's cache directory after its digest.
        if !is_digest(&layer.digest) {
            return Err(format!("layer digest {:?}", layer.digest));
        }
        if let Ok(mut blob) = archive.verified_layer(layer) {
            let mut bytes = Vec::new();
            blob.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            let actual = format!("sha256:{}", sha256_hex(&bytes));
            if actual != layer.digest || bytes.len() as u64 != layer.size {
                return Err(format!(
                    "layer {layer:?} verified, but {} bytes with digest {actual} were read",
                    bytes.len()
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(ARCHIVE_CASES))]

    #[test]
    fn reading_mutated_image_archives_hands_out_only_verified_layers(case in image_case()) {
        let mut bytes = match &case.seed {
            ImageSeed::Corpus(i) => ARCHIVE_SEEDS[i.index(ARCHIVE_SEEDS.len())].1.clone(),
            ImageSeed::Built(image) => tar_bytes(&image.files(), &|s| s.to_string(), true),
        };
        mutate(&mut bytes, &case.mutations);
        let dir = scratch();
        let path = dir.path().join("image.tar");
        std::fs::write(&path, &bytes).unwrap();
        let reference = case.reference();
        let outcome = testkit::fuzz::within_deadline(move || read_image(&path, reference));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

// ---------------------------------------------------------------------
// Registry references: never a panic, and what parses prints back to
// itself.

#[cfg(feature = "fetch")]
mod reference {
    use super::*;
    use builder::registry::Reference;

    /// Each part of a reference: well formed, then odd.
    const REGISTRIES: (&[&str], &[&str]) = (
        &[
            "docker.io",
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "reg.example",
        ],
        &[
            "[::1]",
            "reg.example:0",
            "reg.example:65536",
            "reg.example:99999999999999999999",
            "reg.example:-1",
            "reg.example:",
            ":5000",
            "é.example",
            "xn--9ca.example",
            "reg.example:5000:6000",
            "LOCALHOST",
            "a..b",
            ".",
            "reg.example?x",
            " reg.example",
        ],
    );
    const REPOSITORIES: (&[&str], &[&str]) = (
        &["alpine", "library/alpine", "a/b/c/d/e", "a__b", "a.b-c"],
        &[
            "A", "a___b", "a..b", "a.-b", "-a", "a-", "a/", "/a", "ünï", "a b", "a/../b", ".", "",
        ],
    );
    const TAGS: (&[&str], &[&str]) = (
        &["latest", "1.2", "_x", "v1.2-rc_3"],
        &[".x", "-x", "", "ünï", "a:b", "a/b", "v1@x"],
    );

    /// A part of a reference, odd one time in four.
    fn part(
        (good, odd): (&'static [&'static str], &'static [&'static str]),
    ) -> BoxedStrategy<String> {
        prop_oneof![
            3 => select(good).prop_map(str::to_string),
            1 => select(odd).prop_map(str::to_string),
        ]
        .boxed()
    }

    fn digests() -> Vec<String> {
        vec![
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "0123456789abcdef".repeat(4)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(128)),
            "sha256:".to_string(),
            "sha256:../../x".to_string(),
            "md5:00".to_string(),
            String::new(),
        ]
    }

    fn reference_text() -> impl Strategy<Value = String> {
        let composed = (
            prop::option::of(part(REGISTRIES)),
            part(REPOSITORIES),
            prop::option::of(prop_oneof![
                6 => part(TAGS),
                1 => select(vec!["x".repeat(128), "x".repeat(129)]),
            ]),
            prop::option::weighted(0.3, select(digests())),
        )
            .prop_map(|(registry, repo, tag, digest)| {
                let mut text = registry.map(|r| format!("{r}/")).unwrap_or_default();
                text.push_str(&repo);
                if let Some(tag) = tag {
                    text.push(':');
                    text.push_str(&tag);
                }
                if let Some(digest) = digest {
                    text.push('@');
                    text.push_str(&digest);
                }
                text
            });
        // Characters that reach the parser's splits.
        let mutated = (
            composed.clone(),
            prop::collection::vec(
                (
                    any::<Index>(),
                    select(vec!['/', ':', '@', '.', 'A', 'é', '\0', ' ']),
                ),
                1..4,
            ),
        )
            .prop_map(|(text, inserts)| {
                let mut chars: Vec<char> = text.chars().collect();
                for (at, c) in inserts {
                    chars.insert(at.index(chars.len() + 1), c);
                }
                chars.into_iter().collect()
            });
        prop_oneof![
            4 => composed,
            2 => mutated,
            1 => any::<String>(),
        ]
    }

    fn check(text: &str) -> Result<(), String> {
        let Ok(r) = Reference::parse(text) else {
            return Ok(());
        };
        let _ = (r.is_loopback(), r.api_host(), r.target());
        let again = Reference::parse(&r.to_string())
            .map_err(|e| format!("{text:?} parsed as {r:?}, which prints as {r}: {e}"))?;
        if again != r {
            return Err(format!(
                "{text:?} parsed as {r:?}, printed back as {again:?}"
            ));
        }
        if r.registry.is_empty() || r.registry.contains(['/', '@']) {
            return Err(format!("{text:?}: registry {:?}", r.registry));
        }
        if r.digest.as_deref().is_some_and(|d| !is_digest(d)) {
            return Err(format!("{text:?}: digest {:?}", r.digest));
        }
        if r.tag
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.len() > 128)
        {
            return Err(format!("{text:?}: tag {:?}", r.tag));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(REFERENCE_CASES))]

        #[test]
        fn parsed_references_print_back_to_themselves(text in reference_text()) {
            let outcome = testkit::fuzz::within_deadline(move || check(&text));
            prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        }
    }
}

// ---------------------------------------------------------------------
// Image definitions: never a panic, and what is accepted is complete.

mod definition {
    use super::*;
    use builder::def::{ImageDef, Source};

    fn seeds() -> Vec<String> {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        let mut seeds: Vec<String> = std::fs::read_dir(images)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("image.toml")).ok())
            .collect();
        assert!(!seeds.is_empty(), "no images/*/image.toml");
        let sha = "0".repeat(64);
        seeds.push(format!(
            "tag = \"t\"\n[rootfs]\nsource = \"r.tar\"\nsha256 = \"{sha}\"\n"
        ));
        seeds.push("tag = \"t\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\"]\n".into());
        seeds
    }

    /// Nesting deep enough to exhaust a recursive parser's stack is an
    /// error (toml's parser does not recurse). Too slow to parse in every
    /// case, so not a seed.
    #[test]
    fn deeply_nested_definitions_are_refused_without_exhausting_the_stack() {
        for text in [
            format!("tag = {}", "[".repeat(100_000)),
            format!("tag = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("tag = {}", "{a = ".repeat(100_000)),
            format!("[{}]", vec!["a"; 100_000].join(".")),
        ] {
            let err = testkit::fuzz::within_deadline(move || check(&text).map(|()| "accepted"));
            assert!(err.is_ok());
        }
    }

    const KEYS: &[&str] = &[
        "tag",
        "rootfs",
        "source",
        "sha256",
        "programs",
        "optional_programs",
        "config",
        "entrypoint",
        "cmd",
        "env",
        "workdir",
        "user",
        "labels",
        "stop_signal",
        "colour",
        "\"quoted key\"",
        "\"\"",
        "rootfs.source",
        "config.labels.x",
    ];

    fn value() -> impl Strategy<Value = String> {
        let sha = "0".repeat(64);
        let leaf = prop_oneof![
            4 => select(vec![
                "\"t\"".to_string(),
                "\"\"".to_string(),
                "1".to_string(),
                "-1".to_string(),
                "9223372036854775808".to_string(),
                "1.5".to_string(),
                "inf".to_string(),
                "nan".to_string(),
                "true".to_string(),
                "1979-05-27T07:32:00Z".to_string(),
                "\"host\"".to_string(),
                "\"https://x/r.tar\"".to_string(),
                "\"file:///etc/shadow\"".to_string(),
                "\"../../r.tar\"".to_string(),
                "\"sh\"".to_string(),
                format!("\"{sha}\""),
                format!("\"{}\"", sha.to_uppercase().replace('0', "A")),
                "'literal'".to_string(),
                "\"\"\"multi\nline\"\"\"".to_string(),
                "\"\\u0000\"".to_string(),
                "\"\\uD800\"".to_string(),
                "\"ünï\"".to_string(),
            ]),
            1 => any::<String>().prop_map(|s| format!("{s:?}")),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((select(KEYS), inner), 0..3).prop_map(|kv| {
                    let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{{}}}", kv.join(", "))
                }),
            ]
        })
    }

    fn document() -> impl Strategy<Value = String> {
        let table = select(vec![
            "",
            "[rootfs]",
            "[config]",
            "[config.labels]",
            "[[rootfs]]",
            "[rootfs.extra]",
            "[unknown]",
            "[config.config]",
            "[rootfs]\n[rootfs]",
        ]);
        let built = prop::collection::vec(
            (table, prop::collection::vec((select(KEYS), value()), 0..5)),
            1..4,
        )
        .prop_map(|tables| {
            let mut text = String::new();
            for (header, pairs) in tables {
                text.push_str(header);
                text.push('\n');
                for (k, v) in pairs {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text
        });
        let mutated = (
            select(seeds()),
            prop::collection::vec(
                (
                    any::<Index>(),
                    select(vec![
                        '[', ']', '"', '=', '\n', '#', '.', ',', '{', '}', '\\', 'x', '\0', 'é',
                    ]),
                    any::<bool>(),
                ),
                0..6,
            ),
        )
            .prop_map(|(seed, edits)| {
                let mut chars: Vec<char> = seed.chars().collect();
                for (at, c, insert) in edits {
                    let at = at.index(chars.len() + 1);
                    if insert || at == chars.len() {
                        chars.insert(at, c);
                    } else {
                        chars[at] = c;
                    }
                }
                chars.into_iter().collect()
            });
        prop_oneof![2 => built, 2 => mutated]
    }

    fn check(text: &str) -> Result<(), String> {
        let Ok(def) = ImageDef::parse(text, Path::new("image.toml"), PathBuf::from("/defs")) else {
            return Ok(());
        };
        let _ = def.command();
        let complete = !def.tag.is_empty()
            && match def.source() {
                Source::Host(programs, _) => !programs.is_empty(),
                Source::Url(_) | Source::File(_) => def.rootfs.sha256.as_deref().is_some_and(|s| {
                    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                }),
                // Pinned by digest where they are read, or nothing to pin.
                Source::Registry(_) | Source::Definition(_) | Source::Scratch => {
                    def.rootfs.sha256.is_none()
                }
            };
        if complete {
            Ok(())
        } else {
            Err(format!("{text:?} accepted as {def:?}"))
        }
    }

    proptest! {
        #![proptest_config(config(DEFINITION_CASES))]

        #[test]
        fn image_definitions_are_accepted_only_when_complete(text in document()) {
            let outcome = testkit::fuzz::within_deadline(move || check(&text));
            prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        }
    }
}
