//! Registry step: images to and from OCI registries over the distribution
//! API (`/v2/`). [`reference`] parses names, [`auth`] finds credentials and
//! reads challenges, [`client`] holds the session (with `tls` for a private
//! CA), [`push`] and [`pull`] move the blobs and manifests.

pub mod auth;
pub mod client;
pub mod pull;
pub mod push;
pub mod reference;
mod tls;

pub use pull::{Pulled, pull};
pub use push::{Pushed, push};
pub use reference::Reference;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to talk to registries.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plain http for this registry even though it is not on this machine.
    pub insecure: bool,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// Blobs larger than this are uploaded in chunks of this size.
    pub chunk_size: u64,
    /// A PEM certificate to trust besides the system's (a private registry's CA).
    pub ca_cert: Option<PathBuf>,
    /// The one credential file to read (`--authfile`), instead of the usual ones.
    pub auth_file: Option<PathBuf>,
    /// Where to remember which repositories hold which blobs, so that a
    /// push can mount a blob from another repository of the same registry.
    pub memo: Option<PathBuf>,
    /// Connect timeout, and timeout of each request.
    pub timeout: Duration,
    /// Attempts per GET or HEAD, for transient failures.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub backoff: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: false,
            progress: false,
            chunk_size: 32 << 20,
            ca_cert: None,
            auth_file: None,
            memo: None,
            timeout: Duration::from_secs(300),
            attempts: 3,
            backoff: Duration::from_millis(250),
        }
    }
}

impl Options {
    pub(crate) fn progress_bar(&self, digest: &str, size: u64) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        let name: String = digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        (self.progress && std::io::stderr().is_terminal())
            .then(|| crate::fetch::progress_bar(&name, Some(size)))
    }
}

/// True for the media types of an index (OCI) or manifest list (docker).
pub(crate) fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

/// Which repositories of which registry hold a blob, as far as this machine
/// has seen (docker keeps the same, for the same purpose). A hint only: a
/// mount the registry refuses falls back to an upload.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    path: Option<PathBuf>,
    /// registry → digest → repositories.
    known: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    changed: bool,
}

impl Memo {
    pub(crate) fn load(path: Option<&Path>) -> Memo {
        let known = path
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Memo {
            path: path.map(Path::to_path_buf),
            known,
            changed: false,
        }
    }

    pub(crate) fn other_repository(
        &self,
        registry: &str,
        digest: &str,
        not: &str,
    ) -> Option<String> {
        self.known
            .get(registry)?
            .get(digest)?
            .iter()
            .find(|r| *r != not)
            .cloned()
    }

    pub(crate) fn record(&mut self, registry: &str, digest: &str, repository: &str) {
        let repos = self
            .known
            .entry(registry.to_string())
            .or_default()
            .entry(digest.to_string())
            .or_default();
        if !repos.iter().any(|r| r == repository) {
            repos.push(repository.to_string());
            self.changed = true;
        }
    }

    /// Writes the memo back (best effort: it is a cache). Written to a
    /// temporary file and renamed, so a concurrent reader never sees half.
    pub(crate) fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        if !self.changed {
            return;
        }
        let Some(dir) = path.parent() else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        let Ok(bytes) = serde_json::to_vec(&self.known) else {
            return;
        };
        if let Ok(mut temp) = tempfile::NamedTempFile::new_in(dir)
            && std::io::Write::write_all(&mut temp, &bytes).is_ok()
        {
            let _ = temp.persist(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_offers_another_repository_of_the_same_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memo.json");
        let mut memo = Memo::load(Some(&path));
        memo.record("r:5000", "sha256:a", "one");
        memo.save();
        let memo = Memo::load(Some(&path));
        assert_eq!(
            memo.other_repository("r:5000", "sha256:a", "two"),
            Some("one".into())
        );
        assert_eq!(memo.other_repository("r:5000", "sha256:a", "one"), None);
        assert_eq!(memo.other_repository("other", "sha256:a", "two"), None);
    }
}
