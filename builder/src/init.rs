//! Init step: finds the static init the image runs as PID 1 (where the
//! launcher looks for it) and checks that it is one: an ELF executable of
//! this machine's architecture with no program interpreter. A shell script,
//! a dynamic program or `/etc/passwd` would build and then fail in every
//! container, far from the cause.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the init is looked for, in order: the flag alone when given, else
/// `$CRADLE_INIT_PATH` alone when set, else beside this program, in the
/// cargo target directory it was built into (`target/static/cradle-init`,
/// where `cargo xtask build-init` puts it), and the installed one. The
/// launcher's list (launcher/src/spawn.rs), so both find the same file.
pub fn candidates(flag: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = flag {
        return vec![path.to_path_buf()];
    }
    if let Some(path) = std::env::var_os("CRADLE_INIT_PATH").filter(|p| !p.is_empty()) {
        return vec![path.into()];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("cradle-init"));
        if let Some(target) = dir.parent() {
            out.push(target.join("static/cradle-init"));
            out.push(target.join("static/init"));
            out.push(target.join(format!(
                "{}-unknown-linux-musl/small/init",
                std::env::consts::ARCH
            )));
        }
    }
    out.push("/usr/libexec/cradle/cradle-init".into());
    out
}

/// The first of [`candidates`] that exists, checked with [`check_static`].
pub fn find(flag: Option<&Path>) -> Result<PathBuf> {
    let candidates = candidates(flag);
    let found = candidates
        .iter()
        .find(|p| p.exists())
        .ok_or_else(|| Error::NoInit {
            tried: candidates
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    check_static(found)?;
    Ok(found.clone())
}

/// ELF `e_machine` of the architecture this builder runs on, which is the
/// one the images it builds are for (`oci::assemble` records it).
const MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "riscv64") {
    243
} else if cfg!(target_arch = "s390x") {
    22
} else if cfg!(target_arch = "powerpc64") {
    21
} else {
    0
};

const PT_INTERP: u32 = 3;
/// Program headers read at most: a real static program has about ten.
const MAX_PHDRS: u16 = 256;

/// Checks that `path` is a regular file holding a 64-bit little-endian ELF
/// executable (or static PIE) for this architecture without a program
/// interpreter (`PT_INTERP`): what the kernel can run as PID 1 in an image
/// that has no dynamic loader of its own.
pub fn check_static(path: &Path) -> Result<()> {
    let refuse = |what: &str| Error::NotStaticInit {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(Error::io("reading the init", path))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    let mut file = std::fs::File::open(path).map_err(Error::io("reading the init", path))?;
    let mut head = [0u8; 64];
    if file.read_exact(&mut head).is_err() || head[..4] != *b"\x7fELF" {
        return Err(refuse("not an ELF file"));
    }
    if head[4] != 2 || head[5] != 1 {
        return Err(refuse("not a 64-bit little-endian ELF file"));
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let u64_at = |b: &[u8], at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    };
    // ET_EXEC, or ET_DYN for a static PIE.
    if !matches!(u16_at(&head, 16), 2 | 3) {
        return Err(refuse(
            "not an executable (a relocatable object or core file)",
        ));
    }
    let machine = u16_at(&head, 18);
    if machine != MACHINE {
        return Err(refuse(&format!(
            "built for ELF machine {machine}, this is {} (machine {MACHINE})",
            std::env::consts::ARCH
        )));
    }
    let (phoff, phentsize, phnum) = (u64_at(&head, 32), u16_at(&head, 54), u16_at(&head, 56));
    if phnum == 0 || phnum > MAX_PHDRS || usize::from(phentsize) < 56 {
        return Err(refuse("its program headers are missing or malformed"));
    }
    let mut headers = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut headers))
        .map_err(|_| refuse("its program headers are cut short"))?;
    if headers
        .chunks(usize::from(phentsize))
        .any(|h| u32_at(h, 0) == PT_INTERP)
    {
        return Err(refuse(
            "it is dynamically linked (it names a program interpreter)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_alone_is_tried_when_given() {
        assert_eq!(
            candidates(Some(Path::new("/x/init"))),
            [PathBuf::from("/x/init")]
        );
    }

    #[test]
    fn refuses_text_and_dynamic_programs() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("init.sh");
        std::fs::write(&script, "#!/bin/sh\nexec \"$@\"\n").unwrap();
        let err = check_static(&script).unwrap_err().to_string();
        assert!(err.contains("not an ELF file"), "{err}");
        // /bin/sh is an ELF of this architecture, but dynamic.
        let err = check_static(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(err.contains("program interpreter"), "{err}");
        let err = check_static(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
