//! The kernel modules the checks need, with what they depend on, in the
//! order to load them. The package ships no modules.dep (its postinst runs
//! depmod), so dependencies are read where depmod reads them: the
//! `depends=` entry of each module's `.modinfo` section. Compressed modules
//! (.ko.xz, .ko.zst) are decompressed here: busybox insmod may not be.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A module to load: its name and its (uncompressed) ELF object.
pub struct Module {
    pub name: String,
    pub object: Vec<u8>,
}

/// `wanted` and their dependencies, each after what it depends on. Names
/// built into the kernel (modules.builtin) are left out.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let files = index(&modules_dir.join("kernel"))?;
    let builtin = builtin_names(modules_dir);
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(&normalize(name), &files, &builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// Depth first: dependencies are pushed before the module.
fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<Module>,
) -> Result<()> {
    if builtin.contains(name) || !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(path) = files.get(name) else {
        bail!("module `{name}` is neither in the kernel package nor built in");
    };
    let object = read_object(path)?;
    let depends = depends(&object)
        .with_context(|| format!("`{}` has no .modinfo section", path.display()))?;
    for dep in depends {
        visit(&normalize(&dep), files, builtin, seen, order)?;
    }
    order.push(Module {
        name: name.to_string(),
        object,
    });
    Ok(())
}

/// Module name (`nf_tables`; dashes read as underscores, as the kernel
/// does) → its file, for every module under `dir`.
fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing `{}`", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing `{}`", dir.display()))?;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else if let Some(name) = module_name(&path) {
                files.insert(name, path);
            }
        }
    }
    Ok(files)
}

/// `…/nft_nat.ko.xz` → `nft_nat`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(normalize(stem))
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn builtin_names(modules_dir: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    text.lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect()
}

/// The module's ELF object, decompressed by `xz` or `zstd` when it is.
fn read_object(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = match () {
        _ if name.ends_with(".xz") => "xz",
        _ if name.ends_with(".zst") => "zstd",
        _ if name.ends_with(".gz") => "gzip",
        _ => return std::fs::read(path).with_context(|| format!("reading `{name}`")),
    };
    let mut cmd = Command::new(tool);
    cmd.arg("-dc").arg(path);
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// The names in `depends=` of the `.modinfo` section (NUL-separated
/// `key=value` strings); None when the ELF has no such section.
fn depends(elf: &[u8]) -> Option<Vec<String>> {
    let info = section(elf, ".modinfo")?;
    let list = info
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .unwrap_or_default();
    Some(
        String::from_utf8_lossy(list)
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// The bytes of section `wanted` of a 64-bit little-endian ELF file.
fn section<'a>(elf: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |at: usize| usize::try_from(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?)).ok();
    // e_shoff at 0x28, e_shentsize 0x3a, e_shnum 0x3c, e_shstrndx 0x3e;
    // a section header has sh_name at 0, sh_offset at 0x18, sh_size at 0x20.
    let (shoff, shentsize) = (u64_at(0x28)?, usize::from(u16_at(0x3a)?));
    let (shnum, shstrndx) = (usize::from(u16_at(0x3c)?), usize::from(u16_at(0x3e)?));
    let bytes_of = |i: usize| {
        let header = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let (offset, size) = (u64_at(header + 0x18)?, u64_at(header + 0x20)?);
        Some((
            u32_at(header)? as usize,
            elf.get(offset..offset.checked_add(size)?)?,
        ))
    };
    let (_, names) = bytes_of(shstrndx)?;
    (0..shnum).find_map(|i| {
        let (name_at, bytes) = bytes_of(i)?;
        let name = names.get(name_at..)?.split(|b| *b == 0).next()?;
        (name == wanted.as_bytes()).then_some(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_modules_as_the_kernel_does() {
        assert_eq!(
            module_name(Path::new("kernel/net/nft-nat.ko.xz")).as_deref(),
            Some("nft_nat")
        );
        assert_eq!(module_name(Path::new("modules.order")), None);
    }

    #[test]
    fn finds_no_modinfo_in_what_is_not_a_module() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(section(&me, ".text").is_some());
        assert_eq!(depends(&me), None);
        assert_eq!(depends(b"#!/bin/sh\n"), None);
    }
}
