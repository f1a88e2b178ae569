//! Mounts step: `/proc` when the init is PID 1 and nobody mounted one.

use crate::log::log;
use crate::sys::Sys;
use crate::{Error, Init};

/// Mounts proc on `/proc` when this is PID 1 of its namespace and no proc is
/// there; leaves a mounted one alone. Started by a runtime, /proc is always
/// mounted; by `unshare -fp` without `--mount-proc`, or a bare runtime, it
/// may not be, and `ps` or `/proc/self` in the workload would then lie.
pub fn mount_proc_if_missing(sys: &impl Sys, init: &Init) -> Result<(), Error> {
    if !init.mount_proc || sys.getpid() != 1 {
        return Ok(());
    }
    let path = c"/proc";
    match sys.is_proc(path) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        // No /proc directory at all: nothing to mount on, and not ours to create.
        Err(err) => {
            log!(sys, init, Warn, "statfs `/proc`: {err}");
            return Ok(());
        }
    }
    log!(sys, init, Debug, "mounting proc on `/proc`");
    sys.mount_proc(path)
        .map_err(|source| Error::MountProc { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    #[test]
    fn mounts_proc_only_as_pid_1_when_missing() {
        let fake = Fake::new().pid(1).proc_mounted(false);
        mount_proc_if_missing(&fake, &Init::new(["x"])).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Call::IsProc("/proc".into()),
                Call::MountProc("/proc".into())
            ]
        );

        let fake = Fake::new().pid(1).proc_mounted(true);
        mount_proc_if_missing(&fake, &Init::new(["x"])).unwrap();
        assert_eq!(fake.calls(), [Call::IsProc("/proc".into())]);

        let fake = Fake::new().pid(7).proc_mounted(false);
        mount_proc_if_missing(&fake, &Init::new(["x"])).unwrap();
        assert_eq!(fake.calls(), []);
    }
}
