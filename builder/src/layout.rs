//! Layout step: completes the rootfs with the directories every container
//! needs (`proc sys dev tmp run …`, with their usual modes), a minimal
//! `/etc/passwd` and `/etc/group` when there are none, and checks that the
//! configured command is there.

use crate::def::ImageDef;
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Directories made when missing, with their modes (`/tmp` sticky and
/// world-writable, `/proc` and `/sys` read-only mount points).
pub(crate) const DIRS: [(&str, u32); 12] = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("lib", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
];

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The `PATH` of an image that sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Completes `rootfs` for `def`; returns warnings for the caller to show.
pub fn complete(rootfs: &Path, def: &ImageDef) -> Result<Vec<String>> {
    make_missing_dirs(rootfs)?;
    write_if_missing(rootfs, "etc/passwd", PASSWD)?;
    write_if_missing(rootfs, "etc/group", GROUP)?;
    write_services(rootfs, def)?;
    Ok(check_command(rootfs, def).into_iter().collect())
}

/// Where cradle-init looks for service definitions.
pub const SERVICES_DIR: &str = "etc/cradle/services.d";

/// Writes each `[services.NAME]` to `/etc/cradle/services.d/NAME.toml`.
/// Nothing is written through a symlink, and a definition the rootfs has
/// already is an error rather than silently replaced or kept.
fn write_services(rootfs: &Path, def: &ImageDef) -> Result<()> {
    if def.services.is_empty() {
        return Ok(());
    }
    let mut path = rootfs.to_path_buf();
    for component in Path::new(SERVICES_DIR).components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(Error::DefinitionInvalid {
                    path: path.clone(),
                    what: "is in the rootfs but not a directory (a symlink?); services cannot be written there".into(),
                });
            }
            Err(_) => std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .map_err(Error::io("creating", &path))?,
        }
    }
    for (name, text) in def.service_files() {
        let rel = format!("{SERVICES_DIR}/{name}.toml");
        if std::fs::symlink_metadata(rootfs.join(&rel)).is_ok() {
            return Err(Error::DefinitionInvalid {
                path: rootfs.join(&rel),
                what: format!("the rootfs has it already; `[services.{name}]` would replace it"),
            });
        }
        write_if_missing(rootfs, &rel, &text)?;
    }
    Ok(())
}

fn make_missing_dirs(rootfs: &Path) -> Result<()> {
    for (dir, mode) in DIRS {
        // A symlink (`bin -> usr/bin`) counts as present, and nothing is
        // created through one: it might point out of the rootfs.
        if has_symlink_or_entry(rootfs, Path::new(dir)) {
            continue;
        }
        let path = rootfs.join(dir);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(Error::io("creating", &path))?;
        // Set explicitly: the umask would have trimmed the mode.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io("setting the mode of", &path))?;
    }
    Ok(())
}

/// True when `rel` exists in `rootfs` or one of its components is a symlink.
fn has_symlink_or_entry(rootfs: &Path, rel: &Path) -> bool {
    let mut path = rootfs.to_path_buf();
    for component in rel.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

fn write_if_missing(rootfs: &Path, rel: &str, contents: &str) -> Result<()> {
    let dir = rootfs.join(Path::new(rel).parent().unwrap_or(Path::new("")));
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let path = rootfs.join(rel);
    // create_new: never writes through a (dangling) symlink.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, contents.as_bytes())
                .map_err(Error::io("writing", &path))?;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(Error::io("setting the mode of", &path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("creating", &path)(e)),
    }
}

/// A warning when the command the image runs is not an executable file in
/// the rootfs (looked up on the image's `PATH`, symlinks resolved inside it).
fn check_command(rootfs: &Path, def: &ImageDef) -> Option<String> {
    let Some(command) = def.command() else {
        return Some("the image has no command: set `config.cmd` or `config.entrypoint`".into());
    };
    let candidates: Vec<String> = if command.contains('/') {
        let workdir = def.config.workdir.as_deref().unwrap_or("/");
        vec![Path::new(workdir).join(command).display().to_string()]
    } else {
        let path = def
            .config
            .env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|dir| format!("{dir}/{command}"))
            .collect()
    };
    if candidates
        .iter()
        .any(|c| executable_in(rootfs, Path::new(c)) || copied(def, Path::new(c)))
    {
        return None;
    }
    Some(format!(
        "the command `{command}` is not an executable in the rootfs"
    ))
}

/// Whether a `[[copy]]` puts a file at `path` (the copies come after this
/// check, in a layer of their own): its `dest`, or `dest/NAME` for a
/// directory destination and a source named NAME.
fn copied(def: &ImageDef, path: &Path) -> bool {
    def.copy.iter().any(|copy| {
        let dest = Path::new(&copy.dest);
        let name = Path::new(&copy.src).file_name();
        dest == path || name.is_some_and(|name| dest.join(name) == path)
    })
}

/// Whether `path` names an executable file in `root`, resolving symlinks
/// as if `root` were `/` (at most 40 of them, as the kernel does).
pub fn executable_in(root: &Path, path: &Path) -> bool {
    let mut todo: Vec<OsString> = components(path);
    let mut current = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&part);
        let Ok(meta) = std::fs::symlink_metadata(root.join(&next)) else {
            return false;
        };
        if !meta.file_type().is_symlink() {
            current = next;
            continue;
        }
        hops += 1;
        let Ok(target) = std::fs::read_link(root.join(&next)) else {
            return false;
        };
        if hops > 40 {
            return false;
        }
        if target.is_absolute() {
            current = PathBuf::new();
        }
        todo.extend(components(&target));
    }
    std::fs::metadata(root.join(current))
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The normal and `..` components of `path`, last first (a stack).
fn components(path: &Path) -> Vec<OsString> {
    let mut parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/busybox"), "").unwrap();
        std::fs::set_permissions(
            r.join("usr/bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", r.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("usr/bin/host")).unwrap();
        assert!(executable_in(r, Path::new("/bin/sh")));
        assert!(executable_in(r, Path::new("/usr/bin/../bin/busybox")));
        // Absolute symlinks resolve inside the root, never to the host's file.
        assert!(!executable_in(r, Path::new("/usr/bin/host")));
        assert!(!executable_in(r, Path::new("/bin/missing")));
    }

    fn with_services(services: &str) -> ImageDef {
        ImageDef::parse(
            &format!("tag = \"t\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\"]\n{services}"),
            Path::new("image.toml"),
            PathBuf::from("/"),
        )
        .unwrap()
    }

    #[test]
    fn writes_services_where_the_init_reads_them() {
        let root = tempfile::tempdir().unwrap();
        let def = with_services("[services.web]\ncommand = [\"/bin/sh\"]\n");
        complete(root.path(), &def).unwrap();
        let file = root.path().join(SERVICES_DIR).join("web.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            init::services::definition::parse("web", "web", &text).is_ok(),
            "{text}"
        );
    }

    #[test]
    fn refuses_to_write_services_through_a_symlink_or_over_the_rootfs_s_own() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/cradle")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join(SERVICES_DIR)).unwrap();
        let def = with_services("[services.web]\ncommand = [\"/bin/sh\"]\n");
        let err = complete(root.path(), &def).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(SERVICES_DIR)).unwrap();
        std::fs::write(root.path().join(SERVICES_DIR).join("web.toml"), "x").unwrap();
        let err = complete(root.path(), &def).unwrap_err().to_string();
        assert!(err.contains("has it already"), "{err}");
    }
}
