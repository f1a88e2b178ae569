//! A detached container's stdout and stderr, as its monitor writes them and
//! `launcher logs` reads them back.
//!
//! One record per line, in the CRI format that podman's `k8s-file` driver
//! and the kubelet use: `TIME STREAM F|P CONTENT`, TIME in RFC 3339, STREAM
//! `stdout` or `stderr`, `F` for a line that ended with a newline (not
//! stored) and `P` for part of one (what a read returned before the
//! newline came). Any byte but `\n` may be in CONTENT, so the workload's
//! output comes back byte for byte.
//!
//! The file is capped: a record that would take `log` past the cap
//! (`CRADLE_LOG_MAX_SIZE`, default 10m) first renames it to `log.1`,
//! replacing the one before, so at most twice the cap is kept.

use crate::state;
use crate::{Error, Result};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const LOG: &str = "log";
pub const ROTATED: &str = "log.1";
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;

/// The cap from `CRADLE_LOG_MAX_SIZE` (docker's units), else the default.
pub fn max_size() -> Result<u64> {
    match std::env::var("CRADLE_LOG_MAX_SIZE") {
        Ok(text) if !text.is_empty() => match crate::resources::parse_bytes(&text) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::Invalid {
                what: "CRADLE_LOG_MAX_SIZE (a size: `10m`)",
                value: text,
            }),
        },
        _ => Ok(DEFAULT_MAX_SIZE),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends records to `dir/log`, rotating at the cap.
pub struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl Writer {
    pub fn open(dir: &Path, max: u64) -> Result<Writer> {
        let path = dir.join(LOG);
        let file = open_append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            dir: dir.to_path_buf(),
            file,
            size,
            max,
        })
    }

    /// Writes what one read of `stream` returned: a record per line, the
    /// last one partial unless `data` ends with a newline.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let time = state::rfc3339(state::now());
        let mut rest = data;
        while !rest.is_empty() {
            let (line, full, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            let mut record = format!(
                "{time} {} {} ",
                stream.as_str(),
                if full { 'F' } else { 'P' }
            )
            .into_bytes();
            record.extend_from_slice(line);
            record.push(b'\n');
            self.append(&record);
            rest = next;
        }
    }

    fn append(&mut self, record: &[u8]) {
        if self.size > 0 && self.size + record.len() as u64 > self.max {
            self.rotate();
        }
        if self.file.write_all(record).is_ok() {
            self.size += record.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let (log, old) = (self.dir.join(LOG), self.dir.join(ROTATED));
        if fs::rename(&log, &old).is_err() {
            // Cannot rotate: start over in place rather than grow past the cap.
            let _ = self.file.set_len(0);
            self.size = 0;
            return;
        }
        if let Ok(file) = open_append(&log) {
            self.file = file;
            self.size = 0;
        }
    }
}

fn open_append(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("opening the log", path))
}

/// One record: when it was read, its stream, and the bytes to write (with
/// the newline of an `F` record).
struct Entry {
    time: Vec<u8>,
    stream: Stream,
    data: Vec<u8>,
}

/// A record's line, parsed; a line that is not a record is skipped.
fn parse(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = parts.next()?.to_vec();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let mut data = parts.next().unwrap_or_default().to_vec();
    if full {
        data.push(b'\n');
    }
    Some(Entry { time, stream, data })
}

/// Where `launcher logs` writes: the container's stdout to `out`, its
/// stderr to `err`; with `timestamps` (`-t`), each line after the time it
/// was read, as docker prints it.
pub struct Output<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    timestamps: bool,
    /// Per stream: the next byte starts a line.
    line_start: [bool; 2],
}

impl<'a> Output<'a> {
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write, timestamps: bool) -> Self {
        Output {
            out,
            err,
            timestamps,
            line_start: [true; 2],
        }
    }

    fn emit(&mut self, entry: &Entry) -> std::io::Result<()> {
        let (to, start) = match entry.stream {
            Stream::Stdout => (&mut *self.out, &mut self.line_start[0]),
            Stream::Stderr => (&mut *self.err, &mut self.line_start[1]),
        };
        if self.timestamps && *start {
            to.write_all(&entry.time)?;
            to.write_all(b" ")?;
        }
        *start = entry.data.ends_with(b"\n");
        to.write_all(&entry.data).and_then(|()| to.flush())
    }
}

/// `launcher logs`: the records of `dir` (`log.1`, then `log`), the last
/// `tail` lines only when given; with `follow`, then what is appended
/// (across rotations) until `done` says the container is finished and
/// everything written is out.
pub fn show(
    dir: &Path,
    tail: Option<usize>,
    follow: bool,
    done: &dyn Fn() -> bool,
    output: &mut Output<'_>,
) -> Result<()> {
    let write_err = |e: std::io::Error| Error::io("writing", "the logs")(e);
    let log = dir.join(LOG);
    // Opened before log.1 is read: a rotation in between then leaves this
    // one as log.1, read through this descriptor.
    let mut current = File::open(&log).ok();
    let mut records = Vec::new();
    if let Ok(old) = File::open(dir.join(ROTATED))
        && current.as_ref().is_none_or(|c| !same_file(c, &old))
    {
        read_records(old, &mut records);
    }
    let mut offset = 0;
    if let Some(file) = &mut current {
        offset = read_records(&mut *file, &mut records);
    }
    let skip = tail.map_or(0, |n| lines_before_tail(&records, n));
    for entry in &records[skip..] {
        output.emit(entry).map_err(write_err)?;
    }
    if !follow {
        return Ok(());
    }
    let mut pending = Vec::new();
    loop {
        // Read `done` first: when it says done, everything written is in
        // the file by now and one more read gets it all.
        let finished = done();
        if current.is_none() {
            current = File::open(&log).ok();
            offset = 0;
        }
        if let Some(file) = &mut current {
            offset += read_new(file, offset, &mut pending, output).map_err(write_err)?;
            // Rotated: this one is complete (log.1 now); go on in the new log.
            let rotated = fs::metadata(&log).map_or(true, |m| m.ino() != ino(file));
            if rotated {
                offset += read_new(file, offset, &mut pending, output).map_err(write_err)?;
                current = None;
                continue;
            }
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ino(file: &File) -> u64 {
    file.metadata().map(|m| m.ino()).unwrap_or(0)
}

fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Reads whole records from `file` into `records`; returns the bytes
/// consumed (a last line without its newline, still being written, is not).
fn read_records(file: impl Read, records: &mut Vec<Entry>) -> u64 {
    let mut reader = BufReader::new(file);
    let mut consumed = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return consumed,
            Ok(n) if line.ends_with(b"\n") => {
                consumed += n as u64;
                records.extend(parse(&line[..n - 1]));
            }
            Ok(_) => return consumed,
        }
    }
}

/// Emits the whole records appended to `file` since `offset`; returns the
/// bytes consumed. `pending` keeps nothing across calls but is reused.
fn read_new(
    file: &mut File,
    offset: u64,
    pending: &mut Vec<Entry>,
    output: &mut Output<'_>,
) -> std::io::Result<u64> {
    file.seek(std::io::SeekFrom::Start(offset))?;
    pending.clear();
    let consumed = read_records(&mut *file, pending);
    for entry in pending.iter() {
        output.emit(entry)?;
    }
    Ok(consumed)
}

/// How many records to skip so that the last `n` lines remain (a line may
/// span several `P` records and its `F`).
fn lines_before_tail(records: &[Entry], n: usize) -> usize {
    if n == 0 {
        return records.len();
    }
    let mut ends = 0;
    for (i, entry) in records.iter().enumerate().rev() {
        if entry.data.ends_with(b"\n") {
            ends += 1;
            if ends > n {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(dir: &Path, tail: Option<usize>) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut output = Output::new(&mut out, &mut err, false);
        show(dir, tail, false, &|| true, &mut output).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn streams_and_partial_lines_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), 1 << 20).unwrap();
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"oops\n");
        w.write(Stream::Stdout, b"o\n\nthree \x01 F P\n");
        let (out, err) = shown(dir.path(), None);
        assert_eq!(out, "one\ntwo\n\nthree \x01 F P\n");
        assert_eq!(err, "oops\n");
        let text = fs::read_to_string(dir.path().join(LOG)).unwrap();
        assert!(
            text.lines().nth(1).unwrap().contains(" stdout P tw"),
            "{text}"
        );
        assert_eq!(shown(dir.path(), Some(2)).0, "\nthree \x01 F P\n");
        assert_eq!(shown(dir.path(), Some(0)).0, "");
    }

    #[test]
    fn timestamps_start_each_line_of_each_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), 1 << 20).unwrap();
        w.write(Stream::Stdout, b"a");
        w.write(Stream::Stderr, b"e\n");
        w.write(Stream::Stdout, b"b\nc\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut output = Output::new(&mut out, &mut err, true);
        show(dir.path(), None, false, &|| true, &mut output).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for (line, text) in lines.iter().zip(["ab", "c"]) {
            let (time, rest) = line.split_once(' ').unwrap();
            assert!(time.ends_with('Z') && time.contains('T'), "{line}");
            assert_eq!(rest, text);
        }
        let err = String::from_utf8(err).unwrap();
        assert!(err.ends_with(" e\n") && err.contains('T'), "{err}");
    }

    #[test]
    fn rotates_once_at_the_cap_and_reads_across() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), 200).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        let size = |n| fs::metadata(dir.path().join(n)).unwrap().len();
        assert!(size(LOG) <= 200 && size(ROTATED) <= 200);
        let out = shown(dir.path(), None).0;
        assert!(out.ends_with("line 18\nline 19\n"), "{out}");
        assert!(!out.contains("line 0\n"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let first: usize = lines[0].strip_prefix("line ").unwrap().parse().unwrap();
        let expected: Vec<String> = (first..20).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn follow_reads_what_is_appended_until_done() {
        let dir = tempfile::tempdir().unwrap();
        // Some six records a file, one every 20 ms: rotations come slower
        // than the follower looks (50 ms), as they must for none to be lost.
        let mut w = Writer::open(dir.path(), 300).unwrap();
        w.write(Stream::Stdout, b"first\n");
        let path = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            for i in 0..30 {
                w.write(Stream::Stdout, format!("n{i}\n").as_bytes());
                std::thread::sleep(Duration::from_millis(20));
            }
            fs::write(path.join("done"), "").unwrap();
        });
        let done_path = dir.path().join("done");
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut output = Output::new(&mut out, &mut err, false);
        show(dir.path(), None, true, &|| done_path.exists(), &mut output).unwrap();
        writer.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        let want: String = std::iter::once("first\n".to_string())
            .chain((0..30).map(|i| format!("n{i}\n")))
            .collect();
        assert_eq!(text, want);
    }
}
