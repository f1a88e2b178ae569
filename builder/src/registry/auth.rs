//! Credentials and challenges, as docker and podman do them: a user and
//! password from the first credential file that has the registry, and the
//! scheme the registry asks for in `WWW-Authenticate` (Basic, or Bearer with
//! a token fetched from its `realm`).

use crate::error::{Error, Result};
use crate::registry::reference::{DOCKER_HUB, Reference};
use base64::Engine as _;
use std::path::{Path, PathBuf};

/// A user and password for one registry, and the file they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub from: PathBuf,
}

/// The credential files, in the order podman reads them, then docker's:
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` (or,
/// with XDG_RUNTIME_DIR unset, `/run/containers/UID/auth.json`, where
/// `podman login` as root writes), `~/.config/containers/auth.json`,
/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. `explicit`
/// (`--authfile`) replaces them all.
pub fn credential_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(file) = explicit {
        return vec![file.to_path_buf()];
    }
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let home = var("HOME").map(PathBuf::from);
    let mut files = Vec::new();
    if let Some(file) = var("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(file));
    }
    match var("XDG_RUNTIME_DIR") {
        Some(dir) => files.push(Path::new(&dir).join("containers/auth.json")),
        // containers/image's per-uid default (pkg/docker/config).
        None => files.push(PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            // SAFETY: getuid has no preconditions and cannot fail.
            unsafe { libc::getuid() }
        ))),
    }
    let config = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    if let Some(config) = config {
        files.push(config.join("containers/auth.json"));
    }
    match var("DOCKER_CONFIG") {
        Some(dir) => files.push(Path::new(&dir).join("config.json")),
        None => files.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// The credentials for `reference` from the first of `files` that has any:
/// keys `registry/repository` (longest first, podman), `registry`,
/// `https://registry` and, for Docker Hub, `https://index.docker.io/v1/`.
pub fn find_credentials(files: &[PathBuf], reference: &Reference) -> Result<Option<Credentials>> {
    let keys = keys_for(reference);
    for file in files {
        let Ok(text) = std::fs::read(file) else {
            continue;
        };
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|source| Error::JsonRead {
                what: "registry credentials",
                path: file.clone(),
                source,
            })?;
        let auths = &json["auths"];
        for key in &keys {
            if let Some(auth) = auths[key.as_str()]["auth"].as_str() {
                return decode_auth(auth, file, key).map(Some);
            }
        }
    }
    Ok(None)
}

fn keys_for(reference: &Reference) -> Vec<String> {
    let mut keys = Vec::new();
    let parts: Vec<&str> = reference.repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{}/{}", reference.registry, parts[..n].join("/")));
    }
    let host = &reference.registry;
    keys.extend([
        host.clone(),
        format!("https://{host}"),
        format!("http://{host}"),
    ]);
    if *host == DOCKER_HUB {
        keys.extend([
            "https://index.docker.io/v1/".to_string(),
            "index.docker.io".to_string(),
        ]);
    }
    keys
}

fn decode_auth(auth: &str, file: &Path, key: &str) -> Result<Credentials> {
    let bad = || Error::Credentials {
        path: file.to_path_buf(),
        what: format!("`auths.{key}.auth` is not base64 of USER:PASSWORD"),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Credentials {
        user: user.to_string(),
        password: password.to_string(),
        from: file.to_path_buf(),
    })
}

/// What a registry's `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `k="v",k2=v2`, where a quoted value may hold commas (scopes do).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.push((key, value.to_string()));
        rest = next.trim_start().trim_start_matches(',');
    }
    out
}

/// The token in a token server's answer (`token`, or OAuth's `access_token`).
pub fn token_from(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json["token"]
        .as_str()
        .or(json["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// `Authorization: Basic …` for `creds`.
pub fn basic_header(creds: &Credentials) -> String {
    let pair = format!("{}:{}", creds.user, creds.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_comma_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn reads_credentials_from_the_first_file_that_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let podman = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        std::fs::write(&podman, r#"{"auths":{"other.example":{"auth":"eDp5"}}}"#).unwrap();
        // "bob:s3:cret" (a password may hold colons)
        std::fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"Ym9iOnMzOmNyZXQ="}}}"#,
        )
        .unwrap();
        let files = [podman.clone(), docker.clone()];
        let hub = Reference::parse("alpine").unwrap();
        let creds = find_credentials(&files, &hub).unwrap().unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("bob", "s3:cret")
        );
        assert_eq!(creds.from, docker);
        let other = Reference::parse("other.example/a").unwrap();
        assert_eq!(find_credentials(&files, &other).unwrap().unwrap().user, "x");
        let none = Reference::parse("none.example/a").unwrap();
        assert_eq!(find_credentials(&files, &none).unwrap(), None);
    }

    #[test]
    fn refuses_undecodable_auth() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, r#"{"auths":{"r.example":{"auth":"!!"}}}"#).unwrap();
        let r = Reference::parse("r.example/a").unwrap();
        let err = find_credentials(&[file], &r).unwrap_err();
        assert!(
            err.to_string().contains("auths.r.example/a.auth")
                || err.to_string().contains("auths.r.example.auth"),
            "{err}"
        );
    }

    #[test]
    fn reads_token_or_access_token() {
        assert_eq!(token_from(br#"{"token":"t"}"#), Some("t".into()));
        assert_eq!(token_from(br#"{"access_token":"a"}"#), Some("a".into()));
        assert_eq!(token_from(br#"{}"#), None);
    }
}
