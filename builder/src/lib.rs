//! The builder: from a rootfs tarball to a reproducible OCI image archive.
//! Steps, in order: `def` (read image.toml), `fetch`, `verify`, `unpack`,
//! `layout`, `oci`, `pack`; `inspect` reads a built archive back.

mod error;
pub mod unpack;

pub use error::{Error, Refusal, Result};
