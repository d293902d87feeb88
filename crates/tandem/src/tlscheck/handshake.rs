//! A TLS handshake with each etcd endpoint, with the CA and client certificate of `etcd3`:
//! what rustls and etcd say, turned into findings that name the address, the file and what
//! the certificate lacks. A refused or timed-out connection is a note (etcd may be down while
//! the agent starts), never a TLS finding.

use super::{date, host_of, unix_now, CertFacts, Finding, Severity};
use crate::api::tls;
use crate::config::EtcdConfig;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{AlertDescription, CertificateError, DigitallySignedStruct};

/// The WebPKI verifier, remembering the certificate the server presented.
#[derive(Debug)]
struct Capture {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Shakes hands with every etcd endpoint at once, each within `timeout`. Nothing when etcd
/// is not reached over TLS, when `etcd3.cacert` is not set (the system's CAs are not ours to
/// judge), or when a file cannot be loaded ([`super::check_files`] reports that).
pub async fn check_etcd(etcd: &EtcdConfig, timeout: Duration) -> Vec<Finding> {
    let tls_on = etcd.protocol == "https" || etcd.cacert.is_some() || etcd.cert.is_some();
    let Some(cacert) = etcd.cacert.as_deref().filter(|_| tls_on) else {
        return Vec::new();
    };
    let Ok(roots) = tls::load_roots(cacert) else {
        return Vec::new();
    };
    let roots = Arc::new(roots);
    let identity: Option<ClientIdentity> = match (&etcd.cert, &etcd.key) {
        (Some(c), Some(k)) => match (tls::load_certs(c), tls::load_private_key(k)) {
            (Ok(c), Ok(k)) => Some((c, k)),
            _ => return Vec::new(),
        },
        _ => None,
    };
    let checks = etcd.hosts.iter().map(|h| {
        let roots = roots.clone();
        let identity = identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key()));
        async move { one(h, roots, identity, etcd, cacert, timeout).await }
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn one(
    endpoint: &str,
    roots: Arc<rustls::RootCertStore>,
    identity: Option<ClientIdentity>,
    etcd: &EtcdConfig,
    cacert: &Path,
    timeout: Duration,
) -> Option<Finding> {
    let provider = tls::provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .ok()?;
    let capture = Arc::new(Capture {
        inner,
        seen: Mutex::new(None),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone());
    let has_identity = identity.is_some();
    let mut config = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).ok()?,
        None => builder.with_no_client_auth(),
    };
    // etcd serves gRPC over HTTP/2: with h2 it speaks first after the handshake, so a
    // rejected client certificate (TLS 1.3 reports it after the handshake) shows at once.
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = host_of(endpoint);
    let name = ServerName::try_from(host.clone()).ok()?;
    let note = |what: String| Finding {
        severity: Severity::Note,
        file: format!("etcd at {endpoint}"),
        keys: vec!["etcd3.hosts".into()],
        problem: format!("TLS not checked: {what}"),
        fix: "none for TLS; start etcd, or check etcd3.hosts".into(),
    };
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Some(note(format!("cannot connect: {e}"))),
        Err(_) => return Some(note(format!("no connection within {timeout:?}"))),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let err = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => return Some(note(format!("no TLS handshake within {timeout:?}"))),
        Ok(Ok(mut stream)) => {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(timeout / 2, stream.read(&mut buf)).await {
                Ok(Err(e)) => e,
                _ => return None,
            }
        }
        Ok(Err(e)) => e,
    };
    let seen = capture
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .and_then(|d| CertFacts::from_der(&d).ok());
    let Some(tls_err) = err
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
    else {
        return Some(note(format!("the connection failed: {err}")));
    };
    Some(explain(
        endpoint,
        &host,
        tls_err,
        seen.as_ref(),
        etcd,
        cacert,
        has_identity,
        unix_now(),
    ))
}

/// The finding for a failed handshake with etcd at `endpoint`.
#[allow(clippy::too_many_arguments)]
pub(super) fn explain(
    endpoint: &str,
    host: &str,
    err: &rustls::Error,
    seen: Option<&CertFacts>,
    etcd: &EtcdConfig,
    cacert: &Path,
    has_identity: bool,
    now: i64,
) -> Finding {
    let at = format!("etcd at {endpoint}");
    let ca = cacert.display();
    let presented = seen
        .map(|c| format!(" ({}, issued by {})", c.subject, c.issuer))
        .unwrap_or_default();
    let reissue = format!(
        "re-issue etcd's certificate with this CA and the address: `tandem certs issue --dir <CA dir> --host <etcd host>={host} --role etcd`, then restart etcd"
    );
    let server = |problem: String, fix: String| Finding {
        severity: Severity::Error,
        file: at.clone(),
        keys: vec!["etcd3.hosts".into(), "etcd3.cacert".into()],
        problem,
        fix,
    };
    let client_cert = etcd
        .cert
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match err {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => server(
                format!("the certificate presented by etcd at {endpoint}{presented} was not signed by the CA in {ca}"),
                format!("point etcd3.cacert at the CA that signed etcd's certificates, or {reissue}"),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let has = match (seen, ce) {
                    (Some(c), _) => c.names(),
                    (None, CertificateError::NotValidForNameContext { presented, .. }) => {
                        presented.join(", ")
                    }
                    _ => "unknown names".into(),
                };
                server(
                    format!("the certificate presented by etcd at {endpoint} does not include {host} (it has: {has}; the common name does not count)"),
                    format!("list etcd in etcd3.hosts by a name its certificate carries, or {reissue}"),
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => server(
                format!(
                    "the certificate presented by etcd at {endpoint}{presented} expired{}",
                    seen.map(|c| format!(" on {}", date(c.not_after))).unwrap_or_default()
                ),
                reissue,
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => server(
                format!(
                    "the certificate presented by etcd at {endpoint}{presented} is not valid yet{} (this host's clock reads {})",
                    seen.map(|c| format!(": it starts on {}", date(c.not_before))).unwrap_or_default(),
                    date(now)
                ),
                "check the clocks of this host and of etcd's (`timedatectl`), or re-issue etcd's certificate with a start date in the past".into(),
            ),
            other => server(
                format!("etcd at {endpoint} presented a certificate rustls refuses: {other:?}"),
                reissue,
            ),
        },
        rustls::Error::AlertReceived(alert) if !has_identity
            && matches!(alert, AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure | AlertDescription::BadCertificate) =>
        {
            Finding {
                severity: Severity::Error,
                file: at.clone(),
                keys: vec!["etcd3.cert".into(), "etcd3.key".into()],
                problem: format!("etcd at {endpoint} requires a client certificate (--client-cert-auth) and none is configured (TLS alert {alert:?})"),
                fix: "set etcd3.cert and etcd3.key (client.crt and client.key from `tandem certs issue`)".into(),
            }
        }
        rustls::Error::AlertReceived(alert)
            if matches!(
                alert,
                AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::AccessDenied
                    | AlertDescription::DecryptError
            ) =>
        {
            Finding {
                severity: Severity::Error,
                file: client_cert.clone(),
                keys: vec!["etcd3.cert".into()],
                problem: format!("etcd at {endpoint} refused this client certificate (TLS alert {alert:?}): etcd checks it against its --trusted-ca-file, and that CA did not sign it, or it is expired"),
                fix: format!("issue the client certificate with the CA of etcd's --trusted-ca-file (`tandem certs issue --dir <CA dir> --db <this host>=<address>` gives client.crt), or add the CA that signed {client_cert} to etcd's --trusted-ca-file"),
            }
        }
        other => Finding {
            severity: Severity::Error,
            file: at.clone(),
            keys: vec!["etcd3.hosts".into(), "etcd3.protocol".into()],
            problem: format!("the TLS handshake with etcd at {endpoint} failed: {other}"),
            fix: "check that etcd serves https on this port (its --listen-client-urls and --cert-file), or use protocol: http if it does not".into(),
        },
    }
}
