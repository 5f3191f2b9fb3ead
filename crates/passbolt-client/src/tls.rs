//! What a failed TLS connection means for the operator, and which setting
//! fixes it. rustls says `invalid peer certificate: UnknownIssuer`; the
//! operator needs to hear "set server.ca_file".
//!
//! Also which CAs a client trusts. reqwest's own lookup of the system's
//! trust store fails the whole client, as "builder error", on a host
//! without one (a minimal container), even where no public CA is needed:
//! an `http://` URL, or `server.ca_file`. So the store is read here, only
//! for `https://`, and its absence is an error only when nothing else is
//! trusted.

use std::error::Error;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{AlertDescription, CertificateError, InvalidMessage};

use super::SessionOptions;

/// A sentence for a request that failed in TLS, or `None` when `e` was
/// not a TLS failure (or one with nothing better to say than rustls).
pub(crate) fn explain(e: &reqwest::Error, opts: &SessionOptions) -> Option<String> {
    let client_cert = opts.client_identity.is_some();
    let Some(tls) = find(e) else {
        return (client_cert && closed_before_ready(e)).then(|| {
            "the connection closed as soon as the TLS handshake ended, before any answer: \
             the server (or a TLS proxy in front of it) most likely refused the client \
             certificate of server.client_cert_file; it must be issued by a CA the server \
             trusts, valid now, and match server.client_key_file"
                .into()
        });
    };
    Some(match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer if opts.ca_pem.is_none() => {
                "the server's certificate is issued by a CA this host does not trust; \
                 set server.ca_file to that CA's PEM"
                    .into()
            }
            CertificateError::UnknownIssuer => {
                "the server's certificate is issued by a CA that neither this host nor \
                 server.ca_file trusts; server.ca_file must hold the CA that issued it (PEM)"
                    .into()
            }
            CertificateError::NotValidForName => {
                "the server's certificate is not valid for the host name of server.url; \
                 use a name the certificate carries"
                    .into()
            }
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is not valid for the host name of server.url \
                 (it is for {}); use a name the certificate carries",
                if presented.is_empty() {
                    "no name".to_string()
                } else {
                    presented.join(", ")
                }
            ),
            CertificateError::Expired => {
                "the server's certificate has expired; renew it on the server \
                 (or check this host's clock)"
                    .into()
            }
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "the server's certificate expired on {}; renew it on the server \
                 (or check this host's clock)",
                utc(not_after.as_secs())
            ),
            CertificateError::NotValidYet => {
                "the server's certificate is not valid yet; check this host's clock".into()
            }
            CertificateError::NotValidYetContext { not_before, .. } => format!(
                "the server's certificate is not valid before {}; check this host's clock",
                utc(not_before.as_secs())
            ),
            _ => return None,
        },
        // The first bytes back were no TLS record: "HTTP/1.1 400 ..." from
        // a plain HTTP server on the port.
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "the server does not speak TLS on this port (it answered like plain HTTP); \
             check the port of server.url"
                .into()
        }
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) if !client_cert => "the server (or a TLS proxy in front of it) requires a client \
             certificate; set server.client_cert_file and server.client_key_file"
            .into(),
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError),
        ) if client_cert => format!(
            "the server (or a TLS proxy in front of it) refused the client certificate of \
             server.client_cert_file ({alert:?}); it must be issued by a CA the server \
             trusts, valid now, and match server.client_key_file"
        ),
        _ => return None,
    })
}

/// Whether a new connection closed before it could carry the request.
/// With TLS 1.3 a server checks the client certificate only after the
/// client has finished its handshake, so a refusal arrives while hyper is
/// setting the connection up, and its alert is not what the request sees.
fn closed_before_ready(e: &(dyn Error + 'static)) -> bool {
    causes(e).any(|c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
    })
}

/// The rustls error behind `e`. tokio-rustls hands it on inside an
/// `io::Error` (itself inside another one), whose `source()` skips what it
/// wraps, so each link is also looked into.
fn find<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    causes(e).find_map(inside)
}

/// `e` and the errors behind it, outermost first.
fn causes<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&c| c.source())
}

fn inside<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        Some(tls)
    } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
        io.get_ref().and_then(|inner| inside(inner))
    } else {
        None
    }
}

fn utc(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("unix time {unix_seconds}"))
}

/// The CAs a client for `url` trusts: those of `ca_pem` (server.ca_file),
/// and for an `https://` URL the system's. An `https://` URL with neither
/// is an error naming both fixes; `has_ca_file` says whether the caller
/// reads server.ca_file at all (`init` has no config yet).
pub fn trusted(
    url: &str,
    ca_pem: Option<&[u8]>,
    has_ca_file: bool,
) -> Result<Vec<reqwest::Certificate>, String> {
    // reqwest refuses the whole client, as "builder error", for one CA that
    // rustls cannot use; this one says which.
    let mut check = rustls::RootCertStore::empty();
    let mut roots = Vec::new();
    if let Some(pem) = ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("server.ca_file: not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err("server.ca_file: no PEM certificate in it".into());
        }
        for (n, der) in certs.into_iter().enumerate() {
            check.add(der.clone()).map_err(|e| {
                format!(
                    "server.ca_file: certificate {} is not a usable CA: {e}",
                    n + 1
                )
            })?;
            roots.push(der);
        }
    }
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if !https {
        return Ok(to_reqwest(roots));
    }
    let mut system = SystemStore::load();
    let before = roots.len();
    // As rustls-platform-verifier did: one unusable system CA (an expired
    // or odd one in the bundle) is skipped, not fatal.
    roots.extend(
        std::mem::take(&mut system.certs)
            .into_iter()
            .filter(|der| check.add(der.clone()).is_ok()),
    );
    for e in &system.errors {
        tracing::debug!("system trust store: {e}");
    }
    if roots.is_empty() {
        let (unset, other_fix) = if has_ca_file {
            (", and server.ca_file is not set", "set server.ca_file")
        } else {
            ("", "point SSL_CERT_FILE")
        };
        return Err(format!(
            "no CA certificate to check the certificate of {url} against: {}{unset}; \
             install the system's CA certificates (Debian, Ubuntu: the ca-certificates \
             package), or {other_fix} to the PEM of the CA that issued the server's \
             certificate",
            system.describe()
        ));
    }
    tracing::debug!(
        "trusting {} CA certificates from server.ca_file, {} from the system",
        before,
        roots.len() - before
    );
    Ok(to_reqwest(roots))
}

fn to_reqwest(roots: Vec<CertificateDer<'static>>) -> Vec<reqwest::Certificate> {
    roots
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect()
}

/// The system's CA certificates, found as OpenSSL finds them: the bundle
/// file `SSL_CERT_FILE`, else the usual one; the directories of
/// `SSL_CERT_DIR` (colon-separated), else the usual ones. Each variable
/// replaces only its own default, as with OpenSSL (curl, Python, ...).
struct SystemStore {
    certs: Vec<CertificateDer<'static>>,
    file: (Option<PathBuf>, bool),
    dirs: (Vec<PathBuf>, bool),
    errors: Vec<String>,
}

impl SystemStore {
    fn load() -> SystemStore {
        let env_file = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty());
        let env_dir = std::env::var_os("SSL_CERT_DIR").filter(|v| !v.is_empty());
        let file = match &env_file {
            Some(f) => Some(PathBuf::from(f)),
            None => openssl_probe::probe().cert_file,
        };
        let dirs: Vec<PathBuf> = match &env_dir {
            Some(d) => std::env::split_paths(d)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            None => openssl_probe::candidate_cert_dirs()
                .map(Path::to_path_buf)
                .collect(),
        };
        let mut certs = Vec::new();
        let mut errors = Vec::new();
        let mut take = |r: rustls_native_certs::CertificateResult| {
            certs.extend(r.certs);
            errors.extend(r.errors.iter().map(ToString::to_string));
        };
        if let Some(f) = &file {
            take(rustls_native_certs::load_certs_from_paths(Some(f), None));
        }
        for d in &dirs {
            take(rustls_native_certs::load_certs_from_paths(None, Some(d)));
        }
        // The usual directory holds the usual bundle too.
        certs.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        certs.dedup();
        SystemStore {
            certs,
            file: (file, env_file.is_some()),
            dirs: (dirs, env_dir.is_some()),
            errors,
        }
    }

    /// Where no certificate was found, for the operator.
    fn describe(&self) -> String {
        let (file, file_from_env) = &self.file;
        let (dirs, dirs_from_env) = &self.dirs;
        if file.is_none() && dirs.is_empty() {
            return "this host has no trust store (no /etc/ssl/certs or the like; \
                    SSL_CERT_FILE and SSL_CERT_DIR are not set)"
                .into();
        }
        let mut places = Vec::new();
        if let Some(f) = file {
            let name = if *file_from_env { "SSL_CERT_FILE " } else { "" };
            places.push(format!("{name}{}", f.display()));
        }
        if !dirs.is_empty() {
            let name = if *dirs_from_env { "SSL_CERT_DIR " } else { "" };
            let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            places.push(format!("{name}{}", list.join(":")));
        }
        let mut text = format!("found none in {}", places.join(" nor in "));
        if !self.errors.is_empty() {
            text.push_str(&format!(" ({})", self.errors.join("; ")));
        }
        text
    }
}
