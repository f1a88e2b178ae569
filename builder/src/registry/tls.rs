//! TLS with a private CA (`--ca-cert FILE`): the platform's roots plus the
//! certificates in FILE, and one exception rustls does not make by itself.
//!
//! A registry certificate made as docker's documentation says (`openssl req
//! -x509 …`) is self-signed and, by openssl's defaults, marked a CA
//! (`basicConstraints CA:TRUE`). webpki refuses a CA as the server's own
//! certificate (`CaUsedAsEndEntity`), even one the user trusts by name;
//! Go's crypto/x509, which docker, podman and skopeo use, accepts a server
//! certificate that is itself one of the trusted roots. So does this
//! verifier, only for that exact certificate: the same bytes as one in
//! FILE, still checked for the server's name, and only after webpki found
//! nothing else wrong with it (it checks the validity period before the
//! CA flag). Anything else is webpki's verdict.

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// A rustls client configuration trusting the platform's roots and the
/// certificates in the PEM file `path`.
pub fn trusting(path: &Path) -> Result<rustls::ClientConfig> {
    let fail = |source| Error::CaCert {
        path: path.to_path_buf(),
        source,
    };
    let pem = std::fs::read(path).map_err(Error::io("reading", path))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(rustls::Error::General(format!("reading PEM: {e}"))))?;
    if certs.is_empty() {
        return Err(fail(rustls::Error::General(
            "no PEM certificate in it".into(),
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = rustls_platform_verifier::Verifier::new_with_extra_roots(
        certs.iter().cloned(),
        provider.clone(),
    )
    .map_err(fail)?;
    let verifier = TrustedCertificates {
        inner,
        trusted: certs,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(fail)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[derive(Debug)]
struct TrustedCertificates {
    inner: rustls_platform_verifier::Verifier,
    trusted: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for TrustedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            Err(err) if is_ca_as_end_entity(&err) && self.is_trusted(end_entity) => {
                let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
                })?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| {
                        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                    })?;
                Ok(ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl TrustedCertificates {
    fn is_trusted(&self, cert: &CertificateDer<'_>) -> bool {
        self.trusted.iter().any(|t| t.as_ref() == cert.as_ref())
    }
}

/// webpki's `CaUsedAsEndEntity`, which rustls passes on as an "other"
/// certificate error.
fn is_ca_as_end_entity(err: &rustls::Error) -> bool {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}
