//! Step 1, image: opens the archive (ours, OCI layout, or `docker save`),
//! verifies its index, manifest and config, and works out what to run. Layer
//! blobs are verified later ([`Image::verified_layer`]), when they are read:
//! by [`crate::cache`] only when they are not cached yet, by
//! [`crate::bundle`] and `export` every time.

use crate::{Error, Options, Result};
use builder::archive::{Blob, ImageArchive, Layer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where our images keep the init, and what their entrypoint starts with.
pub const INIT_IN_IMAGE: &str = "/sbin/cradle-init";

/// An opened image: the archive (for reading layers) and its config.
#[derive(Debug)]
pub struct Image {
    pub archive: ImageArchive,
    pub layers: Vec<Layer>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// The image's StopSignal, what a SIGTERM to the launcher becomes (as
    /// `docker stop` sends it).
    pub stop_signal: Option<String>,
}

impl Image {
    /// `layer`'s blob, its size and digest checked against the manifest. A
    /// mismatch is an error of the image, naming the archive (the builder's
    /// error names the blob).
    pub fn verified_layer(&self, layer: &Layer) -> Result<Blob<'_>> {
        self.archive
            .verified_layer(layer)
            .map_err(|source| Error::Image {
                path: self.archive.path().to_path_buf(),
                source: Box::new(source),
            })
    }
}

/// Opens and verifies `path`. `path` may end in `:NAME` to pick a tagged
/// image when the archive holds several (`images.tar:alpine`).
pub fn read(path: &Path) -> Result<Image> {
    let (path, reference) = split_reference(path);
    let wrap = |source| Error::Image {
        path: path.clone(),
        source: Box::new(source),
    };
    let archive = ImageArchive::open(&path).map_err(wrap)?;
    let image = archive.image(reference.as_deref()).map_err(wrap)?;
    let config = image.config.config().clone().unwrap_or_default();
    Ok(Image {
        layers: image.layers,
        entrypoint: config.entrypoint().clone().unwrap_or_default(),
        cmd: config.cmd().clone().unwrap_or_default(),
        env: config.env().clone().unwrap_or_default(),
        workdir: config.working_dir().clone().filter(|w| !w.is_empty()),
        user: config.user().clone().filter(|u| !u.is_empty()),
        stop_signal: config.stop_signal().clone().filter(|s| !s.is_empty()),
        archive,
    })
}

fn split_reference(path: &Path) -> (PathBuf, Option<String>) {
    if path.exists() {
        return (path.to_path_buf(), None);
    }
    let text = path.to_string_lossy();
    match text.rsplit_once(':') {
        Some((file, name)) if Path::new(file).exists() => (file.into(), Some(name.into())),
        _ => (path.to_path_buf(), None),
    }
}

/// The command line the container starts with, docker's rules: `--entrypoint`
/// replaces the image's Entrypoint and drops its Cmd; a command given
/// replaces Cmd.
pub fn argv(image: &Image, opts: &Options) -> Result<Vec<String>> {
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (vec![], opts.command.clone()),
        Some(e) => (vec![e.clone()], opts.command.clone()),
        None if opts.command.is_empty() => (image.entrypoint.clone(), image.cmd.clone()),
        None => (image.entrypoint.clone(), opts.command.clone()),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Error::NoCommand {
            path: opts.image.clone(),
        });
    }
    Ok(argv)
}

/// True when `argv` already starts our init (our images' entrypoint).
pub fn starts_with_init(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| a == INIT_IN_IMAGE)
}

/// The environment: the image's, then `--env-file`s, then `-e`s (later wins),
/// with PATH, HOSTNAME and TERM (with `-t`) defaulted as docker does.
pub fn env(image: &Image, opts: &Options, hostname: &str) -> Result<Vec<String>> {
    let mut vars = Vars::default();
    vars.set(&format!("PATH={DEFAULT_PATH}"));
    vars.set(&format!("HOSTNAME={hostname}"));
    if opts.tty {
        vars.set("TERM=xterm");
    }
    // Only `-e` and `--env-file` may take a value from the launcher's
    // environment: an image's `NAME` alone would read the host's variables.
    image
        .env
        .iter()
        .filter(|e| e.contains('='))
        .for_each(|e| vars.set(e));
    for file in &opts.env_files {
        let text = std::fs::read_to_string(file).map_err(Error::io("reading env file", file))?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .for_each(|l| vars.set(l));
    }
    opts.env.iter().for_each(|e| vars.set(e));
    Ok(vars.into_entries())
}

/// Variables in the order their names first came, each with its last value
/// (docker's merge). The index by name keeps an image's Env of 100,000
/// entries linear: looking each name up in the list took 38 s.
#[derive(Default)]
struct Vars {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Vars {
    /// Sets `NAME=VALUE`; `NAME` alone takes the value from the launcher's
    /// environment, and is dropped when it has none there.
    fn set(&mut self, entry: &str) {
        let (name, value) = match entry.split_once('=') {
            Some((k, v)) => (k, v.to_string()),
            None => match std::env::var(entry) {
                Ok(v) => (entry, v),
                Err(_) => return,
            },
        };
        match self.index.get(name) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(name.to_string(), self.entries.len());
                self.entries.push((name.to_string(), value));
            }
        }
    }

    fn into_entries(self) -> Vec<String> {
        self.entries
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// The signal number of `SIGQUIT`, `QUIT` or `3` (the image's StopSignal).
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = name.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let full = format!("SIG{name}");
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// `--stop-signal`: a name (`SIGUSR1`, `usr1`) or a number, else an error
/// naming it (docker's `invalid signal`).
pub fn parse_stop_signal(text: &str) -> Result<i32> {
    signal_number(text).ok_or_else(|| Error::Flag {
        flag: "--stop-signal",
        value: text.into(),
        why: "invalid signal".into(),
    })
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("x.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &b"[]"[..]).unwrap();
        b.finish().unwrap();
        Image {
            archive: ImageArchive::open(&tar).unwrap(),
            layers: vec![],
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "A=1".into()],
            workdir: None,
            user: None,
            stop_signal: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_follows_docker_rules() {
        let img = image(&["/sbin/cradle-init", "--"], &["/bin/sh"]);
        let mut opts = Options::default();
        assert_eq!(
            argv(&img, &opts).unwrap(),
            strings(&["/sbin/cradle-init", "--", "/bin/sh"])
        );
        opts.command = strings(&["echo", "hi"]);
        assert_eq!(
            argv(&img, &opts).unwrap(),
            strings(&["/sbin/cradle-init", "--", "echo", "hi"])
        );
        opts.entrypoint = Some("/bin/env".into());
        assert_eq!(
            argv(&img, &opts).unwrap(),
            strings(&["/bin/env", "echo", "hi"])
        );
        opts.command.clear();
        assert_eq!(argv(&img, &opts).unwrap(), strings(&["/bin/env"]));
    }

    #[test]
    fn an_image_cannot_read_the_launchers_environment() {
        let mut img = image(&["/bin/sh"], &[]);
        // Set by cargo for the tests it runs.
        img.env = vec!["CARGO_PKG_NAME".into(), "A=1".into()];
        let env = env(&img, &Options::default(), "h").unwrap();
        assert!(std::env::var("CARGO_PKG_NAME").is_ok());
        assert!(
            !env.iter().any(|e| e.starts_with("CARGO_PKG_NAME")),
            "{env:?}"
        );
        assert!(env.contains(&"A=1".to_string()), "{env:?}");
    }

    #[test]
    fn names_stop_signals() {
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("usr1"), Some(libc::SIGUSR1));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
    }

    #[test]
    fn refuses_image_with_nothing_to_run() {
        let img = image(&[], &[]);
        assert!(matches!(
            argv(&img, &Options::default()),
            Err(Error::NoCommand { .. })
        ));
    }

    #[test]
    fn env_keeps_first_places_and_last_values_of_duplicates() {
        let mut img = image(&[], &["x"]);
        img.env = strings(&["A=1", "B=1", "A=2", "PATH=/img", "C=1", "B=2", "A=3"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "# comment\nC=file\nD=file\nA=file\n").unwrap();
        let opts = Options {
            env_files: vec![file],
            env: strings(&["D=flag", "HOSTNAME=flag", "E=flag", "D=flag2"]),
            ..Default::default()
        };
        assert_eq!(
            env(&img, &opts, "h").unwrap(),
            strings(&[
                "PATH=/img",
                "HOSTNAME=flag",
                "A=file",
                "B=2",
                "C=file",
                "D=flag2",
                "E=flag",
            ])
        );
    }

    #[test]
    fn env_later_sources_win() {
        let img = image(&[], &["x"]);
        let opts = Options {
            env: strings(&["A=2", "B=3"]),
            tty: true,
            ..Default::default()
        };
        let env = env(&img, &opts, "h").unwrap();
        assert_eq!(
            env,
            strings(&["PATH=/bin", "HOSTNAME=h", "TERM=xterm", "A=2", "B=3"])
        );
    }
}
