//! What `-v` and `--mount` ask for, in docker's syntax, as the bind mounts
//! and tmpfs mounts of [`super::volumes`]:
//!
//! - `-v /HOST:/CTR[:ro]` binds a host path, `-v NAME:/CTR[:ro]` a named
//!   volume: a directory under the state root's `volumes/NAME`, made on
//!   first use and then filled with what the image has at `/CTR` (docker's
//!   copy-up), kept after the container;
//! - `--mount type=bind|volume|tmpfs,src=…,dst=…[,ro][,…]`, docker's
//!   keys (`source`/`src`, `destination`/`dst`/`target`, `readonly`/`ro`,
//!   `volume-nocopy`, `tmpfs-size`, `tmpfs-mode`); an unknown key is an
//!   error, not ignored.

use super::volumes::{Tmpfs, Volume, parse_tmpfs};
use crate::sys::Node;
use crate::{Error, Options, Result};
use std::path::{Path, PathBuf};

/// Every bind mount of `opts`, in order: `-v`, then `--mount`'s binds and
/// volumes. Named volumes live in `state_root/volumes`.
pub fn volumes(opts: &Options, state_root: &Path) -> Result<Vec<Volume>> {
    // (volume, is a named one)
    let mut out = Vec::new();
    for spec in &opts.volumes {
        out.push(match named_volume_spec(spec) {
            Some((name, target, read_only)) => (
                named(state_root, name, target, read_only, true, spec)?,
                true,
            ),
            None => (crate::spawn::parse_volume(spec)?, false),
        });
    }
    for spec in &opts.mounts {
        if let (Some(parsed), _) = parse_mount(spec, state_root)? {
            out.push(parsed);
        }
    }
    // Only once every spec is known good: a bad one leaves no volume made.
    out.into_iter()
        .map(|(mut v, named)| {
            if named {
                v.copy_up &= create_volume(state_root, &v.host)?;
            }
            Ok(v)
        })
        .collect()
}

/// Makes the named volume's directory when missing; true when made now.
fn create_volume(state_root: &Path, host: &Path) -> Result<bool> {
    // The state root was made private by Cache::open; volumes/ is made
    // 0700 as the rest of it.
    make_private_dir(&state_root.join("volumes"))?;
    let created = match std::fs::create_dir(host) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io("creating volume", host)(e)),
    };
    let meta = std::fs::symlink_metadata(host).map_err(Error::io("examining volume", host))?;
    if !meta.is_dir() {
        return Err(Error::Invalid {
            what: "volume (not a directory)",
            value: host.display().to_string(),
        });
    }
    Ok(created)
}

/// Every tmpfs of `opts`: `--tmpfs`, then `--mount type=tmpfs`.
pub fn tmpfs(opts: &Options, default_size: u64, state_root: &Path) -> Result<Vec<Tmpfs>> {
    let mut out = opts
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t, default_size))
        .collect::<Result<Vec<_>>>()?;
    for spec in &opts.mounts {
        if let Some(t) = parse_mount(spec, state_root)?.1 {
            let t = parse_tmpfs(&t, default_size).map_err(|_| Error::Flag {
                flag: "--mount",
                value: spec.clone(),
                why: "bad tmpfs options".into(),
            })?;
            out.push(t);
        }
    }
    Ok(out)
}

/// `NAME:/CTR[:ro|:rw]` where NAME is not a path: a named volume.
fn named_volume_spec(spec: &str) -> Option<(&str, &str, bool)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (name, target, read_only) = match parts[..] {
        [n, t] => (n, t, false),
        [n, t, "ro"] => (n, t, true),
        [n, t, "rw"] => (n, t, false),
        _ => return None,
    };
    (!name.starts_with('/') && !name.starts_with('.') && !name.is_empty())
        .then_some((name, target, read_only))
}

/// docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The named volume `name` at `target`, checked; its directory is made by
/// [`create_volume`], with copy-up then (unless `copy`, `volume-nocopy`,
/// says no).
fn named(
    state_root: &Path,
    name: &str,
    target: &str,
    read_only: bool,
    copy: bool,
    spec: &str,
) -> Result<Volume> {
    let bad = |why: String| Error::Flag {
        flag: if spec.contains('=') {
            "--mount"
        } else {
            "--volume"
        },
        value: spec.into(),
        why,
    };
    if !valid_volume_name(name) {
        return Err(bad(format!(
            "`{name}` includes invalid characters for a local volume name, only \
             `[a-zA-Z0-9][a-zA-Z0-9_.-]` are allowed; for a host directory, give an absolute path"
        )));
    }
    if !target.starts_with('/') || target == "/" {
        return Err(bad("the container path must be absolute and not `/`".into()));
    }
    Ok(Volume {
        host: volume_dir(state_root, name),
        target: target.into(),
        read_only,
        node: Node::Dir,
        locked: nix::mount::MsFlags::empty(),
        copy_up: copy,
    })
}

fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("creating", dir)(e)),
    }
}

/// One `--mount`: a bind or volume (and whether a named one), or a tmpfs
/// as a `--tmpfs` spec.
type Parsed = (Option<(Volume, bool)>, Option<String>);

fn parse_mount(spec: &str, state_root: &Path) -> Result<Parsed> {
    let bad = |why: String| Error::Flag {
        flag: "--mount",
        value: spec.into(),
        why,
    };
    let (mut kind, mut src, mut dst) = ("volume", None, None);
    let (mut read_only, mut nocopy) = (false, false);
    let (mut size, mut mode) = (None, None);
    let flag = |value: Option<&str>, key: &str| match value {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(bad(format!("invalid value `{v}` for `{key}`"))),
    };
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        match (key.to_ascii_lowercase().as_str(), value) {
            ("type", Some(v)) => kind = v,
            ("source" | "src", Some(v)) => src = Some(v),
            ("destination" | "dst" | "target", Some(v)) => dst = Some(v),
            ("readonly" | "ro", v) => read_only = flag(v, key)?,
            ("volume-nocopy", v) => nocopy = flag(v, key)?,
            ("tmpfs-size", Some(v)) => size = Some(v),
            ("tmpfs-mode", Some(v)) => mode = Some(v),
            ("bind-propagation", Some("rprivate" | "private")) => {}
            ("consistency", Some(_)) => {}
            _ => return Err(bad(format!("unexpected key `{field}`"))),
        }
    }
    let dst = dst.ok_or_else(|| bad("a destination is required (dst=…)".into()))?;
    if dst.contains(':') || src.is_some_and(|s| s.contains(':')) {
        return Err(bad("paths with `:` are not supported".into()));
    }
    match kind {
        "bind" => {
            let src = src.ok_or_else(|| bad("a bind mount needs src=…".into()))?;
            if !Path::new(src).exists() {
                return Err(bad(format!("bind source path does not exist: {src}")));
            }
            let ro = if read_only { ":ro" } else { "" };
            let volume = crate::spawn::parse_volume(&format!("{src}:{dst}{ro}"))?;
            Ok((Some((volume, false)), None))
        }
        "volume" => {
            let name = src.ok_or_else(|| {
                bad("anonymous volumes are not supported: name one with src=NAME".into())
            })?;
            let volume = named(state_root, name, dst, read_only, !nocopy, spec)?;
            Ok((Some((volume, true)), None))
        }
        "tmpfs" => {
            if src.is_some() {
                return Err(bad("a tmpfs takes no source".into()));
            }
            let mut options: Vec<String> = Vec::new();
            if read_only {
                options.push("ro".into());
            }
            if let Some(size) = size {
                options.push(format!("size={size}"));
            }
            if let Some(mode) = mode {
                options.push(format!("mode={mode}"));
            }
            Ok((None, Some(format!("{dst}:{}", options.join(",")))))
        }
        other => Err(bad(format!(
            "unknown mount type `{other}` (bind, volume or tmpfs)"
        ))),
    }
}

/// The directory of named volume `name` under `state_root`.
pub fn volume_dir(state_root: &Path, name: &str) -> PathBuf {
    state_root.join("volumes").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(volumes: &[&str], mounts: &[&str]) -> Options {
        Options {
            volumes: volumes.iter().map(|s| s.to_string()).collect(),
            mounts: mounts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn named_volumes_are_made_once_and_copied_up_only_then() {
        let root = tempfile::tempdir().unwrap();
        let o = opts(
            &["data:/var/lib/data:ro"],
            &["type=volume,src=cache,dst=/c,volume-nocopy"],
        );
        let v = volumes(&o, root.path()).unwrap();
        assert_eq!(v[0].host, volume_dir(root.path(), "data"));
        assert!(v[0].copy_up && v[0].read_only);
        assert!(!v[1].copy_up, "volume-nocopy");
        let again = volumes(&o, root.path()).unwrap();
        assert!(!again[0].copy_up);
        // A bad spec after a good one: nothing made.
        let bad = opts(&["fresh:/x"], &["type=nfs,src=a,dst=/y"]);
        assert!(volumes(&bad, root.path()).is_err());
        assert!(!volume_dir(root.path(), "fresh").exists());
    }

    #[test]
    fn mounts_read_like_dockers() {
        let root = tempfile::tempdir().unwrap();
        let o = opts(
            &[],
            &[
                "type=bind,source=/tmp,target=/t,readonly",
                "type=tmpfs,dst=/run,tmpfs-size=1m,tmpfs-mode=1777",
            ],
        );
        let v = volumes(&o, root.path()).unwrap();
        assert_eq!(
            (v[0].target.as_path(), v[0].read_only),
            (Path::new("/t"), true)
        );
        let t = tmpfs(&o, 1 << 30, root.path()).unwrap();
        assert_eq!(t[0].target, Path::new("/run"));
        assert!(
            t[0].data.contains("size=1048576") && t[0].data.contains("mode=1777"),
            "{}",
            t[0].data
        );
        for (spec, want) in [
            (
                "type=bind,src=/nonexistent-x,dst=/x",
                "bind source path does not exist",
            ),
            ("type=bind,dst=/x", "needs src"),
            ("type=volume,dst=/x", "anonymous volumes"),
            ("type=nfs,src=a,dst=/x", "unknown mount type `nfs`"),
            (
                "type=bind,src=/tmp,dst=/x,frob=1",
                "unexpected key `frob=1`",
            ),
            ("type=volume,src=ok-name", "destination is required"),
            ("type=volume,src=bad/name,dst=/x", "invalid characters"),
            (
                "type=bind,src=/tmp,dst=/x,ro=maybe",
                "invalid value `maybe`",
            ),
        ] {
            let err = volumes(&opts(&[], &[spec]), root.path())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want) && err.contains(spec), "{spec}: {err}");
        }
        let err = volumes(&opts(&["a:/x"], &[]), root.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid characters"), "{err}");
    }
}
