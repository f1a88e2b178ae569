//! `builder`: build an OCI image archive from an image definition, inspect
//! one, or unpack an archive safely.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Build reproducible OCI images from a rootfs tarball")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Unpack a tar archive (plain, gzip, xz, zstd) into DIR, refusing
    /// entries that would land outside it.
    Unpack {
        archive: PathBuf,
        dir: PathBuf,
        /// Apply OCI whiteouts (`.wh.` files), as for an image layer.
        #[arg(long)]
        whiteouts: bool,
    },
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("builder: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Unpack {
            archive,
            dir,
            whiteouts,
        } => {
            let opts = builder::unpack::Options {
                whiteouts,
                ..Default::default()
            };
            let stats = builder::unpack::extract_file(&archive, &dir, &opts)?;
            eprintln!(
                "builder: unpacked {} entries ({} bytes) into `{}`",
                stats.entries,
                stats.bytes,
                dir.display()
            );
        }
    }
    Ok(())
}
