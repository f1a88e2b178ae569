//! Fetch step: brings the rootfs tarball to a local file, hashing it as it
//! streams. URLs go through a download cache keyed by sha256, so a second
//! build downloads nothing; a download lands in a temporary file next to its
//! final name and only [`crate::verify`] moves it there. It is flocked while
//! the download lives, so that the next one can tell a killed download's
//! leftover and remove it.

use crate::def::Source;
use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct Options {
    /// The download cache; files live at `<cache>/sha256/<hex>`.
    pub cache: PathBuf,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Attempts per download, for transient failures.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub backoff: Duration,
    /// Connect timeout, and timeout for each read.
    pub timeout: Duration,
}

impl Options {
    pub fn new(cache: PathBuf) -> Options {
        Options {
            cache,
            progress: false,
            attempts: 4,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A local file with the sha256 of its bytes, maybe still waiting under a
/// temporary name for [`crate::verify::sha256`] to accept it.
#[derive(Debug)]
pub struct Fetched {
    /// What the file came from, for messages (the URL or the path).
    pub origin: String,
    /// Where the bytes are now.
    pub path: PathBuf,
    /// Hex sha256 of the bytes.
    pub actual: String,
    /// For a fresh download: the temporary file and its final name in the cache.
    pub pending: Option<(tempfile::NamedTempFile, PathBuf)>,
    /// True when `path` is an entry of the download cache.
    pub from_cache: bool,
}

/// Brings `source` (a URL or a file) to a local file. `expected` (hex
/// sha256) is the cache key for URLs.
pub fn download(source: &Source, expected: &str, opts: &Options) -> Result<Fetched> {
    match source {
        Source::File(path) => {
            let actual = hash_file(path)?;
            Ok(Fetched {
                origin: path.display().to_string(),
                path: path.clone(),
                actual,
                pending: None,
                from_cache: false,
            })
        }
        Source::Url(url) => {
            let dir = opts.cache.join("sha256");
            // Before the cache lookup, so that a build served from the cache
            // still clears what killed downloads left.
            crate::reclaim_stale(&dir, crate::PARTIAL_PREFIX);
            let cached = dir.join(expected);
            if cached.exists() {
                // Hashed again: a cache entry is trusted no more than a
                // download. One that changed (a disk error, a half-written
                // copy, someone's edit) is no fault of the URL's: it is
                // dropped and the file downloaded again.
                let actual = hash_file(&cached)?;
                if actual == expected {
                    return Ok(Fetched {
                        origin: url.clone(),
                        actual,
                        path: cached,
                        pending: None,
                        from_cache: true,
                    });
                }
                std::fs::remove_file(&cached)
                    .map_err(Error::io("removing the corrupt cache entry", &cached))?;
            }
            std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
            let mut temp = crate::locked_tempfile(&dir, crate::PARTIAL_PREFIX)?;
            let actual = http_get(url, temp.as_file_mut(), opts)?;
            Ok(Fetched {
                origin: url.clone(),
                path: temp.path().to_path_buf(),
                actual,
                pending: Some((temp, cached)),
                from_cache: false,
            })
        }
        other => Err(Error::UnsupportedSource {
            source_name: format!("{other:?}"),
        }),
    }
}

/// Hex sha256 of the file at `path`.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(Error::io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading", path)(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(not(feature = "fetch"))]
fn http_get(url: &str, _dest: &mut File, _opts: &Options) -> Result<String> {
    Err(Error::NoFetch {
        url: url.to_string(),
    })
}

/// Downloads `url` into `dest` (truncated first on each attempt) and returns
/// the hex sha256 of the body. Transient failures (connecting, timeouts, a
/// body cut short, 408/429/5xx) are retried with exponential back-off.
#[cfg(feature = "fetch")]
fn http_get(url: &str, dest: &mut File, opts: &Options) -> Result<String> {
    let client = client_builder(opts.timeout)
        .build()
        .map_err(|source| Error::Fetch {
            url: url.to_string(),
            source,
        })?;
    let mut attempt = 1;
    loop {
        match attempt_get(&client, url, dest, opts) {
            Ok(digest) => return Ok(digest),
            Err((_, true)) if attempt < opts.attempts => {
                std::thread::sleep(opts.backoff * 2u32.pow(attempt - 1));
                attempt += 1;
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// The HTTP client settings of every download and registry request: rustls,
/// redirects followed, our user agent, `timeout` to connect and per request.
#[cfg(feature = "fetch")]
pub(crate) fn client_builder(timeout: Duration) -> reqwest::blocking::ClientBuilder {
    // rustls is built with ring only (aws-lc-rs takes minutes to build);
    // installing fails harmlessly when the embedding program already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent(concat!("cradle-builder/", env!("CARGO_PKG_VERSION")))
}

/// One attempt; the error says whether trying again may help.
#[cfg(feature = "fetch")]
fn attempt_get(
    client: &reqwest::blocking::Client,
    url: &str,
    dest: &mut File,
    opts: &Options,
) -> std::result::Result<String, (Error, bool)> {
    use std::io::{IsTerminal, Seek, Write};
    let fetch_error = |source: reqwest::Error| {
        let transient =
            source.is_timeout() || source.is_connect() || source.is_request() || source.is_body();
        (
            Error::Fetch {
                url: url.to_string(),
                source,
            },
            transient,
        )
    };
    let io_error = |source: io::Error, transient| {
        (
            Error::Download {
                url: url.to_string(),
                source,
            },
            transient,
        )
    };
    dest.set_len(0).map_err(|e| io_error(e, false))?;
    dest.rewind().map_err(|e| io_error(e, false))?;
    let mut response = client.get(url).send().map_err(fetch_error)?;
    let status = response.status();
    if !status.is_success() {
        let transient = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        return Err((
            Error::HttpStatus {
                url: url.to_string(),
                status: status.as_u16(),
            },
            transient,
        ));
    }
    let length = response.content_length();
    let bar = (opts.progress && io::stderr().is_terminal()).then(|| progress_bar(url, length));
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 256 * 1024];
    let mut received = 0u64;
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e, true)),
        };
        hasher.update(&buf[..n]);
        dest.write_all(&buf[..n]).map_err(|e| io_error(e, false))?;
        received += n as u64;
        if let Some(bar) = &bar {
            bar.set_position(received);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(length) = length.filter(|&l| l != received) {
        let short = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the connection closed after {received} of {length} bytes"),
        );
        return Err(io_error(short, true));
    }
    dest.sync_all().map_err(|e| io_error(e, false))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(feature = "fetch")]
pub(crate) fn progress_bar(url: &str, length: Option<u64>) -> indicatif::ProgressBar {
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let bar = match length {
        Some(length) => indicatif::ProgressBar::new(length).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.with_message(name)
}
