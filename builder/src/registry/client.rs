//! The session with one repository of one registry: the HTTP client (the
//! one [`crate::fetch`] configures), the base URL, and authentication done
//! lazily, on the first `401`, with the scheme the registry asks for.

use crate::error::{Error, Result};
use crate::registry::Options;
use crate::registry::auth::{self, Challenge, Credentials};
use crate::registry::reference::Reference;
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use std::cell::RefCell;

/// Every manifest type we read, for `Accept`.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What the session will do with the repository (the bearer token's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

pub struct Session {
    client: Client,
    /// `http[s]://host/v2/`.
    base: String,
    pub reference: Reference,
    access: Access,
    creds: Option<Credentials>,
    /// The `Authorization` header to send, once a challenge asked for one.
    authorization: RefCell<Option<String>>,
    attempts: u32,
    backoff: std::time::Duration,
}

impl Session {
    pub fn open(reference: &Reference, access: Access, opts: &Options) -> Result<Session> {
        let files = auth::credential_files(opts.auth_file.as_deref());
        let creds = auth::find_credentials(&files, reference)?;
        let mut builder = crate::fetch::client_builder(opts.timeout);
        if let Some(path) = &opts.ca_cert {
            builder = builder.tls_backend_preconfigured(crate::registry::tls::trusting(path)?);
        }
        let client = builder.build().map_err(|source| Error::Fetch {
            url: reference.to_string(),
            source,
        })?;
        let scheme = match (opts.insecure, reference.is_loopback()) {
            (true, _) => "http",
            (false, true) => loopback_scheme(&client, reference)?,
            (false, false) => "https",
        };
        Ok(Session {
            client,
            base: format!("{scheme}://{}/v2/", reference.api_host()),
            reference: reference.clone(),
            access,
            creds,
            authorization: RefCell::new(None),
            attempts: opts.attempts.max(1),
            backoff: opts.backoff,
        })
    }

    /// `<base><repository>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}/{path}", self.base, self.reference.repository)
    }

    /// An upload `Location`, which may be relative to the registry's root.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_string();
        }
        let root = self.base.trim_end_matches("/v2/");
        format!("{root}/{}", location.trim_start_matches('/'))
    }

    /// [`Session::send_once`], tried again after a transient failure
    /// (connecting, a timeout, 429, 502, 503, 504) when the request is
    /// idempotent (GET, HEAD), with exponential back-off.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        prepare: &dyn Fn(RequestBuilder) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let idempotent = method == Method::GET || method == Method::HEAD;
        let mut attempt = 1;
        loop {
            let result = self.send_once(method.clone(), url, prepare);
            let transient = match &result {
                Ok(r) => matches!(r.status().as_u16(), 429 | 502 | 503 | 504),
                Err(Error::Unreachable { source, .. }) => {
                    source.is_connect() || source.is_timeout()
                }
                Err(_) => false,
            };
            if !(idempotent && transient && attempt < self.attempts) {
                return result;
            }
            std::thread::sleep(self.backoff * 2u32.pow(attempt - 1));
            attempt += 1;
        }
    }

    /// Sends a request made by `prepare`, authenticating and sending it
    /// once more when the registry answers `401`; a second `401` means the
    /// credentials (or their absence) are refused.
    fn send_once(
        &self,
        method: Method,
        url: &str,
        prepare: &dyn Fn(RequestBuilder) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut request = self.client.request(method.clone(), url);
            if let Some(value) = self.authorization.borrow().as_deref() {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let response = prepare(request)?
                .send()
                .map_err(|source| self.unreachable(source))?;
            if response.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if attempt == 1 {
                return Err(self.denied());
            }
            let challenge = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge)
                .ok_or_else(|| self.denied())?;
            self.authenticate(&challenge)?;
        }
        Err(self.denied())
    }

    /// Answers a challenge: Basic with the credentials, or a Bearer token
    /// from the realm (asked with the credentials when there are any).
    fn authenticate(&self, challenge: &Challenge) -> Result<()> {
        let header = match challenge {
            Challenge::Basic => {
                let creds = self.creds.as_ref().ok_or_else(|| self.denied())?;
                auth::basic_header(creds)
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => format!("Bearer {}", self.fetch_token(realm, service, scope)?),
        };
        *self.authorization.borrow_mut() = Some(header);
        Ok(())
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: &Option<String>,
        scope: &Option<String>,
    ) -> Result<String> {
        let actions = match self.access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        let ours = format!("repository:{}:{actions}", self.reference.repository);
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        // The challenge's scope says what this request needs (a mount's
        // source repository too); ours covers the rest of the session.
        for s in scope.iter().chain([&ours]) {
            if !query.contains(&format!("scope={}", encode(s))) {
                query.push(format!("scope={}", encode(s)));
            }
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let mut request = self.client.get(&url);
        if let Some(creds) = &self.creds {
            request = request.basic_auth(&creds.user, Some(&creds.password));
        }
        let response = request.send().map_err(|source| self.unreachable(source))?;
        match response.status().as_u16() {
            200 => {}
            401 | 403 => return Err(self.denied()),
            status => return Err(status_error("getting a token from", &url, status, response)),
        }
        let body = small_body(response).map_err(|source| Error::Download {
            url: url.clone(),
            source,
        })?;
        auth::token_from(&body).ok_or_else(|| Error::RegistryStatus {
            op: "getting a token from",
            url,
            status: 200,
            detail: ", with no token in its answer".into(),
        })
    }

    fn unreachable(&self, source: reqwest::Error) -> Error {
        Error::Unreachable {
            registry: self.reference.registry.clone(),
            reference: self.reference.to_string(),
            source,
        }
    }

    /// The refusal, saying who we were.
    pub fn denied(&self) -> Error {
        let who = match &self.creds {
            Some(c) => format!("as user `{}` (from `{}`)", c.user, c.from.display()),
            None => "anonymously (no credentials for it in $REGISTRY_AUTH_FILE, \
                     containers/auth.json or ~/.docker/config.json)"
                .to_string(),
        };
        Error::Denied {
            registry: self.reference.registry.clone(),
            reference: self.reference.to_string(),
            who,
        }
    }
}

/// A registry on this machine is spoken to in https when it answers in
/// https, else in plain http (docker's rule for its default insecure
/// registries, 127.0.0.0/8). A certificate we do not trust is an error,
/// not a reason to drop TLS.
fn loopback_scheme(client: &Client, reference: &Reference) -> Result<&'static str> {
    let url = format!("https://{}/v2/", reference.api_host());
    // A server that is not TLS answers a ClientHello at once (Go's with a
    // 400); one that waits for more is not TLS either.
    match client.get(&url).timeout(PROBE_TIMEOUT).send() {
        Ok(_) => Ok("https"),
        Err(err) if mentions_certificate(&err) => Err(Error::Unreachable {
            registry: reference.registry.clone(),
            reference: reference.to_string(),
            source: err,
        }),
        Err(_) => Ok("http"),
    }
}

const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn mentions_certificate(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.to_string().to_ascii_lowercase().contains("certificate") {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An error for an unexpected status, with the registry's error code and
/// message when its body has them (`{"errors":[{"code","message"}]}`).
pub fn status_error(op: &'static str, url: &str, status: u16, response: Response) -> Error {
    let body = small_body(response).unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| {
            let first = &json["errors"][0];
            Some(format!(
                " {}: {}",
                first["code"].as_str()?,
                first["message"].as_str().unwrap_or_default()
            ))
        })
        .unwrap_or_default();
    Error::RegistryStatus {
        op,
        url: url.to_string(),
        status,
        detail,
    }
}

/// A token or an error answer: small, but the server decides what it sends,
/// so what is read of it is bounded (as manifests are).
const MAX_SMALL_BODY: u64 = 1 << 20;

/// The body of `response`, cut at [`MAX_SMALL_BODY`] bytes.
fn small_body(response: Response) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    response.take(MAX_SMALL_BODY).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
    }
}
