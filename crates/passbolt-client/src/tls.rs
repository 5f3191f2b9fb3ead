//! What a failed TLS connection means for the operator, and which setting
//! fixes it. rustls says `invalid peer certificate: UnknownIssuer`; the
//! operator needs to hear "set server.ca_file".

use std::error::Error;

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
