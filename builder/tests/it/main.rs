//! The builder's process tests, one binary: hostile archives, fetching from
//! a loopback HTTP server, reproducible builds, and interop with skopeo and
//! podman.

mod build;
mod fetch;
mod interop;
mod support;
mod unpack;
