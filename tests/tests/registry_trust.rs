//! End to end: credentials and TLS trust as podman and docker users set
//! them up (issue 12, defect 5), against Debian's `docker-registry` on
//! 127.0.0.1: `podman login` as root without XDG_RUNTIME_DIR, and a
//! self-signed certificate made the way docker's documentation says.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` on a free port of 127.0.0.1, killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// With `htpasswd`, basic auth for that user; with `tls`, https with
    /// that certificate and key.
    fn start(htpasswd: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Option<Registry> {
        let program = testkit::require_tool("docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("cradle-registry-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = htpasswd {
            let file = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 5).unwrap();
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: cradle-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(program)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nothing listens on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry {
            child,
            port,
            _dir: dir,
        })
    }

    fn reference(&self) -> String {
        format!("127.0.0.1:{}/cradle/default:v1", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn builder() -> Option<PathBuf> {
    testkit::require_artifact("debug/builder", "cargo build -p builder")
}

/// `builder ARGS` with no credential file but `auth` (when given).
fn run_builder(builder: &Path, home: &Path, auth: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(builder);
    cmd.args(args)
        .env("CRADLE_CACHE_DIR", home.join("cache"))
        .env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    if let Some(auth) = auth {
        cmd.env("REGISTRY_AUTH_FILE", auth);
    }
    cmd.output().unwrap()
}

fn auth_json(host: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)
}

/// `/run/containers/0/auth.json` written for a test and put back as it
/// was (absent, or the file it held) when dropped.
struct RootAuthFile {
    path: PathBuf,
    saved: Option<Vec<u8>>,
    made_dir: bool,
}

impl RootAuthFile {
    fn write(text: &str) -> RootAuthFile {
        let path = PathBuf::from("/run/containers/0/auth.json");
        let dir = path.parent().unwrap();
        let made_dir = !dir.exists();
        std::fs::create_dir_all(dir).unwrap();
        let saved = std::fs::read(&path).ok();
        let guard = RootAuthFile {
            path,
            saved,
            made_dir,
        };
        // Merged into what was there: a real login there keeps working.
        let mut json: serde_json::Value = guard
            .saved
            .as_deref()
            .and_then(|s| serde_json::from_slice(s).ok())
            .unwrap_or_else(|| serde_json::json!({"auths": {}}));
        let ours: serde_json::Value = serde_json::from_str(text).unwrap();
        for (key, value) in ours["auths"].as_object().unwrap() {
            json["auths"][key] = value.clone();
        }
        std::fs::write(&guard.path, serde_json::to_vec(&json).unwrap()).unwrap();
        guard
    }
}

impl Drop for RootAuthFile {
    fn drop(&mut self) {
        match &self.saved {
            Some(bytes) => {
                let _ = std::fs::write(&self.path, bytes);
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
                if self.made_dir {
                    let _ = std::fs::remove_dir(self.path.parent().unwrap());
                    let _ = std::fs::remove_dir("/run/containers");
                }
            }
        }
    }
}

// `podman login` as root, with XDG_RUNTIME_DIR unset (a root shell, sudo,
// a service), writes /run/containers/0/auth.json; the launcher read only
// $XDG_RUNTIME_DIR/containers/auth.json and pulled anonymously.
#[test]
fn root_pulls_with_the_credentials_podman_login_wrote_without_xdg_runtime_dir() {
    let Some(kit) = common::Kit::new() else {
        return;
    };
    let (Some(builder), Some(registry)) =
        (builder(), Registry::start(Some(("alice", "s3cret")), None))
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let auth = home.path().join("push-auth.json");
    let host = format!("127.0.0.1:{}", registry.port);
    std::fs::write(&auth, auth_json(&host, "alice", "s3cret")).unwrap();
    let image = kit.image.to_str().unwrap();
    let reference = registry.reference();
    let out = run_builder(
        &builder,
        home.path(),
        Some(&auth),
        &["push", image, &reference],
    );
    assert!(out.status.success(), "{out:?}");
    let launcher_run = || {
        Command::new(&kit.launcher)
            .env("CRADLE_ROOT", kit.root.path())
            .env("HOME", home.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG")
            .env_remove("RUST_BACKTRACE")
            .args(["run", &reference, "sh", "-c", "echo pulled"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Without the login there is nothing to pull with.
    let _none = RootAuthFile::write(r#"{"auths":{}}"#);
    let out = launcher_run();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    drop(_none);
    let _login = RootAuthFile::write(&auth_json(&host, "alice", "s3cret"));
    let out = launcher_run();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled\n");
}

/// `openssl req -x509` as docker's "deploy a registry" page has it: a
/// self-signed certificate for 127.0.0.1 (which openssl marks a CA).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout"])
        .arg(&key)
        .args([
            "-addext",
            "subjectAltName = IP:127.0.0.1",
            "-x509",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-out"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (cert, key)
}

// webpki refused such a certificate even when trusted with --ca-cert
// ("CaUsedAsEndEntity"); skopeo, docker and podman accept it. Only that
// exact certificate: another self-signed one is still refused.
#[test]
fn a_self_signed_registry_certificate_made_as_dockers_docs_say_is_trusted_with_ca_cert() {
    let (Some(image), Some(builder), Some(_)) = (
        common::default_image(),
        builder(),
        testkit::require_tool("openssl"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "registry");
    let (other, _) = self_signed(dir.path(), "other");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "not the CA-flagged certificate this is about: {text:?}"
    );
    let Some(registry) = Registry::start(None, Some((&cert, &key))) else {
        return;
    };
    let home = dir.path();
    let reference = registry.reference();
    let image = image.to_str().unwrap();
    let out = run_builder(
        &builder,
        home,
        None,
        &[
            "push",
            "--ca-cert",
            cert.to_str().unwrap(),
            image,
            &reference,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let pulled = home.join("pulled.tar");
    let out = run_builder(
        &builder,
        home,
        None,
        &[
            "pull",
            "--ca-cert",
            cert.to_str().unwrap(),
            &reference,
            "-o",
            pulled.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(pulled.exists());
    for refused in [
        vec!["pull", "--ca-cert", other.to_str().unwrap()],
        vec!["pull"],
    ] {
        let output = home.join("refused.tar");
        let mut args = refused.clone();
        args.extend([reference.as_str(), "-o", output.to_str().unwrap()]);
        let out = run_builder(&builder, home, None, &args);
        assert!(!out.status.success(), "{refused:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
        assert!(err.contains("certificate"), "{refused:?}: {err}");
        assert!(!output.exists(), "{refused:?}");
    }
}
