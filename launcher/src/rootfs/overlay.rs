//! The root's base: `/` made a recursive slave, the container's state
//! directory (in memory unless `--keep`), the overlay over the cached layers
//! and its bind on itself, which `pivot_root` wants.

use super::{NONE, Plan};
use crate::sys::Sys;
use crate::{Error, Result};
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

/// The overlay: cached layers below, the container's private dirs above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Bottom first, as in the manifest.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Rootless: overlay's xattrs in `user.`, as the layers were unpacked.
    pub userxattr: bool,
}

/// Nothing mounted from here on propagates back to the host, while the
/// host's later mounts still reach us (crun, runc: rslave by default).
pub(super) fn make_root_slave(sys: &impl Sys) -> Result<()> {
    sys.mount(
        NONE,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(Error::sys("making `/` a recursive slave"))
}

pub(super) fn make_state(sys: &impl Sys, plan: &Plan) -> Result<()> {
    if plan.in_memory {
        // The cap bounds what the container can pin in memory through its
        // writable layer (tmpfs pages are charged to no one without a
        // memory limit): past it, writes fail with ENOSPC inside.
        let data = format!("mode=700,size={}", plan.storage_size);
        sys.mount(
            Some(Path::new("tmpfs")),
            &plan.state,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&data),
        )
        .map_err(Error::sys(format!(
            "mounting a tmpfs on `{}`",
            plan.state.display()
        )))?;
    }
    for dir in ["upper", "work", "rootfs", "etc"] {
        sys.mkdir_in(&plan.state, Path::new(dir))
            .map_err(Error::sys(format!(
                "making `{}/{dir}`",
                plan.state.display()
            )))?;
    }
    if let Some(socket) = plan.idmapped_layers {
        for i in 0..plan.overlay.lower.len() {
            sys.mkdir_in(&plan.state, &Path::new("lower").join(i.to_string()))
                .map_err(Error::sys("making the layer mount points"))?;
        }
        sys.handshake(socket)
            .map_err(Error::sys("waiting for the idmapped layers"))?;
    } else {
        link_layers(sys, plan)?;
    }
    for (name, contents) in &plan.etc {
        let path = Path::new("etc").join(name);
        sys.write_in(&plan.state, &path, contents.as_bytes())
            .map_err(Error::sys(format!(
                "writing `{}`",
                plan.state.join(&path).display()
            )))?;
    }
    Ok(())
}

/// Where `--userns=auto` attaches the idmapped layers, bottom first.
pub fn idmapped_targets(state: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| state.join("lower").join(i.to_string()))
        .collect()
}

pub fn overlay_options(o: &Overlay) -> String {
    // overlayfs lists lowerdir top first; the manifest lists bottom first.
    let lower: Vec<String> = o
        .lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        o.upper.display(),
        o.work.display()
    );
    if o.userxattr {
        data.push_str(",userxattr");
    }
    data
}

/// `l/N -> layer N` in the state directory, the short names the overlay's
/// lowerdir lists (see [`mount_overlay`]).
fn link_layers(sys: &impl Sys, plan: &Plan) -> Result<()> {
    sys.mkdir_in(&plan.state, Path::new("l"))
        .map_err(Error::sys("making the layer links"))?;
    for (i, layer) in plan.overlay.lower.iter().enumerate() {
        let link = Path::new("l").join(i.to_string());
        let target = layer.to_str().ok_or(Error::Invalid {
            what: "layer path (not UTF-8)",
            value: layer.display().to_string(),
        })?;
        sys.symlink_in(&plan.state, target, &link)
            .map_err(Error::sys(format!(
                "linking `{}` to `{target}`",
                plan.state.join(&link).display()
            )))?;
    }
    Ok(())
}

/// The layers go into the overlay's options by short names relative to the
/// state directory (`l/N`, or `lower/N` when idmapped), mounted from there:
/// the whole option string must fit in a page, which 42 full layer paths
/// do not; docker's overlay2 keeps short links for the same reason. The
/// kernel follows the links when it looks the lower directories up.
pub(super) fn mount_overlay(sys: &impl Sys, plan: &Plan) -> Result<()> {
    let mut overlay = plan.overlay.clone();
    let dir = if plan.idmapped_layers.is_some() {
        "lower"
    } else {
        "l"
    };
    overlay.lower = (0..overlay.lower.len())
        .map(|i| Path::new(dir).join(i.to_string()))
        .collect();
    // Relative to the state directory when inside it (the usual case):
    // shorter, and free of whatever the state root's path holds.
    for dir in [&mut overlay.upper, &mut overlay.work] {
        if let Ok(rel) = dir.strip_prefix(&plan.state) {
            *dir = rel.to_path_buf();
        }
        // overlayfs splits its options at `,` and lowerdir at `:`: a path
        // with them would be cut into other options.
        let text = dir.to_string_lossy();
        if text.contains([',', ':', '\\', '\n']) {
            return Err(Error::Invalid {
                what: "overlay directory (overlayfs cannot take a path with `,`, `:`, `\\` or a newline)",
                value: text.into_owned(),
            });
        }
    }
    sys.chdir(&plan.state)
        .map_err(Error::sys(format!("entering `{}`", plan.state.display())))?;
    let data = overlay_options(&overlay);
    sys.mount(
        Some(Path::new("overlay")),
        &plan.root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
    )
    .map_err(Error::sys(format!(
        "mounting the overlay on `{}`",
        plan.root.display()
    )))
}

/// pivot_root wants the new root to be a mount point of its own.
pub(super) fn bind_on_itself(sys: &impl Sys, root: &Path) -> Result<()> {
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(Error::sys(format!(
        "binding `{}` on itself",
        root.display()
    )))
}
