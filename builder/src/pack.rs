//! Pack step: reproducible tar streams. A directory tree or a single file
//! becomes a gzipped layer blob with its digests; the OCI layout becomes the
//! image archive, written to a temporary file beside the output, synced and
//! renamed into place.
//!
//! Reproducible means: entries in byte order of their names, parents first;
//! numeric owners only; mtimes clamped to the epoch (`SOURCE_DATE_EPOCH`);
//! gzip header mtime 0 and OS "unknown"; one backend (zlib-rs) at one level,
//! in blocks of a fixed size (compressed in parallel, pigz-style).

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// The gzip level of every layer; changing it changes every digest.
pub const GZIP_LEVEL: u32 = 6;

/// A content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// A layer: its gzipped blob and the digest of the uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub blob: Blob,
    /// `sha256:<hex>` of the uncompressed tar (the config's `diff_ids`).
    pub diff_id: String,
}

/// The blob directory of an OCI layout being assembled (`blobs/sha256`).
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    pub fn create(dir: PathBuf) -> Result<Blobs> {
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        Ok(Blobs { dir })
    }

    /// The directory the blobs are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with `digest` (`sha256:<hex>`) is.
    pub fn path_of(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `bytes` (a config or manifest).
    pub fn add(&self, bytes: &[u8]) -> Result<Blob> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let path = self.path_of(&digest);
        std::fs::write(&path, bytes).map_err(Error::io("writing", &path))?;
        Ok(Blob {
            digest,
            size: bytes.len() as u64,
        })
    }

    /// Every blob, by name (their digests), for the archive.
    fn list(&self) -> Result<Vec<(OsString, PathBuf)>> {
        let mut names: Vec<OsString> = std::fs::read_dir(&self.dir)
            .and_then(|dir| dir.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(Error::io("listing", &self.dir))?;
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| (n.clone(), self.dir.join(n)))
            .collect())
    }
}

/// How tree entries are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Later mtimes are clamped to this (`SOURCE_DATE_EPOCH`, else 0).
    pub epoch: u64,
    /// Owner recorded for every entry instead of the file's own, for a
    /// rootfs unpacked without privileges (its files are all ours).
    pub owner: Option<(u64, u64)>,
}

/// The tree at `root` as a layer; `root` itself is not an entry.
pub fn layer_from_dir(root: &Path, blobs: &Blobs, stamp: Stamp) -> Result<LayerBlob> {
    write_layer(blobs, |tar| {
        let mut links = HashMap::new();
        append_tree(tar, root, Path::new(""), stamp, &mut links)
    })
}

/// The tree at `root` as a layer written to `output` (atomically: built
/// beside it, then renamed).
pub fn layer_file_from_dir(root: &Path, output: &Path, stamp: Stamp) -> Result<LayerBlob> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let scratch = tempfile::Builder::new()
        .prefix(".layer-")
        .tempdir_in(dir)
        .map_err(Error::io("creating a work directory in", dir))?;
    let blobs = Blobs::create(scratch.path().to_path_buf())?;
    let layer = layer_from_dir(root, &blobs, stamp)?;
    let blob = blobs.path_of(&layer.blob.digest);
    readable(&blob)?;
    std::fs::rename(&blob, output).map_err(Error::io("renaming into", output))?;
    Ok(layer)
}

/// A layer holding one file, `file`, at `name` (e.g. `sbin/cradle-init`),
/// with its parent directories, owned by root.
pub fn layer_with_file(
    file: &Path,
    name: &str,
    mode: u32,
    blobs: &Blobs,
    epoch: u64,
) -> Result<LayerBlob> {
    write_layer(blobs, |tar| {
        let name = Path::new(name);
        let parents: Vec<&Path> = name
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        for dir in parents.into_iter().rev() {
            let mut header = header(tar::EntryType::Directory, 0o755, (0, 0), epoch);
            tar.append_data(&mut header, dir, io::empty())
                .map_err(Error::io("adding to the layer", dir))?;
        }
        let size = std::fs::metadata(file)
            .map_err(Error::io("reading", file))?
            .len();
        let mut header = header(tar::EntryType::Regular, mode, (0, 0), epoch);
        header.set_size(size);
        let reader = File::open(file).map_err(Error::io("opening", file))?;
        tar.append_data(&mut header, name, reader)
            .map_err(Error::io("adding to the layer", file))
    })
}

/// A header with the fields every entry shares.
pub(crate) fn header(
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(owner.0);
    header.set_gid(owner.1);
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

pub(crate) type Tar = tar::Builder<ChunkWriter>;

fn append_tree(
    tar: &mut Tar,
    root: &Path,
    rel: &Path,
    stamp: Stamp,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<OsString> = std::fs::read_dir(&dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(Error::io("listing", &dir))?;
    // OsString orders by bytes: the same order on every machine and locale.
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("reading", &path))?;
        append_entry(tar, &path, &rel, &meta, stamp, links)?;
        if meta.is_dir() {
            append_tree(tar, root, &rel, stamp, links)?;
        }
    }
    Ok(())
}

fn append_entry(
    tar: &mut Tar,
    path: &Path,
    rel: &Path,
    meta: &std::fs::Metadata,
    stamp: Stamp,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    use tar::EntryType as T;
    let failed = Error::io("adding to the layer", path);
    let owner = stamp
        .owner
        .unwrap_or((u64::from(meta.uid()), u64::from(meta.gid())));
    let mtime = (meta.mtime().max(0) as u64).min(stamp.epoch);
    let mode = meta.mode() & 0o7777;
    let kind = meta.file_type();
    let entry_type = if kind.is_dir() {
        T::Directory
    } else if kind.is_file() {
        T::Regular
    } else if kind.is_symlink() {
        T::Symlink
    } else if kind.is_char_device() {
        T::Char
    } else if kind.is_block_device() {
        T::Block
    } else if kind.is_fifo() {
        T::Fifo
    } else {
        // Sockets cannot be archived; tar skips them too.
        return Ok(());
    };
    let mut header = header(entry_type, mode, owner, mtime);
    let xattrs = xattrs_of(path).map_err(Error::io("reading extended attributes of", path))?;
    if !xattrs.is_empty() {
        let records = xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        tar.append_pax_extensions(records)
            .map_err(Error::io("adding to the layer", path))?;
    }
    match entry_type {
        T::Regular if meta.nlink() > 1 => {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                header.set_entry_type(T::Link);
                return tar.append_link(&mut header, rel, first).map_err(failed);
            }
            links.insert((meta.dev(), meta.ino()), rel.to_path_buf());
            append_file(tar, &mut header, path, rel, meta.len())
        }
        T::Regular => append_file(tar, &mut header, path, rel, meta.len()),
        T::Symlink => {
            let target =
                std::fs::read_link(path).map_err(Error::io("reading the symlink", path))?;
            tar.append_link(&mut header, rel, target).map_err(failed)
        }
        // A FIFO's device fields hold zero, not the blanks `new_gnu` leaves
        // there: readers that parse them (the tar crate, so our own unpack
        // and the launcher's cache) refused the entry, and the image with it.
        T::Char | T::Block | T::Fifo => {
            let rdev = if entry_type == T::Fifo {
                0
            } else {
                meta.rdev()
            };
            header
                .set_device_major(libc::major(rdev))
                .map_err(Error::io("adding to the layer", path))?;
            header
                .set_device_minor(libc::minor(rdev))
                .map_err(Error::io("adding to the layer", path))?;
            tar.append_data(&mut header, rel, io::empty())
                .map_err(failed)
        }
        _ => tar
            .append_data(&mut header, rel, io::empty())
            .map_err(failed),
    }
}

fn append_file(
    tar: &mut Tar,
    header: &mut tar::Header,
    path: &Path,
    rel: &Path,
    size: u64,
) -> Result<()> {
    header.set_size(size);
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let capacity = (size as usize).clamp(512, 256 * 1024);
    tar.append_data(header, rel, BufReader::with_capacity(capacity, file))
        .map_err(Error::io("adding to the layer", path))
}

/// The extended attributes of `path` (not following a symlink), as PAX
/// `SCHILY.xattr.` records, by name. SELinux labels belong to the build
/// machine and are left out, as Docker does.
fn xattrs_of(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    Ok(crate::upper::read_xattrs(path)?
        .into_iter()
        .filter(|(name, _)| name != "security.selinux")
        .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value))
        .collect())
}

/// Runs `fill` on a tar builder whose bytes are gzipped and hashed on a
/// second thread, then stores the result as a blob.
pub(crate) fn write_layer(
    blobs: &Blobs,
    fill: impl FnOnce(&mut Tar) -> Result<()>,
) -> Result<LayerBlob> {
    let temp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(&blobs.dir)
        .map_err(Error::io("creating a temporary file in", &blobs.dir))?;
    let file = temp
        .as_file()
        .try_clone()
        .map_err(Error::io("opening", temp.path()))?;
    let (tx, rx) = sync_channel(8);
    let (diff_id, digest, size) = std::thread::scope(|scope| {
        let compressor = scope.spawn(move || compress(rx, file));
        let mut tar = tar::Builder::new(ChunkWriter::new(tx));
        let filled = fill(&mut tar).and_then(|()| {
            let mut writer = tar
                .into_inner()
                .map_err(Error::io("finishing", temp.path()))?;
            writer.flush().map_err(Error::io("finishing", temp.path()))
        });
        let compressed = compressor
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(Error::io("writing", temp.path()));
        // A failed compressor makes the tar side fail too; its error is the cause.
        let compressed = compressed?;
        filled.map(|()| compressed)
    })?;
    let blob = Blob {
        digest: format!("sha256:{digest}"),
        size,
    };
    let path = blobs.path_of(&blob.digest);
    temp.persist(&path)
        .map_err(|e| Error::io("writing", &path)(e.error))?;
    Ok(LayerBlob {
        blob,
        diff_id: format!("sha256:{diff_id}"),
    })
}

/// Input bytes per independently compressed gzip block.
const BLOCK: usize = 1 << 20;
/// Deflate's window: each block is primed with this much of the one before.
const WINDOW: usize = 32 * 1024;

/// What the ordered writer receives.
enum Piece {
    /// Block `index`, deflated and sync-flushed.
    Block(usize, Vec<u8>),
    /// There were this many blocks; then the gzip trailer (CRC-32, size).
    End(usize, [u8; 8]),
}

/// Gzips the chunks into `file` on every core, as pigz does: the input is
/// cut into [`BLOCK`]s, each deflated on its own (primed with the previous
/// 32 KiB) and ended with a sync flush, and the pieces are written in order,
/// closed by an empty final block. The bytes depend on the input, the level
/// and `BLOCK`, never on the number of threads. Returns the hex sha256 of
/// the input and of the output, and the output's size.
fn compress(rx: Receiver<Vec<u8>>, file: File) -> io::Result<(String, String, u64)> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    compress_with(rx, file, workers)
}

fn compress_with(
    rx: Receiver<Vec<u8>>,
    file: File,
    workers: usize,
) -> io::Result<(String, String, u64)> {
    let (job_tx, job_rx) = sync_channel::<(usize, Vec<u8>, Vec<u8>)>(workers * 2);
    // Shared by the workers only: when they are all gone, sending fails
    // instead of blocking.
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    let (piece_tx, piece_rx) = sync_channel::<io::Result<Piece>>(workers * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (job_rx, piece_tx) = (job_rx.clone(), piece_tx.clone());
            scope.spawn(move || {
                loop {
                    let job = job_rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|rx| rx.recv().map_err(|_| ()));
                    let Ok((index, dictionary, block)) = job else {
                        return;
                    };
                    let piece =
                        deflate_block(&dictionary, &block).map(|bytes| Piece::Block(index, bytes));
                    if piece_tx.send(piece).is_err() {
                        return;
                    }
                }
            });
        }
        drop(job_rx);
        let writer = scope.spawn(move || write_pieces(piece_rx, file));
        let diff_id = split_into_blocks(rx, job_tx, &piece_tx);
        drop(piece_tx);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (digest, size) = written?;
        Ok((diff_id, digest, size))
    })
}

/// Groups the chunks into blocks for the workers, hashing the input on the
/// way; ends with the trailer. Returns the hex sha256 of the input.
fn split_into_blocks(
    rx: Receiver<Vec<u8>>,
    jobs: SyncSender<(usize, Vec<u8>, Vec<u8>)>,
    pieces: &SyncSender<io::Result<Piece>>,
) -> String {
    let mut sha = Sha256::new();
    let mut crc = flate2::Crc::new();
    let mut block = Vec::with_capacity(BLOCK);
    let mut dictionary = Vec::new();
    let mut index = 0;
    let mut send = |block: Vec<u8>, dictionary: &mut Vec<u8>| {
        let next = block[block.len().saturating_sub(WINDOW)..].to_vec();
        let sent = jobs
            .send((index, std::mem::replace(dictionary, next), block))
            .is_ok();
        index += 1;
        sent
    };
    for chunk in rx {
        sha.update(&chunk);
        crc.update(&chunk);
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            let n = rest.len().min(BLOCK - block.len());
            block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if block.len() == BLOCK
                && !send(
                    std::mem::replace(&mut block, Vec::with_capacity(BLOCK)),
                    &mut dictionary,
                )
            {
                return String::new();
            }
        }
    }
    if !block.is_empty() {
        send(block, &mut dictionary);
    }
    drop(jobs);
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.sum().to_le_bytes());
    trailer[4..].copy_from_slice(&crc.amount().to_le_bytes());
    let _ = pieces.send(Ok(Piece::End(index, trailer)));
    hex::encode(sha.finalize())
}

/// Raw deflate of `block` at [`GZIP_LEVEL`], primed with `dictionary`,
/// ended with a sync flush (byte-aligned, not final).
fn deflate_block(dictionary: &[u8], block: &[u8]) -> io::Result<Vec<u8>> {
    let mut deflate = flate2::Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(block.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(block.len() / 4 + 4096);
        }
        let consumed = deflate.total_in() as usize;
        deflate
            .compress_vec(&block[consumed..], &mut out, flate2::FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // zlib: the flush is complete when output space is left over.
        if deflate.total_in() as usize == block.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

/// Writes the gzip header, the blocks in order, an empty final block and
/// the trailer; returns the hex sha256 and size of what it wrote.
fn write_pieces(pieces: Receiver<io::Result<Piece>>, file: File) -> io::Result<(String, u64)> {
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        count: 0,
    };
    // Magic, deflate, no flags, mtime 0, no extra flags, OS unknown (255).
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0;
    let mut end = None;
    for piece in pieces {
        match piece? {
            Piece::Block(index, bytes) => {
                waiting.insert(index, bytes);
            }
            Piece::End(count, trailer) => end = Some((count, trailer)),
        }
        while let Some(bytes) = waiting.remove(&next) {
            out.write_all(&bytes)?;
            next += 1;
        }
        if let Some((count, trailer)) = end
            && next == count
        {
            // A final fixed-Huffman block holding only end-of-block.
            out.write_all(&[0x03, 0x00])?;
            out.write_all(&trailer)?;
            let file = out
                .inner
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            return Ok((hex::encode(out.hasher.finalize()), out.count));
        }
    }
    Err(io::Error::other("the layer was cut short"))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Collects writes into 256 KiB chunks for the compressing thread.
pub(crate) struct ChunkWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl ChunkWriter {
    fn new(tx: SyncSender<Vec<u8>>) -> ChunkWriter {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::other("the compressing thread stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Mode 0644: temporary files are made 0600, an image is for everyone to read.
fn readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(Error::io("setting the mode of", path))
}

/// Writes the OCI layout (`oci-layout`, `index.json`, the blobs) as a tar
/// at `output`, atomically: a temporary file in the same directory, synced,
/// then renamed over `output`.
pub fn archive(blobs: &Blobs, index: &[u8], output: &Path, epoch: u64) -> Result<u64> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    let temp = tempfile::Builder::new()
        .prefix(".image-")
        .tempfile_in(dir)
        .map_err(Error::io("creating a temporary file in", dir))?;
    let failed = Error::io("writing", temp.path());
    let file = temp
        .as_file()
        .try_clone()
        .map_err(Error::io("opening", temp.path()))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let write = |tar: &mut tar::Builder<BufWriter<File>>| -> Result<()> {
        for dir in ["blobs", "blobs/sha256"] {
            let mut h = header(tar::EntryType::Directory, 0o755, (0, 0), epoch);
            tar.append_data(&mut h, dir, io::empty())
                .map_err(Error::io("writing", output))?;
        }
        for (name, path) in blobs.list()? {
            let size = std::fs::metadata(&path)
                .map_err(Error::io("reading", &path))?
                .len();
            let mut h = header(tar::EntryType::Regular, 0o644, (0, 0), epoch);
            h.set_size(size);
            let file = File::open(&path).map_err(Error::io("opening", &path))?;
            let name = Path::new("blobs/sha256").join(name);
            tar.append_data(&mut h, name, BufReader::with_capacity(1 << 20, file))
                .map_err(Error::io("writing", output))?;
        }
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        for (name, bytes) in [("index.json", index), ("oci-layout", layout.as_slice())] {
            let mut h = header(tar::EntryType::Regular, 0o644, (0, 0), epoch);
            h.set_size(bytes.len() as u64);
            tar.append_data(&mut h, name, bytes)
                .map_err(Error::io("writing", output))?;
        }
        Ok(())
    };
    write(&mut tar)?;
    let file = tar
        .into_inner()
        .map_err(Error::io("writing", temp.path()))?
        .into_inner()
        .map_err(|e| failed(e.into_error()))?;
    // An image is for everyone to read (a rootless user runs what root
    // built), but the temporary file is made 0600: its mode is changed on
    // the open file, so the path cannot be swapped for another file between
    // the change and the rename.
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(Error::io("setting the mode of", temp.path()))?;
    }
    file.sync_all().map_err(Error::io("syncing", temp.path()))?;
    let size = file
        .metadata()
        .map_err(Error::io("reading", temp.path()))?
        .len();
    temp.persist(output)
        .map_err(|e| Error::io("renaming into", output)(e.error))?;
    // The rename is durable once the directory is synced too.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], workers: usize) -> Vec<u8> {
        let (tx, rx) = sync_channel(4);
        let temp = tempfile::tempfile().unwrap();
        let file = temp.try_clone().unwrap();
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || {
            for chunk in data.chunks(100_000) {
                tx.send(chunk.to_vec()).unwrap();
            }
        });
        let (diff_id, digest, size) = compress_with(rx, file, workers).unwrap();
        feeder.join().unwrap();
        let mut out = Vec::new();
        let mut temp = temp;
        std::io::Seek::rewind(&mut temp).unwrap();
        temp.read_to_end(&mut out).unwrap();
        assert_eq!(size, out.len() as u64);
        assert_eq!(digest, hex::encode(Sha256::digest(&out)));
        assert_eq!(diff_id, hex::encode(Sha256::digest(data_hash_input(&out))));
        out
    }

    /// The uncompressed bytes of a gzip stream.
    fn data_hash_input(gz: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut plain)
            .unwrap();
        plain
    }

    #[test]
    fn parallel_gzip_round_trips_and_ignores_the_thread_count() {
        // Compressible but not trivial: 3.5 blocks of a slowly changing pattern.
        let data: Vec<u8> = (0..BLOCK * 7 / 2)
            .map(|i| ((i / 7) ^ (i / 1013)) as u8)
            .collect();
        let one = gzip(&data, 1);
        let three = gzip(&data, 3);
        assert!(one == three, "the output depends on the number of threads");
        assert_eq!(data_hash_input(&one), data);
        assert!(one.len() < data.len() / 4, "{} bytes", one.len());
        assert_eq!(data_hash_input(&gzip(&[], 2)), b"");
    }
}
