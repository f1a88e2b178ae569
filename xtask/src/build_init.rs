//! `cargo xtask build-init`: the static init (musl, size-tuned `small`
//! profile), checked to have no program interpreter, and copied to
//! `<target>/static/cradle-init` where the other tasks and tests find it.

use crate::util;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub fn run(_args: &[String]) -> Result<PathBuf> {
    let path = build()?;
    let size = path
        .metadata()
        .with_context(|| format!("reading `{}`", path.display()))?
        .len();
    println!("{} ({size} bytes, static)", path.display());
    Ok(path)
}

/// Builds the static init and returns its path. Other tasks (build-image,
/// bench, test) call this.
pub fn build() -> Result<PathBuf> {
    let built = util::build_static("init", "init", "small")?;
    check_static(&built)?;
    let dir = util::target_dir().join("static");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let stable = dir.join("cradle-init");
    // Copy to a temporary name and rename, so a test running the old one
    // never sees a half-written file (ETXTBSY or a truncated ELF).
    let tmp = dir.join(".cradle-init.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copying `{}` to `{}`", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &stable)
        .with_context(|| format!("renaming `{}` to `{}`", tmp.display(), stable.display()))?;
    Ok(stable)
}

/// Fails unless `path` is an ELF without a PT_INTERP program header, that
/// is one the kernel runs without a dynamic loader.
pub fn check_static(path: &Path) -> Result<()> {
    let elf = std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?;
    match has_interpreter(&elf) {
        Some(false) => Ok(()),
        Some(true) => bail!(
            "`{}` has a program interpreter: it is not static",
            path.display()
        ),
        None => bail!(
            "`{}` is not a 64-bit little-endian ELF file",
            path.display()
        ),
    }
}

/// Whether the ELF64 (little-endian) image has a PT_INTERP program header;
/// None when it is not one.
pub fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38 (ELF64 header).
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut found = false;
    for i in 0..phnum {
        found |= u32_at(phoff + i * phentsize)? == PT_INTERP;
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_interpreter_in_dynamic_binaries_only() {
        // The running test binary is dynamically linked (gnu target).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(has_interpreter(&me), Some(true));
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
    }
}
