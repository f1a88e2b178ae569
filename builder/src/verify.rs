//! Verify step: accepts a fetched tarball only when its sha256 is the one
//! the definition gives. A fresh download is moved under its final name in
//! the cache only then; on a mismatch nothing is left under that name.

use crate::error::{Error, Result};
use crate::fetch::Fetched;
use std::path::{Path, PathBuf};

/// A tarball whose sha256 matched the definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified(PathBuf);

impl Verified {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Checks `fetched` against `expected` (hex sha256).
pub fn sha256(fetched: Fetched, expected: &str) -> Result<Verified> {
    if fetched.actual != expected {
        // A temporary download is deleted when dropped; a bad cache entry
        // is removed so that the next build downloads it again.
        if fetched.from_cache {
            let _ = std::fs::remove_file(&fetched.path);
        }
        return Err(Error::DigestMismatch {
            what: fetched.origin,
            expected: expected.to_string(),
            actual: fetched.actual,
        });
    }
    match fetched.pending {
        None => Ok(Verified(fetched.path)),
        Some((temp, destination)) => {
            temp.persist(&destination)
                .map_err(|e| Error::io("moving the download to", &destination)(e.error))?;
            Ok(Verified(destination))
        }
    }
}
