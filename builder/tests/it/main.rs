//! The builder's process tests, one binary: hostile archives, fetching from
//! a loopback HTTP server, reproducible builds, and interop with skopeo and
//! podman.

mod around;
mod attacks;
mod bases;
mod build;
mod cli;
mod containerfile;
mod containerfile_interop;
mod copying;
#[cfg(feature = "fetch")]
mod fetch;
mod fuzz;
mod interop;
mod interrupted;
#[cfg(feature = "fetch")]
mod registry;
mod run;
mod sbom;
#[cfg_attr(not(feature = "fetch"), allow(dead_code))]
mod support;
mod unpack;
