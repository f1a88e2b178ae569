//! Run step: a `[[run]]` step's command over the image so far, in the
//! launcher's sandbox (its namespaces, seccomp, capabilities and device
//! rules, rootless in a user namespace when the builder is not root), and
//! what it changed as one layer ([`crate::upper`]), reused from the step
//! cache ([`crate::cache`]) when everything that decides it is unchanged.
//!
//! The launcher depends on this crate, so it is run as a program, found as
//! [`find_launcher`] says. It is given the image so far as an OCI layout
//! *directory* whose blobs are hard links to the build's own layer blobs:
//! nothing is archived or copied per step, however big the base, and the
//! launcher still checks every layer's digest as it unpacks it into its
//! store (once per digest: the next step's run finds the lower layers
//! there). The store is the builder's own (`<cache>/sandbox`), so that
//! build steps never show in the user's `launcher ps` or `image ls`. The
//! writable layer is a directory of the build's work directory
//! (`launcher run --upper-dir`), which the build removes, and which the
//! next build reclaims if this one is killed; a `--keep` state directory
//! would outlive a builder killed before its `launcher rm`.

use crate::cache::StepCache;
use crate::def::RunDef;
use crate::error::{Error, Result};
use crate::oci::{self, Layer};
use crate::pack::Blobs;
use crate::upper::{self, IdMap};
use sha2::{Digest as _, Sha256};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How steps are run and reported.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run every step, neither reading nor filling the step cache.
    pub no_cache: bool,
    /// Told of each step as it starts and ends (the caller prints).
    pub progress: Option<fn(&Progress)>,
    /// The launcher; found by [`find_launcher`] when `None`.
    pub launcher: Option<PathBuf>,
}

/// A step's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Step `number` of `total` starts: `COPY a b` or `RUN argv…`.
    Step {
        number: usize,
        total: usize,
        what: String,
    },
    /// Its layer came from the step cache.
    Cached { digest: String },
    /// Its layer was made.
    Made { digest: String },
}

/// The networks a step may ask for: `launcher run --network`'s.
pub const NETWORKS: [&str; 5] = ["none", "host", "bridge", "veth", "slirp4netns"];

/// Where the launcher is looked for, in order: `$CRADLE_LAUNCHER` alone
/// when set, else `launcher` beside this program (cargo puts both in the
/// same target directory), then the installed ones.
pub fn launcher_candidates() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("CRADLE_LAUNCHER").filter(|p| !p.is_empty()) {
        return vec![path.into()];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("launcher"));
    }
    out.push("/usr/libexec/cradle/launcher".into());
    out.push("/usr/local/bin/launcher".into());
    out.push("/usr/bin/launcher".into());
    out
}

/// The first of [`launcher_candidates`] that is a file.
pub fn find_launcher() -> Result<PathBuf> {
    let candidates = launcher_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::NoLauncher {
            tried: candidates
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What runs the steps of one build: the launcher, its store, the init it
/// needs, how the sandbox's ids show on the host, and the step cache.
#[derive(Debug)]
pub(crate) struct Sandbox {
    launcher: PathBuf,
    store: PathBuf,
    init: PathBuf,
    ids: IdMap,
    cache: StepCache,
    no_cache: bool,
    epoch: u64,
    max_size: u64,
    /// The sha256 of the launcher and of the init that run the steps: a
    /// step another build of them ran is not reused.
    tools: [String; 2],
}

impl Sandbox {
    pub(crate) fn new(opts: &crate::Options) -> Result<Sandbox> {
        let launcher = match &opts.run.launcher {
            Some(path) => path.clone(),
            None => find_launcher()?,
        };
        let cache = StepCache::open(&opts.fetch.cache)?;
        let tools = [
            crate::fetch::hash_file(&launcher)?,
            crate::fetch::hash_file(&opts.init)?,
        ];
        Ok(Sandbox {
            launcher,
            store: cache.sandbox_store(),
            init: opts.init.clone(),
            ids: id_map(),
            cache,
            no_cache: opts.run.no_cache,
            epoch: opts.epoch,
            max_size: crate::copy::max_size_from_env(),
            tools,
        })
    }
}

/// One `[[run]]` step to make a layer of.
pub(crate) struct Step<'a> {
    pub def: &'a RunDef,
    /// `step 2 (RUN …)`, for messages.
    pub name: String,
    /// The image so far, bottom first.
    pub layers: &'a [Layer],
    /// The base image's settings, the step's defaults.
    pub base: Option<&'a oci_spec::image::Config>,
}

/// The step's layer, and whether it came from the cache.
pub(crate) fn layer(
    step: &Step,
    sandbox: &Sandbox,
    work: &Path,
    blobs: &Blobs,
) -> Result<(Layer, bool)> {
    let settings = settings(step)?;
    let key = cache_key(step, &settings, sandbox);
    if !sandbox.no_cache
        && let Some(layer) = sandbox.cache.get(&key, blobs)?
    {
        return Ok((layer, true));
    }
    // 0700, as the work directory above it: the step's setuid files and
    // device nodes must be reachable by nobody else while it runs.
    let dir = tempfile::Builder::new()
        .prefix("step-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(work)
        .map_err(Error::io("creating a step directory in", work))?;
    let image = dir.path().join("image");
    write_image(&image, step.layers, blobs, &settings)?;
    let writable = dir.path().join("writable");
    for sub in ["upper", "work"] {
        let path = writable.join(sub);
        std::fs::create_dir_all(&path).map_err(Error::io("creating", &path))?;
    }
    run_launcher(step, sandbox, &image, &writable, &settings)?;
    let opts = upper::Options {
        epoch: sandbox.epoch,
        max_size: sandbox.max_size,
        ids: sandbox.ids.clone(),
        step: step.name.clone(),
    };
    let made = upper::layer(&writable.join("upper"), blobs, &opts)?;
    crate::make_writable(dir.path());
    drop(dir);
    if !sandbox.no_cache {
        sandbox.cache.put(&key, &made, blobs)?;
    }
    Ok((Layer::packed(made), false))
}

/// What the step runs with: the base image's Env, WorkingDir and User,
/// the step's own over them (env merged by name), PATH defaulted. The
/// definition's `[config]` is the finished image's and does not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    argv: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
    network: String,
}

fn settings(step: &Step) -> Result<Settings> {
    let def = step.def;
    let invalid = |what: String| Error::RunLayer {
        step: step.name.clone(),
        file: PathBuf::from("image.toml"),
        what,
    };
    let argv = def.argv();
    if argv.is_empty() || argv[0].is_empty() {
        return Err(invalid("the step has no command".into()));
    }
    let network = def.network.clone().unwrap_or_else(|| "none".into());
    if !NETWORKS.contains(&network.as_str()) {
        return Err(invalid(format!(
            "network `{network}` is none of {}",
            NETWORKS.join(", ")
        )));
    }
    if let Some(dir) = &def.workdir
        && !dir.starts_with('/')
    {
        return Err(invalid(format!("workdir `{dir}` is not absolute")));
    }
    let base = step.base.cloned().unwrap_or_default();
    let mut env = base.env().clone().unwrap_or_default();
    for kv in &def.env {
        let Some((name, _)) = kv.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(invalid(format!("env `{kv}` is not NAME=value")));
        };
        env.retain(|old| old.split('=').next() != Some(name));
        env.push(kv.clone());
    }
    if !env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.insert(0, format!("PATH={}", crate::layout::DEFAULT_PATH));
    }
    Ok(Settings {
        argv,
        env,
        workdir: def
            .workdir
            .clone()
            .or_else(|| base.working_dir().clone())
            .filter(|w| !w.is_empty()),
        user: def
            .user
            .clone()
            .or_else(|| base.user().clone())
            .filter(|u| !u.is_empty()),
        network,
    })
}

/// The cache key: the image so far (its layers' diff ids, the content
/// under them) and everything the step runs with, plus what changes the
/// layer made of the same run (the epoch its mtimes are clamped to, and
/// whether ids came through a user namespace), and the launcher and init
/// that run it.
fn cache_key(step: &Step, settings: &Settings, sandbox: &Sandbox) -> String {
    let key = serde_json::json!({
        "version": 1,
        "diff_ids": step.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        "argv": settings.argv,
        "env": settings.env,
        "workdir": settings.workdir,
        "user": settings.user,
        "network": settings.network,
        "epoch": sandbox.epoch,
        "rootless": !matches!(sandbox.ids, IdMap::Host),
        // A layer made under a larger bound is not one this build allows.
        "max_size": sandbox.max_size,
        "launcher": sandbox.tools[0],
        "init": sandbox.tools[1],
    });
    hex::encode(Sha256::digest(key.to_string().as_bytes()))
}

/// The image so far as an OCI layout directory at `dir`: its layer blobs
/// hard links to the build's (a copy where a link cannot be made), a
/// config with the step's settings, a manifest and the index.
fn write_image(dir: &Path, layers: &[Layer], blobs: &Blobs, settings: &Settings) -> Result<()> {
    let sha = dir.join("blobs/sha256");
    std::fs::create_dir_all(&sha).map_err(Error::io("creating", &sha))?;
    for layer in layers {
        let from = blobs.path_of(&layer.blob.digest);
        let to = sha.join(layer.blob.digest.trim_start_matches("sha256:"));
        if to.exists() {
            continue;
        }
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(Error::io("copying", &from))?;
        }
    }
    let mut config = serde_json::json!({ "Env": settings.env });
    if let Some(dir) = &settings.workdir {
        config["WorkingDir"] = dir.clone().into();
    }
    if let Some(user) = &settings.user {
        config["User"] = user.clone().into();
    }
    let config = serde_json::json!({
        "architecture": oci_spec::image::Arch::default().to_string(),
        "os": "linux",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
    })
    .to_string()
    .into_bytes();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let manifest = oci::manifest_for(
        &config_digest,
        config.len() as u64,
        layers
            .iter()
            .map(|l| (l.blob.digest.as_str(), l.blob.size, l.media_type.clone())),
        None,
    )?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
        }],
    })
    .to_string();
    let files = [
        (
            sha.join(config_digest.trim_start_matches("sha256:")),
            config,
        ),
        (
            sha.join(manifest.digest.trim_start_matches("sha256:")),
            manifest.bytes,
        ),
        (dir.join("index.json"), index.into_bytes()),
        (
            dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
    ];
    for (path, bytes) in files {
        std::fs::write(&path, bytes).map_err(Error::io("writing", &path))?;
    }
    Ok(())
}

/// `launcher run` of the step in its store, its output on our stderr
/// (stdout is the builder's digest), dying with this process.
fn run_launcher(
    step: &Step,
    sandbox: &Sandbox,
    image: &Path,
    writable: &Path,
    settings: &Settings,
) -> Result<()> {
    let mut cmd = Command::new(&sandbox.launcher);
    cmd.env("CRADLE_ROOT", &sandbox.store)
        .arg("run")
        .arg("--upper-dir")
        .arg(writable)
        .arg("--init-path")
        .arg(&sandbox.init)
        .arg("--network")
        .arg(&settings.network)
        .arg("--entrypoint=")
        .arg(image)
        .args(&settings.argv)
        .stdin(Stdio::null());
    if let Ok(stderr) = std::io::stderr().as_fd_owned() {
        cmd.stdout(stderr);
    }
    // SAFETY: between fork and exec only async-signal-safe calls: prctl,
    // getppid. The launcher (and through its own death signal, the
    // sandbox) is killed when the builder dies, even by SIGKILL; a parent
    // already gone before the prctl is caught by the ppid check.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(|source| Error::RunLauncher {
        step: step.name.clone(),
        launcher: sandbox.launcher.clone(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(125), _) => "the launcher failed (exit status 125)".to_string(),
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("the launcher was killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    Err(Error::RunFailed {
        step: step.name.clone(),
        status,
    })
}

/// A duplicate of a standard stream's fd, for a child's stdout.
trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl AsFdOwned for std::io::Stderr {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// How the launcher will map the sandbox's ids, as it decides
/// (launcher/src/namespaces.rs `choose_mapping`): none as root; rootless,
/// the user is root inside, and ids 1.. are the user's subordinate ranges
/// when /etc/subuid and /etc/subgid have them and newuidmap and newgidmap
/// are installed.
fn id_map() -> IdMap {
    // SAFETY: geteuid and getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return IdMap::Host;
    }
    let name = user_name(uid);
    let tools = ["newuidmap", "newgidmap"].iter().all(|t| on_path(t));
    let uids = subordinate("/etc/subuid", uid, name.as_deref());
    let gids = subordinate("/etc/subgid", uid, name.as_deref());
    let (uids, gids) = match (uids, gids, tools) {
        (Some(u), Some(g), true) => (Some(u), Some(g)),
        _ => (None, None),
    };
    IdMap::Rootless {
        uid,
        gid,
        uids,
        gids,
    }
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 2 && fields[2] == uid.to_string()).then(|| fields[0].to_string())
    })
}

/// The first range of `file` (`NAME_OR_UID:START:COUNT` lines) for the user.
fn subordinate(file: &str, uid: u32, name: Option<&str>) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let who = fields.next()?;
        let start = fields.next()?.parse().ok()?;
        let count = fields.next()?.parse().ok()?;
        (who == uid.to_string() || Some(who) == name).then_some((start, count))
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_with(def: &RunDef, base: Option<&oci_spec::image::Config>) -> Result<Settings> {
        settings(&Step {
            def,
            name: "step 1 (RUN x)".into(),
            layers: &[],
            base,
        })
    }

    fn run(command: &[&str]) -> RunDef {
        RunDef {
            command: command.iter().map(|s| s.to_string()).collect(),
            shell: None,
            env: vec![],
            workdir: None,
            user: None,
            network: None,
        }
    }

    #[test]
    fn a_step_runs_with_the_bases_settings_under_its_own() {
        let base = oci_spec::image::ConfigBuilder::default()
            .env(vec!["PATH=/base".to_string(), "A=1".into(), "B=2".into()])
            .working_dir("/srv")
            .user("app")
            .build()
            .unwrap();
        let mut def = run(&["true"]);
        def.env = vec!["B=3".into(), "C=4".into()];
        def.user = Some("0:0".into());
        let s = step_with(&def, Some(&base)).unwrap();
        assert_eq!(s.env, ["PATH=/base", "A=1", "B=3", "C=4"]);
        assert_eq!(s.workdir.as_deref(), Some("/srv"));
        assert_eq!(s.user.as_deref(), Some("0:0"));
        assert_eq!(s.network, "none");
        let s = step_with(&run(&["true"]), None).unwrap();
        assert!(s.env[0].starts_with("PATH=/"), "{:?}", s.env);
        assert_eq!((s.workdir, s.user), (None, None));
    }

    #[test]
    fn a_step_with_a_bad_field_is_refused_naming_it() {
        let mut def = run(&["true"]);
        def.network = Some("internet".into());
        let err = step_with(&def, None).unwrap_err().to_string();
        assert!(
            err.contains("step 1 (RUN x)") && err.contains("`internet`"),
            "{err}"
        );
        let mut def = run(&["true"]);
        def.workdir = Some("srv".into());
        let err = step_with(&def, None).unwrap_err().to_string();
        assert!(err.contains("workdir `srv` is not absolute"), "{err}");
        let mut def = run(&["true"]);
        def.env = vec!["NOVALUE".into()];
        let err = step_with(&def, None).unwrap_err().to_string();
        assert!(err.contains("env `NOVALUE`"), "{err}");
        let err = step_with(&run(&[]), None).unwrap_err().to_string();
        assert!(err.contains("no command"), "{err}");
    }
}
