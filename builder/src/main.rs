//! `builder`: build an OCI image archive from an image definition, inspect
//! one, or unpack an archive safely.

use anyhow::Result;
use builder::{ImageDef, fetch, inspect, unpack};
use clap::{Parser, Subcommand};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Build reproducible OCI images from a rootfs tarball")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the image defined in IMAGE_TOML, or with `-f` the
    /// Containerfile, whose COPY and ADD sources are in the CONTEXT
    /// directory, into an OCI archive.
    Build {
        /// The image definition (`images/NAME/image.toml`), or with `-f`
        /// the build context.
        #[arg(value_name = "IMAGE_TOML|CONTEXT")]
        path: PathBuf,
        /// Build this Containerfile (Dockerfile syntax) instead of an image.toml.
        #[arg(short = 'f', long = "file", value_name = "CONTAINERFILE")]
        file: Option<PathBuf>,
        /// A Containerfile ARG's value (`NAME=VALUE`; `NAME` alone takes it
        /// from the environment).
        #[arg(long = "build-arg", value_name = "NAME=VALUE", requires = "file")]
        build_args: Vec<String>,
        /// The Containerfile stage to build (the last one by default).
        #[arg(long, requires = "file")]
        target: Option<String>,
        /// The image's tag [image.toml: its `tag`; Containerfile:
        /// localhost/CONTEXT:latest].
        #[arg(short = 't', long)]
        tag: Option<String>,
        /// The archive to write [required for an image.toml; Containerfile:
        /// NAME.tar, NAME from the tag].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Leave out the init: no /sbin/cradle-init, the entrypoint as the
        /// definition gives it.
        #[arg(long)]
        no_init: bool,
        /// The static init to add at /sbin/cradle-init [default: found as
        /// the launcher finds it: $CRADLE_INIT_PATH, beside this program,
        /// target/static/cradle-init, /usr/libexec/cradle/cradle-init].
        #[arg(long)]
        init: Option<PathBuf>,
        /// The download and step cache [default: $XDG_CACHE_HOME/cradle or ~/.cache/cradle].
        #[arg(long, env = "CRADLE_CACHE_DIR")]
        cache: Option<PathBuf>,
        /// Attach an SPDX 2.3 SBOM: the packages of the image's dpkg and
        /// apk databases, and the files the build added (as `sbom = true`
        /// in the definition).
        #[arg(long)]
        sbom: bool,
        /// Run every `[[run]]` step, neither using nor filling the step cache.
        #[arg(long = "no-cache")]
        no_cache: bool,
    },
    /// Empty the step cache (the layers of `[[run]]` steps, and their
    /// sandboxes' store); says how much it freed.
    Prune {
        /// The cache [default: $XDG_CACHE_HOME/cradle or ~/.cache/cradle].
        #[arg(long, env = "CRADLE_CACHE_DIR")]
        cache: Option<PathBuf>,
    },
    /// Print an image archive's tag, digests, layers, config and the
    /// packages its SBOM lists.
    Inspect {
        archive: PathBuf,
        /// Print the attached SBOM (SPDX JSON) instead.
        #[arg(long)]
        sbom: bool,
    },
    /// Pack DIR as a reproducible gzipped layer (sorted, numeric owners,
    /// mtimes clamped to SOURCE_DATE_EPOCH); prints its digest and diff id.
    Pack {
        dir: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    #[cfg(feature = "fetch")]
    /// Push an image archive to a registry (`[REGISTRY/]REPO[:TAG]`).
    Push {
        archive: PathBuf,
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    #[cfg(feature = "fetch")]
    /// Pull an image from a registry into an OCI image archive.
    Pull {
        reference: String,
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Unpack a tar archive (plain, gzip, xz, zstd) into DIR, refusing
    /// entries that would land outside it.
    Unpack {
        archive: PathBuf,
        dir: PathBuf,
        /// Apply OCI whiteouts (`.wh.` files), as for an image layer.
        #[arg(long)]
        whiteouts: bool,
        /// Refuse an archive whose files add up to more than this (bytes,
        /// or with a K, M, G or T suffix: powers of 1024) [default: 64G].
        #[arg(long, env = "CRADLE_MAX_LAYER_SIZE", value_parser = size_arg)]
        max_size: Option<u64>,
        /// Refuse an archive with more entries than this [default: 4000000].
        #[arg(long)]
        max_entries: Option<u64>,
    },
}

/// Options of `push` and `pull`.
#[cfg(feature = "fetch")]
#[derive(clap::Args)]
struct RegistryArgs {
    /// Speak plain http to a registry that is not on this machine.
    #[arg(long)]
    insecure: bool,
    /// Trust this PEM certificate too (a private registry's CA).
    #[arg(long = "ca-cert")]
    ca_cert: Option<PathBuf>,
    /// Read credentials from this file only (docker/podman auth.json format).
    #[arg(long = "authfile")]
    auth_file: Option<PathBuf>,
    /// Blobs larger than this many MiB are uploaded in chunks of that size.
    #[arg(long = "chunk-mib", default_value_t = 32)]
    chunk_mib: u64,
    /// Where the blob memo (for cross-repository mounts) is kept
    /// [default: $XDG_CACHE_HOME/cradle or ~/.cache/cradle].
    #[arg(long, env = "CRADLE_CACHE_DIR")]
    cache: Option<PathBuf>,
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        // The reader went away (`builder inspect … | head -1`): that ends a
        // pipeline, it is no failure of ours. Quiet and 0, as ripgrep does.
        if err.is::<StdoutClosed>() {
            return;
        }
        eprintln!("builder: {err:#}");
        std::process::exit(1);
    }
}

/// Stdout's reader closed it.
#[derive(Debug, thiserror::Error)]
#[error("writing to stdout: the reader closed it")]
struct StdoutClosed;

/// Writes `text` to stdout. Rust ignores SIGPIPE, so a write to a closed
/// pipe fails with EPIPE, on which `println!` panics (exit 101 and a
/// backtrace); here it is [`StdoutClosed`], which `main` takes quietly.
fn print(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other?),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build {
            path,
            file,
            build_args,
            target,
            tag,
            output,
            no_init,
            init,
            cache,
            no_cache,
            sbom,
        } => {
            let how = BuildArgs {
                output,
                tag,
                no_init,
                init,
                cache,
                no_cache,
                sbom,
            };
            match file {
                Some(file) => build_containerfile(file, path, build_args, target, how),
                None => build(path, how),
            }
        }
        Command::Prune { cache } => {
            let freed = builder::cache::prune(&cache.unwrap_or_else(default_cache))?;
            eprintln!("builder: pruned the step cache, {freed} bytes freed");
            Ok(())
        }
        Command::Inspect { archive, sbom } => inspect(archive, sbom),
        #[cfg(feature = "fetch")]
        Command::Push {
            archive,
            reference,
            registry,
        } => push(archive, reference, registry),
        #[cfg(feature = "fetch")]
        Command::Pull {
            reference,
            output,
            registry,
        } => pull(reference, output, registry),
        Command::Pack { dir, output } => {
            let stamp = builder::pack::Stamp {
                epoch: builder::source_date_epoch(),
                owner: None,
            };
            let layer = builder::pack::layer_file_from_dir(&dir, &output, stamp)?;
            print(&format!("{} {}\n", layer.blob.digest, layer.diff_id))
        }
        Command::Unpack {
            archive,
            dir,
            whiteouts,
            max_size,
            max_entries,
        } => {
            let defaults = unpack::Options::default();
            let opts = unpack::Options {
                whiteouts,
                max_size: max_size.unwrap_or(defaults.max_size),
                max_entries: max_entries.unwrap_or(defaults.max_entries),
                ..defaults
            };
            unpack::extract_file(&archive, &dir, &opts)?;
            Ok(())
        }
    }
}

fn size_arg(text: &str) -> Result<u64, String> {
    unpack::parse_size(text)
        .ok_or_else(|| format!("`{text}` is not a size (bytes, or a number with K, M, G or T)"))
}

/// What `build` takes for either kind of definition.
struct BuildArgs {
    output: Option<PathBuf>,
    tag: Option<String>,
    no_init: bool,
    init: Option<PathBuf>,
    cache: Option<PathBuf>,
    no_cache: bool,
    sbom: bool,
}

impl BuildArgs {
    fn options(self, output: PathBuf) -> Result<builder::Options> {
        // Without the init in the image, it is still what RUN steps'
        // sandboxes run under, when there is one.
        let init = match builder::init::find(self.init.as_deref()) {
            Ok(init) => init,
            Err(_) if self.no_init => PathBuf::new(),
            Err(err) => return Err(err.into()),
        };
        let mut fetch = fetch::Options::new(self.cache.unwrap_or_else(default_cache));
        fetch.progress = true;
        Ok(builder::Options {
            init,
            output,
            fetch,
            epoch: builder::source_date_epoch(),
            run: builder::run::Options {
                no_cache: self.no_cache,
                progress: io::stderr().is_terminal().then_some(show_progress),
                launcher: None,
            },
            no_init: self.no_init,
        })
    }
}

fn build(image_toml: PathBuf, mut how: BuildArgs) -> Result<()> {
    let mut def = ImageDef::load(&image_toml)?;
    def.sbom |= how.sbom;
    let Some(output) = how.output.take() else {
        anyhow::bail!(
            "building `{}`: give the archive to write with -o",
            image_toml.display()
        );
    };
    if let Some(tag) = how.tag.take() {
        builder::registry::Reference::parse(&tag)?;
        def.tag = tag;
    }
    let built = builder::build(&def, &how.options(output)?)?;
    report(&built, &def.tag)
}

fn build_containerfile(
    file: PathBuf,
    context: PathBuf,
    build_args: Vec<String>,
    target: Option<String>,
    mut how: BuildArgs,
) -> Result<()> {
    let mut args = std::collections::BTreeMap::new();
    for arg in build_args {
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            // `--build-arg NAME`: its value here, as docker takes it.
            None => match std::env::var(&arg) {
                Ok(value) => (arg, value),
                Err(_) => continue,
            },
        };
        args.insert(name, value);
    }
    if !context.is_dir() {
        anyhow::bail!(
            "the build context `{}` is not a directory",
            context.display()
        );
    }
    let request = builder::containerfile::Request {
        file,
        context,
        build_args: args,
        target,
        tag: how.tag.take(),
        sbom: how.sbom,
    };
    let output = match how.output.take() {
        Some(output) => output,
        None => default_output(&request),
    };
    let built = builder::containerfile::build(&request, &how.options(output)?)?;
    let tag = builder::inspect::inspect(&built.output)?
        .tag
        .unwrap_or_default();
    report(&built, &tag)
}

/// `NAME.tar` for a Containerfile build without `-o`: NAME is the tag's
/// last path component, else the context directory's name.
fn default_output(request: &builder::containerfile::Request) -> PathBuf {
    let from_tag = request.tag.as_deref().map(|tag| {
        let name = tag.rsplit('/').next().unwrap_or(tag);
        name.split([':', '@']).next().unwrap_or(name).to_string()
    });
    let name = from_tag
        .or_else(|| {
            std::path::absolute(&request.context)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "image".into());
    PathBuf::from(format!("{name}.tar"))
}

fn report(built: &builder::Built, tag: &str) -> Result<()> {
    for warning in &built.warnings {
        eprintln!("builder: warning: {warning}");
    }
    if built.steps > 0 {
        eprintln!(
            "builder: {} steps, {} from the cache",
            built.steps, built.cached
        );
    }
    eprintln!(
        "builder: wrote `{}` ({} bytes), tag {tag}",
        built.output.display(),
        built.size,
    );
    print(&format!("{}\n", built.digest))
}

/// A step's progress on a terminal, as buildah shows it.
fn show_progress(event: &builder::run::Progress) {
    use builder::run::Progress;
    match event {
        Progress::Step {
            number,
            total,
            what,
        } => eprintln!("STEP {number}/{total}: {what}"),
        Progress::Cached { digest } => eprintln!("--> Using cache {digest}"),
        Progress::Made { digest } => eprintln!("--> {digest}"),
    }
}

fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cradle")
}

fn inspect(archive: PathBuf, sbom: bool) -> Result<()> {
    let image = inspect::inspect(&archive)?;
    if sbom {
        let document = image.sbom.ok_or(builder::Error::NoSbom { path: archive })?;
        return print(&String::from_utf8_lossy(&document));
    }
    let mut text = format!(
        "tag:     {}\ndigest:  {}\nconfig:  {}\nlayers:\n",
        image.tag.as_deref().unwrap_or("(none)"),
        image.id,
        image.config_digest
    );
    for layer in &image.layers {
        text += &format!("  {} {:>12} bytes\n", layer.digest, layer.size);
    }
    text += &serde_json::to_string_pretty(&image.config)?;
    text.push('\n');
    if let Some(document) = &image.sbom {
        text += &sbom_summary(document)?;
    }
    print(&text)
}

/// The packages an SBOM lists, one a line, in columns.
fn sbom_summary(document: &[u8]) -> Result<String> {
    let packages = builder::sbom::summary(document)
        .map_err(|e| anyhow::anyhow!("reading the attached SBOM: {e}"))?;
    let mut text = format!("sbom:    {} packages\n", packages.len());
    let width = |i: usize| {
        packages
            .iter()
            .map(|p| p[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name, version) = (width(0), width(1));
    for [n, v, purl] in &packages {
        text += &format!("  {n:name$}  {v:version$}  {purl}\n");
    }
    Ok(text)
}

#[cfg(feature = "fetch")]
fn registry_options(args: RegistryArgs) -> builder::registry::Options {
    let cache = args.cache.unwrap_or_else(default_cache);
    builder::registry::Options {
        insecure: args.insecure,
        progress: true,
        chunk_size: args.chunk_mib.max(1) << 20,
        ca_cert: args.ca_cert,
        auth_file: args.auth_file,
        memo: Some(cache.join("registry-blobs.json")),
        ..Default::default()
    }
}

#[cfg(feature = "fetch")]
fn push(archive: PathBuf, reference: String, args: RegistryArgs) -> Result<()> {
    let reference = builder::registry::Reference::parse(&reference)?;
    let pushed = builder::registry::push(&archive, &reference, &registry_options(args))?;
    eprintln!(
        "builder: pushed `{reference}`: {} blobs uploaded, {} mounted, {} already there",
        pushed.uploaded, pushed.mounted, pushed.skipped
    );
    print(&format!("{}\n", pushed.digest))
}

#[cfg(feature = "fetch")]
fn pull(reference: String, output: PathBuf, args: RegistryArgs) -> Result<()> {
    let reference = builder::registry::Reference::parse(&reference)?;
    let pulled = builder::registry::pull(&reference, &output, &registry_options(args))?;
    eprintln!(
        "builder: wrote `{}` ({} bytes) from `{reference}`",
        output.display(),
        pulled.size
    );
    print(&format!("{}\n", pulled.digest))
}
