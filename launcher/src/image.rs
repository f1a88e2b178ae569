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
    /// docker's `Healthcheck` of the config (not in OCI's schema), when
    /// it has one that is not `NONE`.
    pub healthcheck: crate::health::ImageCheck,
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
/// image when the archive holds several (`images.tar:alpine`,
/// `saved.tar:docker.io/library/alpine:3.19`). An archive of several images
/// without a name is refused, listing them: running the first of them
/// silently ran whichever `docker save` happened to write first.
pub fn read(path: &Path) -> Result<Image> {
    let (path, archive, reference) = open_named(path)?;
    let wrap = |source| Error::Image {
        path: path.clone(),
        source: Box::new(source),
    };
    if reference.is_none() {
        let images = distinct_images(&archive).map_err(wrap)?;
        if images.len() > 1 {
            return Err(Error::SeveralImages {
                path: path.clone(),
                names: images.join(", "),
            });
        }
    }
    let image = archive.image(reference.as_deref()).map_err(wrap)?;
    let config = image.config.config().clone().unwrap_or_default();
    let healthcheck = healthcheck(&archive, &image).map_err(|err| crate::monitor::chain(&err));
    Ok(Image {
        healthcheck,
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

/// docker's `config.Healthcheck` of `image`, which oci-spec's config has
/// no field for: read from the config's bytes.
fn healthcheck(
    archive: &ImageArchive,
    image: &builder::archive::Image,
) -> Result<Option<crate::health::Check>> {
    let bytes = archive.config_bytes(image).map_err(|source| Error::Image {
        path: archive.path().to_path_buf(),
        source: Box::new(source),
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    crate::health::from_image_config(&value)
}

/// The archive `path` names and the image name after it, if any. A name
/// may hold colons itself (every `docker save` tag, every registry name
/// with a port), so each colon is a candidate split: the archive before it
/// must exist, and the name after it is taken when the archive has an
/// image of that name ([`same_name`]). A name no candidate has is an error
/// listing the names there are.
fn open_named(path: &Path) -> Result<(PathBuf, ImageArchive, Option<String>)> {
    let open = |file: &Path| {
        ImageArchive::open(file).map_err(|source| Error::Image {
            path: file.to_path_buf(),
            source: Box::new(source),
        })
    };
    if path.exists() {
        return Ok((path.to_path_buf(), open(path)?, None));
    }
    let text = path.to_string_lossy();
    let mut first_miss = None;
    for (at, _) in text.match_indices(':') {
        let (file, asked) = (Path::new(&text[..at]), &text[at + 1..]);
        if !file.is_file() {
            continue;
        }
        let archive = open(file)?;
        let names = archive.names().map_err(|source| Error::Image {
            path: file.to_path_buf(),
            source: Box::new(source),
        })?;
        // An exact name first: normalized, `a` and `docker.io/library/a`
        // are the same, and an archive may hold both.
        let found = names
            .iter()
            .find(|n| *n == asked)
            .or_else(|| names.iter().find(|n| same_name(n, asked)));
        if let Some(name) = found {
            return Ok((file.to_path_buf(), archive, Some(name.clone())));
        }
        first_miss.get_or_insert((file.to_path_buf(), asked.to_string(), names));
    }
    match first_miss {
        Some((file, name, names)) => Err(Error::NoSuchImageInArchive {
            path: file,
            name,
            names: match names.is_empty() {
                true => "none: its images have no names".into(),
                false => names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        }),
        // Nothing before any colon exists: the error names the whole path.
        None => Ok((path.to_path_buf(), open(path)?, None)),
    }
}

/// An archive's name for an image and the name asked for are the same:
/// equal, or equal once both are read as references (`alpine` is
/// `docker.io/library/alpine:latest`, as docker and podman write it).
fn same_name(name: &str, asked: &str) -> bool {
    use builder::registry::Reference;
    if name == asked {
        return true;
    }
    match (Reference::parse(name), Reference::parse(asked)) {
        (Ok(a), Ok(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// The archive's images, each shown by its names: names that lead to the
/// same manifest are one image (`docker save a:1 a:latest`).
fn distinct_images(archive: &ImageArchive) -> builder::Result<Vec<String>> {
    let names = archive.names()?;
    if names.len() < 2 {
        return Ok(names);
    }
    let mut images: Vec<(String, Vec<String>)> = Vec::new();
    for name in names {
        let id = archive.image(Some(&name))?.id;
        match images.iter_mut().find(|(i, _)| *i == id) {
            Some((_, names)) => names.push(name),
            None => images.push((id, vec![name])),
        }
    }
    Ok(images
        .into_iter()
        .map(|(_, names)| format!("`{}`", names.join("` = `")))
        .collect())
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

/// What PID 1 runs, and whether our init must be bound at
/// [`INIT_IN_IMAGE`] for it, after docker's rules ([`argv`]):
///
/// - with the init (the default), PID 1 is cradle-init running the
///   command: our images' Entrypoint already starts it; any other command
///   line (a foreign image's, or an `--entrypoint`, which replaces ours)
///   gets it put in front, and our own static init bound, so that it is
///   the init we know whatever the image has at that path;
/// - with `--no-init`, the command itself is PID 1, as docker runs it
///   without `--init`: our images' `/sbin/cradle-init --` is dropped from
///   their Entrypoint; an `--entrypoint` is run as given.
pub fn pid1_argv(image: &Image, opts: &Options) -> Result<(Vec<String>, bool)> {
    let mut argv = argv(image, opts)?;
    match (opts.no_init, starts_with_init(&argv)) {
        (true, true) if opts.entrypoint.is_none() => {
            let skip = if argv.get(1).is_some_and(|a| a == "--") {
                2
            } else {
                1
            };
            argv.drain(..skip);
            if argv.is_empty() {
                return Err(Error::NoCommand {
                    path: opts.image.clone(),
                });
            }
            Ok((argv, false))
        }
        (true, _) | (false, true) => Ok((argv, false)),
        (false, false) => {
            argv.splice(0..0, [INIT_IN_IMAGE.to_string(), "--".to_string()]);
            Ok((argv, true))
        }
    }
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
        let bytes = std::fs::read(file).map_err(Error::io("reading env file", file))?;
        for entry in parse_env_file(&bytes).map_err(|(line, why)| Error::EnvFile {
            path: file.clone(),
            line,
            why,
        })? {
            vars.set(&entry);
        }
    }
    for entry in &opts.env {
        let name = entry
            .split_once('=')
            .map_or(entry.as_str(), |(name, _)| name);
        check_env_name(name).map_err(|why| Error::InvalidEnv {
            entry: entry.clone(),
            why,
        })?;
        vars.set(entry);
    }
    Ok(vars.into_entries())
}

/// A variable's name as `-e` and env files take it: not empty, and without
/// blanks (docker's rule; `export X` or `X ` is a mistake in the file, not
/// a name).
pub fn check_env_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.contains([' ', '\t']) {
        return Err(format!("the name `{name}` contains whitespace"));
    }
    Ok(())
}

/// The entries of an `--env-file`, by docker's rules (moby's
/// `opts/envfile.go`): a UTF-8 BOM is dropped; each line loses its leading
/// whitespace and is skipped when empty or a `#` comment; `NAME=VALUE`
/// keeps its value exactly (trailing blanks too); a name alone is passed
/// from the launcher's environment ([`Vars::set`]). A name that is empty
/// or has blanks, and bytes that are not UTF-8, are errors: the line's
/// number and what is wrong with it.
pub fn parse_env_file(bytes: &[u8]) -> std::result::Result<Vec<String>, (usize, String)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    // Lines as Go's bufio.ScanLines cuts them: at \n, less one \r before it.
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (number, raw) in lines.into_iter().enumerate().map(|(i, l)| (i + 1, l)) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw)
            .map_err(|_| (number, "it is not UTF-8".to_string()))?
            .trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split_once('=').map_or(line, |(name, _)| name);
        check_env_name(name).map_err(|why| (number, format!("`{line}`: {why}")))?;
        out.push(line.to_string());
    }
    Ok(out)
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
            healthcheck: Ok(None),
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
    fn pid1_is_the_init_unless_no_init() {
        let ours = image(&["/sbin/cradle-init", "--"], &["/bin/sh"]);
        let foreign = image(&[], &["/bin/sh"]);
        let init = |rest: &[&str]| {
            let mut v = strings(&["/sbin/cradle-init", "--"]);
            v.extend(strings(rest));
            v
        };
        for (img, entrypoint, no_init, want, bind) in [
            (&ours, None, false, init(&["/bin/sh"]), false),
            (&ours, None, true, strings(&["/bin/sh"]), false),
            (&ours, Some("/app"), false, init(&["/app"]), true),
            (&ours, Some("/app"), true, strings(&["/app"]), false),
            (&foreign, None, false, init(&["/bin/sh"]), true),
            (&foreign, None, true, strings(&["/bin/sh"]), false),
            (&foreign, Some("/app"), false, init(&["/app"]), true),
            (&foreign, Some("/app"), true, strings(&["/app"]), false),
        ] {
            let opts = Options {
                entrypoint: entrypoint.map(str::to_string),
                no_init,
                ..Default::default()
            };
            assert_eq!(
                pid1_argv(img, &opts).unwrap(),
                (want, bind),
                "{:?} {entrypoint:?} {no_init}",
                img.entrypoint
            );
        }
        // Our init and nothing else: without it nothing is left to run.
        let bare = image(&["/sbin/cradle-init", "--"], &[]);
        let opts = Options {
            no_init: true,
            ..Default::default()
        };
        assert!(matches!(
            pid1_argv(&bare, &opts),
            Err(Error::NoCommand { .. })
        ));
    }

    #[test]
    fn env_files_are_read_by_dockers_rules() {
        let parse = |text: &[u8]| parse_env_file(text);
        assert_eq!(
            parse(b"\xEF\xBB\xBFA=1 \r\n\t B= x \n#c\n  # c\n\nC\nD==\n").unwrap(),
            strings(&["A=1 ", "B= x ", "C", "D=="])
        );
        assert_eq!(parse(b"").unwrap(), Vec::<String>::new());
        for (text, line, why) in [
            (&b"export X=1"[..], 1, "`export X` contains whitespace"),
            (&b"A=1\nX =1"[..], 2, "`X ` contains whitespace"),
            (&b"=1"[..], 1, "the name is empty"),
            (&b"A=\xff"[..], 1, "not UTF-8"),
        ] {
            let (at, text) = parse(text).unwrap_err();
            assert_eq!(at, line, "{text}");
            assert!(text.contains(why), "{text}");
        }
    }

    #[test]
    fn archive_names_match_as_references() {
        assert!(same_name("docker.io/library/alpine:3.19", "alpine:3.19"));
        assert!(same_name("alpine:latest", "alpine"));
        assert!(same_name("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"));
        assert!(!same_name("alpine:3.19", "alpine"));
        assert!(!same_name("localhost:5000/a/b:v1", "localhost:5001/a/b:v1"));
        // OCI layouts often name an image by its tag alone.
        assert!(same_name("v1", "v1"));
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
