//! Helpers shared by the tasks: where the workspace and target directory are,
//! and running cargo and other commands with their failures named.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The musl target the static binaries are built for.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR`, or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// A `cargo` command (the one running us, from `CARGO`), in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`, failing with its command line when it does not exit 0.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Adds the musl target with rustup when it is missing.
pub fn ensure_musl_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == MUSL_TARGET) =>
        {
            Ok(())
        }
        Ok(_) => run_cmd(Command::new("rustup").args(["target", "add", MUSL_TARGET])),
        // Without rustup, let cargo report a missing target itself.
        Err(_) => Ok(()),
    }
}

/// Builds `package`'s binary `bin` for the musl target with `profile`, and
/// returns its path.
pub fn build_static(package: &str, bin: &str, profile: &str) -> Result<PathBuf> {
    ensure_musl_target()?;
    run_cmd(cargo().args([
        "build",
        "--package",
        package,
        "--bin",
        bin,
        "--target",
        MUSL_TARGET,
        "--profile",
        profile,
    ]))?;
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target_dir().join(MUSL_TARGET).join(dir).join(bin))
}
