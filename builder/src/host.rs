//! Host step, for `source = "host"` (instead of fetch, verify and unpack):
//! a rootfs made of this machine's own programs in `/bin`, each with every
//! shared library it needs (and its program interpreter) at the path where
//! the dynamic loader looks for it, as `lddtree` resolves them.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where host programs are looked for, in order; a fixed list rather than
/// `PATH`, so the image does not depend on who builds it.
const SEARCH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Copies `programs` (names, or absolute paths) into `<rootfs>/bin`, with
/// their libraries, and those of `optional` that this machine has.
pub fn copy_programs(programs: &[String], optional: &[String], rootfs: &Path) -> Result<()> {
    let present = optional.iter().filter(|name| find_program(name).is_ok());
    for name in programs.iter().chain(present) {
        let program = find_program(name)?;
        let file_name = program.file_name().unwrap_or(program.as_os_str());
        let base = Path::new(name).file_name().unwrap_or(file_name);
        copy_file(&program, &rootfs.join("bin").join(base))?;
        for library in libraries_of(&program)? {
            copy_file(&library, &inside(rootfs, &library))?;
        }
    }
    Ok(())
}

fn find_program(name: &str) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![PathBuf::from(name)]
    } else {
        SEARCH.iter().map(|dir| Path::new(dir).join(name)).collect()
    };
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .ok_or_else(|| Error::HostProgram {
            name: name.to_string(),
        })
}

/// The interpreter and every library `program` needs, transitively, at the
/// paths the dynamic loader finds them (`/lib64/ld-linux-x86-64.so.2`,
/// `/lib/x86_64-linux-gnu/libc.so.6` …). A static program needs none.
fn libraries_of(program: &Path) -> Result<Vec<PathBuf>> {
    let tree = lddtree::DependencyAnalyzer::new(PathBuf::from("/"))
        .analyze(program)
        .map_err(|source| Error::Libraries {
            program: program.to_path_buf(),
            source,
        })?;
    let mut paths: Vec<PathBuf> = tree.interpreter.iter().map(PathBuf::from).collect();
    for (name, library) in &tree.libraries {
        if !library.found() {
            return Err(Error::MissingLibrary {
                program: program.to_path_buf(),
                library: name.clone(),
            });
        }
        paths.push(library.path.clone());
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// `path` (absolute, on the host) moved under `rootfs`.
fn inside(rootfs: &Path, path: &Path) -> PathBuf {
    rootfs.join(path.strip_prefix("/").unwrap_or(path))
}

/// Copies the file `from` (following symlinks: the rootfs gets the real
/// bytes) to `to`, creating parents; a file already there is kept.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        make_dirs(parent)?;
    }
    std::fs::copy(from, to).map_err(Error::io("copying", from))?;
    Ok(())
}

/// `create_dir_all` with mode 0755 whatever the umask: the image must not
/// depend on who built it.
fn make_dirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent)?;
    }
    std::fs::create_dir(dir).map_err(Error::io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("setting the mode of", dir))
}
