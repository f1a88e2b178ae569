//! Def step: reads and checks an image definition (`images/NAME/image.toml`;
//! the schema is documented in `images/README.md`): its tag, its base (what
//! the image starts from), the files copied in, and the configuration.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An image definition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// The image's name, e.g. `localhost/cradle/default:latest`.
    pub tag: String,
    /// `[base]`, or `[rootfs]` as definitions first called it.
    #[serde(alias = "base")]
    pub rootfs: RootfsDef,
    /// `[[copy]]`: files of the build context (the definition's folder)
    /// added to the image in one layer.
    #[serde(default)]
    pub copy: Vec<CopyDef>,
    /// `[[run]]`: commands run over the image so far, one layer each.
    #[serde(default)]
    pub run: Vec<RunDef>,
    /// The `[[copy]]` and `[[run]]` tables in the order the file has them:
    /// the order they are applied in.
    #[serde(skip)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub config: ConfigDef,
    /// `sbom = true` (or `builder build --sbom`): attach an SPDX document of
    /// the image's packages and added files.
    #[serde(default)]
    pub sbom: bool,
    /// `[services.NAME]`: services for cradle-init to supervise, written to
    /// `/etc/cradle/services.d/NAME.toml` (keys as the init documents them).
    /// Each kept as the text of that file.
    #[serde(default, deserialize_with = "services_as_text")]
    pub services: BTreeMap<String, String>,
    /// The directory of the definition file: relative paths start here.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// `[base]` (or `[rootfs]`): what the image starts from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsDef {
    /// `https://…`, `http://…`, `file://…` or a path (a rootfs tarball, or
    /// an OCI or `docker save` archive), `docker://REFERENCE`, `images/NAME`
    /// (another definition), `host` or `scratch`.
    pub source: String,
    /// Hex sha256 of the tarball or archive; required for a tarball.
    pub sha256: Option<String>,
    /// Host programs to copy into `/bin`, with their libraries: the whole
    /// rootfs with `source = "host"`, a layer of their own on any other base.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Programs copied like `programs` when this machine has them.
    #[serde(default)]
    pub optional_programs: Vec<String>,
}

/// `[[copy]]`: files from the build context into the image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyDef {
    /// A file, a directory or a glob (`*`, `?` within a name), relative to
    /// the definition's folder, never out of it.
    pub src: String,
    /// Where in the image: an absolute path. A directory when it ends with
    /// `/`, when `src` is a directory or a glob.
    pub dest: String,
    /// `UID[:GID]`, numeric; root's when absent.
    pub owner: Option<String>,
    /// Octal mode for the files copied (`"0644"`); their own when absent.
    pub mode: Option<String>,
    /// Globs of paths (relative to `src` when it is a directory) left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The directory `src` is relative to, when not the definition's
    /// folder (a Containerfile's `COPY --from=STAGE`: that stage's rootfs).
    #[serde(skip)]
    pub context: Option<PathBuf>,
}

/// `[[run]]`: a command run over the image so far, in the launcher's
/// sandbox; what it changes becomes one layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDef {
    /// The argv, run as it is (exec form).
    #[serde(default)]
    pub command: Vec<String>,
    /// A shell command line, run with `/bin/sh -c` (shell form); exactly
    /// one of `command` and `shell`.
    pub shell: Option<String>,
    /// `NAME=value` pairs for this step, over the image's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// The directory the command starts in (the image's when absent).
    pub workdir: Option<String>,
    /// UID[:GID] or a name of the image's (the image's user when absent).
    pub user: Option<String>,
    /// The step's network: `none` (the default) or what `launcher run
    /// --network` takes.
    pub network: Option<String>,
}

impl RunDef {
    /// The argv the step runs.
    pub fn argv(&self) -> Vec<String> {
        match &self.shell {
            Some(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            None => self.command.clone(),
        }
    }
}

/// One step of a definition, by its index in [`ImageDef::copy`] or
/// [`ImageDef::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Copy(usize),
    Run(usize),
}

/// `[config]`: the container configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDef {
    /// Arguments after `/sbin/cradle-init --`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `NAME=value` pairs; `PATH` gets a default when missing.
    #[serde(default)]
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// `[services.NAME]` tables, each written back as the text of its file.
fn services_as_text<'de, D>(de: D) -> std::result::Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let tables = BTreeMap::<String, toml::Table>::deserialize(de)?;
    tables
        .into_iter()
        .map(|(name, table)| {
            toml::to_string(&table)
                .map(|text| (name, text))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// Where the rootfs comes from, once the definition is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Programs copied from this machine, with their shared libraries: the
    /// required ones, then those skipped when missing.
    Host(Vec<String>, Vec<String>),
    /// An `http://` or `https://` URL.
    Url(String),
    /// A local file (`file://` URL or path): a rootfs tarball, or an image
    /// archive (OCI layout or `docker save`), told apart by their contents.
    File(PathBuf),
    /// An image in a registry (`docker://REFERENCE`), pulled.
    Registry(String),
    /// Another definition (`images/NAME`): the `image.toml` it names.
    Definition(PathBuf),
    /// Nothing: the image is its copies and the init.
    Scratch,
}

/// The URL schemes a source may have.
const SCHEMES: [&str; 4] = ["http", "https", "file", "docker"];

impl ImageDef {
    /// Reads the definition at `path`.
    pub fn load(path: &Path) -> Result<ImageDef> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::DefinitionRead {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        ImageDef::parse(&text, path, dir)
    }

    /// Parses `text` (read from `path`, whose relative sources start at `dir`).
    pub fn parse(text: &str, path: &Path, dir: PathBuf) -> Result<ImageDef> {
        let mut def: ImageDef = toml::from_str(text).map_err(|source| Error::Definition {
            path: path.to_path_buf(),
            source,
        })?;
        def.dir = dir;
        def.steps = step_order(text);
        let invalid = |what: &str| Error::DefinitionInvalid {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        if let Some((scheme, _)) = def.rootfs.source.split_once("://")
            && !SCHEMES.contains(&scheme)
        {
            return Err(invalid(&format!(
                "unsupported source scheme `{scheme}://` in `{}` (use https://, http://, file://, docker://, a path, `images/NAME`, `host` or `scratch`)",
                def.rootfs.source
            )));
        }
        // Digests are compared as text; `sha256sum` prints lowercase, a
        // copy from elsewhere may not.
        if let Some(digest) = &mut def.rootfs.sha256 {
            *digest = digest.to_ascii_lowercase();
        }
        match (def.source(), &def.rootfs.sha256) {
            (Source::Host(programs, _), _) if programs.is_empty() => {
                return Err(invalid("`rootfs.programs` is empty"));
            }
            (Source::Host(..), _) => {}
            (Source::Registry(_) | Source::Scratch | Source::Definition(_), Some(_)) => {
                return Err(invalid(
                    "`sha256` is only for a tarball or an archive (pin a registry image with `@sha256:…`)",
                ));
            }
            (Source::Registry(reference), None) => check_reference(&reference, path)?,
            (Source::Scratch | Source::Definition(_), None) => {}
            (_, Some(digest)) => check_digest(digest)?,
            // An image archive names its blobs by digest; a tarball must be pinned.
            (Source::File(file), None) if crate::base::is_image_archive(&file) => {}
            (_, None) => return Err(invalid("`rootfs.sha256` is missing")),
        }
        if def.tag.is_empty() {
            return Err(invalid("`tag` is empty"));
        }
        def.check_services(path)?;
        // `podman load` refuses a tag that is no reference, after the build.
        if crate::registry::Reference::parse(&def.tag).is_err() {
            return Err(invalid(&format!(
                "`tag = \"{}\"` is not an image reference ([REGISTRY/]REPOSITORY[:TAG], lowercase)",
                def.tag
            )));
        }
        for copy in &def.copy {
            crate::copy::check(copy).map_err(|what| invalid(&what))?;
        }
        for (i, run) in def.run.iter().enumerate() {
            if run.command.is_empty() == run.shell.is_none() {
                return Err(invalid(&format!(
                    "`[[run]]` number {}: give exactly one of `command = [argv…]` and `shell = \"…\"`",
                    i + 1
                )));
            }
        }
        Ok(def)
    }

    /// Each `[services.NAME]` as the file the init reads, by name.
    pub fn service_files(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .map(|(name, text)| (name.clone(), text.clone()))
            .collect()
    }

    /// Checks the services with the init's own parser, so that an image
    /// whose init would refuse to start is refused at build time, naming
    /// the key.
    fn check_services(&self, path: &Path) -> Result<()> {
        let invalid = |name: &str, key: &str, problem: &str| Error::DefinitionInvalid {
            path: path.to_path_buf(),
            what: if key.is_empty() {
                format!("`services.{name}`: {problem}")
            } else {
                format!("`services.{name}.{key}`: {problem}")
            },
        };
        let mut defs = Vec::new();
        for (name, text) in self.service_files() {
            let def = init::services::definition::parse(&name, &name, &text)
                .map_err(|r| invalid(&name, &r.key, &r.problem))?;
            defs.push(def);
        }
        init::services::definition::order(&defs)
            .map(drop)
            .map_err(|r| invalid(&r.file, &r.key, &r.problem))
    }

    /// The rootfs source, relative paths resolved against [`ImageDef::dir`].
    pub fn source(&self) -> Source {
        let source = self.rootfs.source.as_str();
        if source == "host" {
            Source::Host(
                self.rootfs.programs.clone(),
                self.rootfs.optional_programs.clone(),
            )
        } else if source == "scratch" {
            Source::Scratch
        } else if let Some(reference) = source.strip_prefix("docker://") {
            Source::Registry(reference.to_string())
        } else if let Some(toml) = self.definition(source) {
            Source::Definition(toml)
        } else if source.starts_with("http://") || source.starts_with("https://") {
            Source::Url(source.to_string())
        } else if let Some(path) = source.strip_prefix("file://") {
            Source::File(PathBuf::from(path))
        } else {
            Source::File(self.dir.join(source))
        }
    }

    /// `images/NAME` as another definition's `image.toml`: looked for from
    /// this definition's folder up (`images/app` finds `images/default`
    /// from `images/app/`), the nearest first.
    fn definition(&self, source: &str) -> Option<PathBuf> {
        if !source.starts_with("images/") || source.ends_with(".tar") {
            return None;
        }
        self.dir
            .ancestors()
            .map(|dir| dir.join(source).join("image.toml"))
            .find(|toml| toml.is_file())
    }

    /// The command the image runs, for checking that it is in the rootfs:
    /// the first entrypoint argument, else the first of `cmd`.
    pub fn command(&self) -> Option<&str> {
        let config = &self.config;
        config
            .entrypoint
            .first()
            .or(config.cmd.first())
            .map(String::as_str)
    }
}

/// The `[[copy]]` and `[[run]]` tables of the (already parsed) `text` in
/// the order they appear: serde keeps each array's order, not how the two
/// interleave, so their positions are read with spans.
fn step_order(text: &str) -> Vec<Step> {
    #[derive(Deserialize)]
    struct Positions {
        #[serde(default)]
        copy: Vec<toml::Spanned<toml::Table>>,
        #[serde(default)]
        run: Vec<toml::Spanned<toml::Table>>,
    }
    let Ok(positions) = toml::from_str::<Positions>(text) else {
        return Vec::new();
    };
    let mut steps: Vec<(usize, Step)> = positions
        .copy
        .iter()
        .enumerate()
        .map(|(i, t)| (t.span().start, Step::Copy(i)))
        .chain(
            positions
                .run
                .iter()
                .enumerate()
                .map(|(i, t)| (t.span().start, Step::Run(i))),
        )
        .collect();
    steps.sort_by_key(|(at, _)| *at);
    steps.into_iter().map(|(_, step)| step).collect()
}

/// Checks that a `docker://` source is an image reference.
fn check_reference(reference: &str, path: &Path) -> Result<()> {
    crate::registry::Reference::parse(reference)
        .map(drop)
        .map_err(|_| Error::DefinitionInvalid {
            path: path.to_path_buf(),
            what: format!("`docker://{reference}` is not an image reference"),
        })
}

/// Checks that `digest` is 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<()> {
    let hex = digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        Ok(())
    } else {
        Err(Error::BadDigest {
            value: digest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ImageDef> {
        ImageDef::parse(text, Path::new("image.toml"), PathBuf::from("/defs"))
    }

    #[test]
    fn steps_keep_the_files_order_across_copy_and_run() {
        let def = parse(
            "tag = \"t\"\n[base]\nsource = \"scratch\"\n\
             [[run]]\nshell = \"echo one\"\n\
             [[copy]]\nsrc = \"a\"\ndest = \"/a\"\n\
             [[run]]\ncommand = [\"/bin/true\"]\n\
             [[copy]]\nsrc = \"b\"\ndest = \"/b\"\n\
             [config]\ncmd = [\"x\"]\n",
        )
        .unwrap();
        assert_eq!(
            def.steps,
            [Step::Run(0), Step::Copy(0), Step::Run(1), Step::Copy(1)]
        );
        assert_eq!(def.run[0].argv(), ["/bin/sh", "-c", "echo one"]);
        assert_eq!(def.run[1].argv(), ["/bin/true"]);
        for bad in ["[[run]]\n", "[[run]]\nshell = \"x\"\ncommand = [\"y\"]\n"] {
            let text = format!("tag = \"t\"\n[base]\nsource = \"scratch\"\n{bad}");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("exactly one of"), "{err}");
        }
    }

    #[test]
    fn reads_sources() {
        let sha = "0".repeat(64);
        let cases = [
            (
                "https://x/r.tar.gz",
                Source::Url("https://x/r.tar.gz".into()),
            ),
            ("file:///srv/r.tar", Source::File("/srv/r.tar".into())),
            ("r.tar", Source::File("/defs/r.tar".into())),
        ];
        for (source, want) in cases {
            let def = parse(&format!(
                "tag = \"t\"\n[rootfs]\nsource = \"{source}\"\nsha256 = \"{sha}\"\n"
            ))
            .unwrap();
            assert_eq!(def.source(), want);
        }
        let def = parse("tag = \"t\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\"]\n").unwrap();
        assert_eq!(def.source(), Source::Host(vec!["sh".into()], vec![]));
    }

    #[test]
    fn refuses_bad_definitions() {
        let bad = [
            "tag = \"t\"\n[rootfs]\nsource = \"r.tar\"\n",
            "tag = \"t\"\n[rootfs]\nsource = \"r.tar\"\nsha256 = \"abc\"\n",
            "tag = \"t\"\n[rootfs]\nsource = \"host\"\n",
            "tag = \"t\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\"]\ncolour = 1\n",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    const HOST: &str = "tag = \"t\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\"]\n";

    #[test]
    fn reads_services_as_the_files_the_init_reads() {
        let def = parse(&format!(
            "{HOST}[services.web]\ncommand = [\"/bin/srv\", \"-p\", \"8080\"]\n\
             depends_on = [\"db\"]\nready = {{ tcp = 8080 }}\nenv = {{ A = \"1\" }}\n\
             [services.db]\ncommand = [\"/bin/db\"]\nrestart = \"always\"\n"
        ))
        .unwrap();
        let files = def.service_files();
        assert_eq!(files.len(), 2);
        for (name, text) in &files {
            let parsed = init::services::definition::parse(name, name, text).unwrap();
            assert_eq!(&parsed.name, name);
        }
        let web = init::services::definition::parse("web", "web", &files[1].1).unwrap();
        assert_eq!(web.ready, init::services::definition::Ready::Tcp(8080));
        assert_eq!(web.depends_on, ["db"]);
    }

    #[test]
    fn refuses_services_the_init_would_refuse_naming_the_key() {
        for (services, what) in [
            (
                "[services.web]\ncommand = [\"x\"]\nrestrat = \"always\"\n",
                "`services.web.restrat`: unknown key",
            ),
            (
                "[services.web]\ntype = \"oneshot\"\n",
                "`services.web.command`: missing",
            ),
            (
                "[services.web]\ncommand = [\"x\"]\ndepends_on = [\"ghost\"]\n",
                "`services.web.depends_on`: no service is named `ghost`",
            ),
            (
                "[services.\"../x\"]\ncommand = [\"x\"]\n",
                "`services.../x`: ",
            ),
        ] {
            let err = parse(&format!("{HOST}{services}")).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }
}
