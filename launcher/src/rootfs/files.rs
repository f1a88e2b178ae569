//! What the launcher puts into the image's own filesystem before any system
//! mount or volume covers part of it: the working directory, our init at
//! `/sbin/cradle-init` and the `/etc` files. Their targets may follow the
//! image's symlinks, inside the root; what is missing is made on the image's
//! own filesystem, never in a mount.

use super::{Plan, remount_read_only};
use crate::sys::{Node, Resolve, Sys};
use crate::{Error, Result};
use nix::mount::MsFlags;
use std::path::Path;

/// docker makes a missing working directory; it must exist before the
/// root may become read-only.
pub(super) fn make_workdir(sys: &impl Sys, plan: &Plan) -> Result<()> {
    match &plan.workdir {
        Some(dir) => sys.mkdir_in(&plan.root, dir).map_err(Error::sys(format!(
            "making the working directory `{}`",
            dir.display()
        ))),
        None => Ok(()),
    }
}

pub(super) fn mount_init(sys: &impl Sys, plan: &Plan) -> Result<()> {
    let Some((init, locked)) = &plan.init else {
        return Ok(());
    };
    let target = Path::new(crate::image::INIT_IN_IMAGE);
    sys.mount_in(
        &plan.root,
        target,
        Node::File,
        Resolve::InRoot,
        Some(init),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .map_err(Error::sys(format!(
        "binding the init `{}` on `{}`",
        init.display(),
        target.display()
    )))?;
    remount_read_only(sys, &plan.root, target, *locked, Resolve::InRoot)
}

pub(super) fn mount_etc_files(sys: &impl Sys, plan: &Plan) -> Result<()> {
    for (name, _) in &plan.etc {
        let host = plan.state.join("etc").join(name);
        let target = Path::new("/etc").join(name);
        sys.mount_in(
            &plan.root,
            &target,
            Node::File,
            Resolve::InRoot,
            Some(&host),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(Error::sys(format!("binding `{}`", target.display())))?;
    }
    Ok(())
}
