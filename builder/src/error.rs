//! The builder's one error type: a variant per step, carrying the operand
//! and the cause.

use std::io;
use std::path::PathBuf;

/// Why an archive entry was refused by [`crate::unpack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The name starts with `/`.
    Absolute,
    /// The name has a `..` component.
    DotDot,
    /// A parent of the entry is a symlink, or not a directory.
    SymlinkParent,
    /// A hardlink whose target is absolute, has `..`, or goes through a symlink.
    LinkOutside(PathBuf),
    /// A character or block device while devices are not allowed.
    Device,
    /// A non-directory entry that names the target directory itself.
    TargetItself,
    /// A sparse file in GNU tar's PAX formats, which we cannot unpack
    /// faithfully (GNU tar's own format, `--format=gnu`, we can).
    PaxSparse,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Absolute => f.write_str("absolute name"),
            Refusal::DotDot => f.write_str("`..` in the name"),
            Refusal::SymlinkParent => f.write_str("a parent is a symlink or not a directory"),
            Refusal::LinkOutside(to) => {
                write!(f, "hardlink to `{}` outside the target", to.display())
            }
            Refusal::Device => f.write_str("device node, and devices are not allowed"),
            Refusal::TargetItself => f.write_str("names the target directory itself"),
            Refusal::PaxSparse => f.write_str(
                "a sparse file in GNU tar's PAX format, which is not supported (GNU tar's `--format=gnu` is)",
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading image definition `{}`", path.display())]
    DefinitionRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing image definition `{}`", path.display())]
    Definition {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("image definition `{}`: {what}", path.display())]
    DefinitionInvalid { path: PathBuf, what: String },

    #[error(
        "no static init found: tried {tried} (build one with `cargo xtask build-init`, or give --init)"
    )]
    NoInit { tried: String },
    #[error("refusing init `{}`: {what}; the init must be a static executable for this machine", path.display())]
    NotStaticInit { path: PathBuf, what: String },

    #[error("unsupported rootfs source `{source_name}`")]
    UnsupportedSource { source_name: String },
    #[error("downloading `{url}`: this builder was built without the `fetch` feature")]
    NoFetch { url: String },
    #[cfg(feature = "fetch")]
    #[error("downloading `{url}`")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[cfg(feature = "fetch")]
    #[error("trusting the certificates in `{}`", path.display())]
    CaCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("downloading `{url}`: the server answered {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("downloading `{url}`")]
    Download {
        url: String,
        #[source]
        source: io::Error,
    },

    #[error("`{value}` is not a sha256 digest (64 hex digits)")]
    BadDigest { value: String },
    #[error("sha256 of `{what}` is {actual}, the definition says {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("refusing archive entry `{}`: {reason}", entry.display())]
    Refused { entry: PathBuf, reason: Refusal },
    #[error("unpacking archive entry `{}`", entry.display())]
    Entry {
        entry: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing archive `{}`: entry `{}` takes its files past the limit of {limit} bytes",
        archive.display(),
        entry.display()
    )]
    TooLarge {
        archive: PathBuf,
        entry: PathBuf,
        limit: u64,
    },
    #[error("refusing archive `{}`: it has more than the limit of {limit} entries", archive.display())]
    TooManyEntries { archive: PathBuf, limit: u64 },
    #[error("reading archive `{}`", archive.display())]
    Archive {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("refusing to copy `{}`: {what}", src.display())]
    CopyRefused { src: PathBuf, what: String },

    #[error(
        "host program `{name}` is not in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin or /bin"
    )]
    HostProgram { name: String },
    #[error("resolving the shared libraries of `{}`", program.display())]
    Libraries {
        program: PathBuf,
        #[source]
        source: lddtree::Error,
    },

    #[error("library `{library}` needed by `{}` is not on this machine", program.display())]
    MissingLibrary { program: PathBuf, library: String },

    #[error("writing {what} as JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading {what} of `{}`", path.display())]
    JsonRead {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("assembling the OCI {what}")]
    Oci {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("reading layer `{layer}` for the SBOM")]
    SbomLayer {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("`{}` has no SBOM attached (build it with `--sbom`)", path.display())]
    NoSbom { path: PathBuf },
    #[error("`{}` is not an OCI image archive: {what}", path.display())]
    NotAnImage { path: PathBuf, what: String },

    #[error("`{value}` is not an image reference ([REGISTRY/]REPOSITORY[:TAG][@DIGEST])")]
    BadReference { value: String },
    #[cfg(feature = "fetch")]
    #[error("reaching registry `{registry}` for `{reference}`")]
    Unreachable {
        registry: String,
        reference: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry `{registry}` refused access to `{reference}` {who}")]
    Denied {
        registry: String,
        reference: String,
        /// `as user `u``, or `anonymously (…)`.
        who: String,
    },
    #[error("no image `{reference}` in the registry (manifest unknown)")]
    ManifestUnknown { reference: String },
    #[error("{op} `{url}`: the registry answered {status}{detail}")]
    RegistryStatus {
        op: &'static str,
        url: String,
        status: u16,
        /// The registry's own error code and message, if it gave one.
        detail: String,
    },
    #[error("refusing blob `{digest}` of `{reference}`: its content hashes to {actual}")]
    BlobMismatch {
        digest: String,
        reference: String,
        actual: String,
    },
    #[error("the registry stored the manifest of `{reference}` as {stored}, not {digest}")]
    StoredDigest {
        reference: String,
        digest: String,
        stored: String,
    },
    #[error("reading registry credentials from `{}`: {what}", path.display())]
    Credentials { path: PathBuf, what: String },

    /// A `[[run]]` step's command ended with a status other than 0.
    #[error("{step} failed: {status}")]
    RunFailed { step: String, status: String },
    /// The launcher that runs `[[run]]` steps could not be started.
    #[error("{step}: starting the launcher `{}`", launcher.display())]
    RunLauncher {
        step: String,
        launcher: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no launcher found to run `[[run]]` steps (looked at {tried}); set CRADLE_LAUNCHER or put `launcher` beside the builder"
    )]
    NoLauncher { tried: String },
    /// What a `[[run]]` step left that cannot become its layer.
    #[error("{step}: refusing `{}`: {what}", file.display())]
    RunLayer {
        step: String,
        file: PathBuf,
        what: String,
    },
    /// The step cache could not be used (its directory, its lock).
    #[error("{op} the step cache `{}`", path.display())]
    Cache {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Any other filesystem operation: `op` says which ("creating", "reading" …).
    #[error("{op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// A closure making an [`Error::Io`], for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
