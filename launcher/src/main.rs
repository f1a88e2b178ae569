//! `launcher run [OPTIONS] IMAGE.tar [CMD [ARGS…]]`, with docker's flag names.
//! Prints one error chain and exits 125 when the launcher itself fails.

use clap::{Parser, Subcommand};

use launcher::{Linux, Network, Options, Userns};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "launcher",
    version,
    about = "Run an OCI image archive in new namespaces, cradle's init as PID 1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run IMAGE.tar (ours, an OCI image layout archive, or `docker save`).
    Run(Box<Run>),
    /// Unpack IMAGE.tar's layers, flattened, into DIR (an OCI bundle's rootfs).
    Export { image: PathBuf, dir: PathBuf },
    /// Write an OCI runtime bundle (config.json and rootfs/) of IMAGE.tar
    /// into DIR, for `crun run` or `runc run`, with `run`'s defaults.
    Bundle(Bundle),
}

#[derive(clap::Args)]
struct Bundle {
    /// Set an environment variable (NAME=VALUE).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// UID[:GID], or a name from the image's /etc/passwd.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Bind mount HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// The static init to bind-mount into images without one (its path on this machine).
    #[arg(long = "init-path", env = "CRADLE_INIT_PATH")]
    init_path: Option<PathBuf>,
    /// The image archive.
    image: PathBuf,
    /// The bundle directory (created; must be empty).
    dir: PathBuf,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct Run {
    /// Set an environment variable (NAME=VALUE, or NAME to pass the launcher's).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (NAME=VALUE lines).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// UID[:GID], or a name from the image's /etc/passwd.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// The container's hostname (default: the first 12 characters of its id).
    #[arg(long)]
    hostname: Option<String>,
    /// Replace the image's Entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Bind mount HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Mount the container's root read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// Keep stdin open and pass it to the container.
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// none (a new network namespace with `lo`) or host.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    network: String,
    /// Name of the container (its state directory).
    #[arg(long)]
    name: Option<String>,
    /// Keep the container's writable layer after it exits.
    #[arg(long)]
    keep: bool,
    /// The static init to bind-mount into images without one.
    #[arg(long = "init-path", env = "CRADLE_INIT_PATH")]
    init_path: Option<PathBuf>,
    /// Do not add an init: the command runs as PID 1.
    #[arg(long = "no-init")]
    no_init: bool,
    /// host (a user namespace only when rootless) or auto (a new one, mapped to an unused range).
    #[arg(long, default_value = "host", value_parser = ["host", "auto"])]
    userns: String,
    /// Seconds to wait after forwarding SIGTERM/SIGINT before SIGKILL.
    #[arg(long = "stop-timeout", default_value_t = 10)]
    stop_timeout: u64,
    /// The image archive (`FILE.tar`, or `FILE.tar:NAME` to pick a tagged image).
    image: PathBuf,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() {
    // docker exits 125 for a usage error too; --help and --version exit 0.
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        let _ = err.print();
        std::process::exit(if err.use_stderr() {
            launcher::EXIT_LAUNCHER_FAILED
        } else {
            0
        })
    });
    let run = match cli.command {
        Command::Run(run) => run,
        Command::Bundle(b) => bundle(b),
        Command::Export { image, dir } => {
            if let Err(err) = launcher::export(&image, &dir) {
                eprintln!("launcher: {:#}", anyhow::Error::from(err));
                std::process::exit(1);
            }
            return;
        }
    };
    let opts = Options {
        image: run.image,
        command: run.command,
        env: run.env,
        env_files: run.env_file,
        workdir: run.workdir,
        user: run.user,
        hostname: run.hostname,
        entrypoint: run.entrypoint,
        volumes: run.volume,
        read_only: run.read_only,
        tty: run.tty,
        interactive: run.interactive,
        network: if run.network == "host" {
            Network::Host
        } else {
            Network::None
        },
        name: run.name,
        keep: run.keep,
        init_path: run.init_path,
        no_init: run.no_init,
        userns: if run.userns == "auto" {
            Userns::Auto
        } else {
            Userns::Host
        },
        stop_timeout: run.stop_timeout,
    };
    let code = match launcher::run(&opts, &Linux) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            eprintln!("launcher: {:#}", anyhow::Error::from(err));
            code
        }
    };
    std::process::exit(code);
}

/// `launcher bundle`: exits 0 with the path of config.json, or 125.
fn bundle(b: Bundle) -> ! {
    let opts = Options {
        image: b.image,
        command: b.command,
        env: b.env,
        user: b.user,
        hostname: b.hostname,
        init_path: b.init_path,
        volumes: b.volume,
        ..Default::default()
    };
    match launcher::bundle::write(&opts, &b.dir) {
        Ok(config) => {
            println!("{}", config.display());
            std::process::exit(0)
        }
        Err(err) => {
            eprintln!("launcher: {:#}", anyhow::Error::from(err));
            std::process::exit(launcher::EXIT_LAUNCHER_FAILED)
        }
    }
}
