//! TLS for PostgreSQL connections, with rustls (no OpenSSL): `sslmode` and `sslrootcert` as
//! libpq reads them.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers it | checked as `verify-ca` when a root certificate file is there, else not |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | signed by a CA in the root certificate file |
//! | `verify-full` | always | as `verify-ca`, and it names the host in the URL |
//!
//! The root certificate file is `sslrootcert=PATH`, else `~/.postgresql/root.crt`;
//! `sslrootcert=system` takes the system's trusted CAs (`SSL_CERT_FILE`, else
//! `/etc/ssl/certs/ca-certificates.crt`) and needs `sslmode=verify-full`, as in libpq.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::TaskError;
use crate::validate::SslMode;

/// The system's CA bundle on Debian and its kin, when `SSL_CERT_FILE` is not set.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How connections to one server use TLS, decided once from the URL.
#[derive(Clone)]
pub(super) struct Tls {
    /// The mode as written (or `prefer`).
    pub(super) mode: SslMode,
    /// The root certificate file checked against, when one is.
    pub(super) root: Option<PathBuf>,
    pub(super) connector: MakeRustlsConnect,
}

impl Tls {
    /// Settle the TLS settings: find and read the root certificates the mode needs.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] when a verifying mode has no readable root certificate file, or
    /// `sslrootcert=system` comes with a weaker mode than `verify-full`.
    pub(super) fn new(mode: SslMode, rootcert: Option<&str>) -> Result<Tls, TaskError> {
        let verifying = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let (root, named) = match rootcert {
            Some("system") => {
                if mode != SslMode::VerifyFull {
                    return Err(TaskError::invalid(format!(
                        "sslrootcert=system trusts every public CA, so it needs \
                         sslmode=verify-full, not sslmode={}",
                        mode.as_str()
                    )));
                }
                let file = std::env::var_os("SSL_CERT_FILE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
                (Some(file), true)
            }
            Some(path) => (Some(PathBuf::from(path)), true),
            None => (
                std::env::var_os("HOME")
                    .map(|home| Path::new(&home).join(".postgresql").join("root.crt")),
                false,
            ),
        };
        // libpq: a root certificate file that is there is used by every TLS mode; a named one
        // that is not there is an error only for the verifying modes.
        let root = match root {
            Some(file) if mode != SslMode::Disable && (file.exists() || (named && verifying)) => {
                Some(file)
            }
            _ => None,
        };
        if verifying && root.is_none() {
            return Err(TaskError::invalid(format!(
                "sslmode={} checks the server's certificate against the CA that signed it: \
                 give that CA's certificate as sslrootcert=PATH in the URL (there is no \
                 ~/.postgresql/root.crt here)",
                mode.as_str()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = match &root {
            Some(file) => {
                let roots = read_roots(file, rootcert == Some("system"))?;
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            TaskError::invalid(format!(
                                "the root certificates in {} cannot be used: {e}",
                                file.display()
                            ))
                        })?,
                )
            }
            None => None,
        };
        let verifier = Arc::new(Verifier {
            inner,
            check_name: mode == SslMode::VerifyFull,
            algorithms: provider.signature_verification_algorithms,
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TaskError::invalid(format!("TLS cannot be set up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls {
            mode,
            root,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// The mode tokio-postgres negotiates with: whether TLS is off, optional or required.
    pub(super) fn negotiation(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self.mode {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }

    /// What went wrong with TLS in a failed connection attempt, said plainly, or `None` when
    /// the failure was not about TLS.
    pub(super) fn explain(&self, error: &tokio_postgres::Error, host: &str) -> Option<String> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut saw_tls = false;
        while let Some(e) = cause {
            let text = e.to_string();
            if text.contains("server does not support TLS") {
                return Some(format!(
                    "the server does not accept TLS, and sslmode={} requires it: turn ssl on in \
                     the server's postgresql.conf, or write sslmode=prefer or sslmode=disable",
                    self.mode.as_str()
                ));
            }
            saw_tls |= text.contains("TLS");
            let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(r) = rustls_error {
                return Some(self.explain_rustls(r, host));
            }
            cause = e.source();
        }
        saw_tls.then(|| format!("the TLS handshake failed: {error}"))
    }

    fn explain_rustls(&self, error: &rustls::Error, host: &str) -> String {
        let root = self
            .root
            .as_ref()
            .map_or_else(String::new, |r| r.display().to_string());
        let mode = self.mode.as_str();
        match error {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the server's certificate is not valid for the host name '{host}': \
                 sslmode=verify-full refuses a certificate that names another host; connect by \
                 a name the certificate lists, or write sslmode=verify-ca to check only who \
                 signed it"
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
                | CertificateError::BadSignature
                | CertificateError::UnhandledCriticalExtension,
            ) => format!(
                "the server's certificate is not trusted: no certificate authority in \
                 sslrootcert ({root}) signed it, and sslmode={mode} refuses an untrusted \
                 certificate; give the CA that signed the server's certificate as \
                 sslrootcert=PATH"
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => format!(
                "the server's certificate has expired, and sslmode={mode} refuses it; renew the \
                 server's certificate"
            ),
            rustls::Error::InvalidCertificate(e) => format!(
                "the server's certificate was refused ({e:?}) under sslmode={mode}; check the \
                 server's certificate and sslrootcert ({root})"
            ),
            e => format!("the TLS handshake with the server failed: {e}"),
        }
    }
}

/// Every certificate in a PEM file.
fn read_roots(file: &Path, system: bool) -> Result<RootCertStore, TaskError> {
    let unreadable = |why: String| {
        let what = if system {
            "the system's CA certificates"
        } else {
            "sslrootcert"
        };
        TaskError::invalid(format!(
            "{what} ({}) cannot be read: {why}; give a PEM file of the CA certificates that \
             sign the server's certificate",
            file.display()
        ))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| unreadable(pem_error(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(pem_error(e)))?;
    if certs.is_empty() {
        return Err(unreadable("it holds no PEM certificate".to_string()));
    }
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(unreadable(format!(
            "none of its {ignored} certificates could be parsed"
        )));
    }
    Ok(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        e => format!("{e:?}"),
    }
}

/// Checks the server's certificate as the mode says: not at all, its signer only, or its
/// signer and its name. The handshake's signatures are always checked.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
