//! Image references as docker and podman read them:
//! `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`, with docker.io and `library/`
//! filled in, and the rule for when a registry is spoken to in plain http.

use crate::error::{Error, Result};
use std::fmt;

/// Docker Hub's name in references and credential files.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API is.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, `docker.io` when none was given.
    pub registry: String,
    /// `library/alpine`, `cradle/default`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text`; a reference with neither tag nor digest means `:latest`.
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = || Error::BadReference {
            value: text.to_string(),
        };
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(check_digest(digest).ok_or_else(bad)?)),
            None => (text, None),
        };
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => (first.to_string(), rest),
            _ => (DOCKER_HUB.to_string(), name),
        };
        // A tag's `:` comes after the last `/` (a registry's port comes before).
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (rest, None),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        if !is_repository(&repository) || !tag.as_deref().is_none_or(is_tag) {
            return Err(bad());
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What a manifest is fetched or stored under: the digest, else the tag.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the API is reached at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// True for registries on this machine, which may be spoken to in plain
    /// http without being asked when they do not answer https (docker's
    /// default insecure registries).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => &self.registry,
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// The same repository, another tag or digest.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The first component names a registry when it looks like a host: a dot,
/// a port, or `localhost` (docker's rule).
fn is_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn check_digest(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| digest.to_string())
}

/// Lowercase path components of `[a-z0-9]` joined by `.`, `_`, `__` or `-`s.
fn is_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                && part
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

fn is_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(text).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    #[test]
    fn fills_in_docker_hub_and_latest() {
        let s = |v: &str| v.to_string();
        assert_eq!(
            parse("alpine"),
            (s("docker.io"), s("library/alpine"), Some(s("latest")), None)
        );
        assert_eq!(
            parse("user/app:1.2"),
            (s("docker.io"), s("user/app"), Some(s("1.2")), None)
        );
        assert_eq!(
            parse("127.0.0.1:5000/cradle/default"),
            (
                s("127.0.0.1:5000"),
                s("cradle/default"),
                Some(s("latest")),
                None
            )
        );
        assert_eq!(
            parse("localhost/x:t"),
            (s("localhost"), s("x"), Some(s("t")), None)
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&format!("quay.io/a/b@{digest}")),
            (s("quay.io"), s("a/b"), None, Some(digest.clone()))
        );
        assert_eq!(parse(&format!("quay.io/a/b:v1@{digest}")).2, Some(s("v1")));
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "a/b:",
            "a/b@sha256:xyz",
            "a/b:t@md5:00",
            "-a/b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        let r = |t: &str| Reference::parse(t).unwrap().is_loopback();
        assert!(r("localhost:5000/a"));
        assert!(r("127.0.0.1:5000/a"));
        assert!(r("localhost/a"));
        assert!(!r("registry.example/a"));
        assert!(!r("alpine"));
    }

    #[test]
    fn displays_in_full() {
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }
}
