//! HTTP client for members' REST APIs: the agent's probes during the leader race, and the CLI's
//! requests. Follows Patroni's client rules (spec §5.5, §6.1): basic auth from
//! `ctl.authentication` else `restapi.authentication`; CA from `ctl.cacert` else `restapi.cafile`;
//! client certificate from `ctl.certfile`/`ctl.keyfile`; `ctl.insecure` skips verification.
//!
//! Server certificates, by caller:
//! - the CLI verifies the chain and the host name against the CA (the system's trust store when
//!   no CA is configured);
//! - the agent verifies the chain against the CA but not the host name (as Patroni does), and
//!   with no CA configured accepts any certificate: a member must be reachable for the leader race
//!   even when certificates name other addresses.

use crate::api::tls;
use crate::config::{Config, CtlConfig, RestApiConfig};
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tandem_core::cluster::MemberValue;
use tandem_core::ha::PeerAnswer;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tracing::debug;

/// Largest response body read from a member.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// System CA bundles tried by the CLI when no CA is configured.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Who makes the requests: the rules for server certificates differ (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Daemon,
    Cli,
}

/// A REST client for members' APIs. Cheap to clone; the clones share one connection pool, and
/// [`PeerClient::reload`] on any of them changes the certificates all of them use.
#[derive(Clone)]
pub struct PeerClient {
    caller: Caller,
    current: Arc<RwLock<Arc<Setup>>>,
}

/// What a [`PeerClient`] is made of, replaced as a whole on reload.
struct Setup {
    http: reqwest::Client,
    /// Basic-auth user and password (never printed).
    auth: Option<(String, String)>,
    /// Said when a TLS connection fails, to point at the setting to change.
    tls_hint: &'static str,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("caller", &self.caller)
            .field("auth", &self.setup().auth.as_ref().map(|(u, _)| u.clone()))
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// The agent's client, for probes of other members.
    pub fn for_daemon(cfg: &Config) -> Result<PeerClient> {
        PeerClient::new(&cfg.ctl, &cfg.restapi, Caller::Daemon)
    }

    /// The CLI's client.
    pub fn for_cli(cfg: &Config) -> Result<PeerClient> {
        PeerClient::new(&cfg.ctl, &cfg.restapi, Caller::Cli)
    }

    pub fn new(ctl: &CtlConfig, restapi: &RestApiConfig, caller: Caller) -> Result<PeerClient> {
        Ok(PeerClient {
            caller,
            current: Arc::new(RwLock::new(Arc::new(Setup::new(ctl, restapi, caller)?))),
        })
    }

    /// Reads the certificate files again (the same paths with new contents, or new paths) and
    /// makes every clone of this client use them for its next connections. On an error, which
    /// names the setting and the file, the client keeps what it had. Returns the files read
    /// ("ctl.cacert /etc/tandem/ca.crt, ...", empty when it uses none) for the log.
    pub fn reload(&self, ctl: &CtlConfig, restapi: &RestApiConfig) -> Result<String> {
        let setup = Arc::new(Setup::new(ctl, restapi, self.caller)?);
        match self.current.write() {
            Ok(mut g) => *g = setup,
            Err(p) => *p.into_inner() = setup,
        }
        Ok(files_read(ctl, restapi))
    }

    fn setup(&self) -> Arc<Setup> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The certificate files [`Setup::new`] reads, as "setting path" pairs.
fn files_read(ctl: &CtlConfig, restapi: &RestApiConfig) -> String {
    let ca = match (&ctl.cacert, &restapi.cafile) {
        _ if ctl.insecure => None,
        (Some(p), _) => Some(("ctl.cacert", p)),
        (None, Some(p)) => Some(("restapi.cafile", p)),
        (None, None) => None,
    };
    let cert = ctl.certfile.as_ref().map(|p| ("ctl.certfile", p));
    let key = ctl
        .certfile
        .as_ref()
        .and(ctl.keyfile.as_ref())
        .map(|p| ("ctl.keyfile", p));
    [ca, cert, key]
        .into_iter()
        .flatten()
        .map(|(k, p)| format!("{k} {}", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Setup {
    fn new(ctl: &CtlConfig, restapi: &RestApiConfig, caller: Caller) -> Result<Setup> {
        let provider = tls::provider();
        let ca = ctl
            .cacert
            .as_deref()
            .map(|p| (p, "ctl.cacert"))
            .or(restapi.cafile.as_deref().map(|p| (p, "restapi.cafile")));
        let (verifier, tls_hint): (Arc<dyn ServerCertVerifier>, &'static str) = if ctl.insecure {
            (Arc::new(Unchecked::accept_all(&provider)), "")
        } else if let Some((path, key)) = ca {
            let roots = Arc::new(tls::load_roots(path).context(key)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .context(key)?;
            match caller {
                Caller::Cli => (webpki, " (is the member's certificate signed by the CA in ctl.cacert / restapi.cafile, for this host name?)"),
                Caller::Daemon => (Arc::new(ChainOnly(webpki)), " (is the member's certificate signed by the CA in ctl.cacert / restapi.cafile?)"),
            }
        } else {
            match caller {
                Caller::Daemon => (Arc::new(Unchecked::accept_all(&provider)), ""),
                Caller::Cli => {
                    let hint = " (set ctl.cacert to the CA that signed the REST API certificate, or ctl.insecure: true)";
                    let roots = Arc::new(system_roots());
                    // No system trust store: plain-HTTP members still work; HTTPS ones are refused.
                    let verifier: Arc<dyn ServerCertVerifier> =
                        match WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                            .build()
                        {
                            Ok(webpki) => webpki,
                            Err(_) => Arc::new(Unchecked::reject_all(&provider)),
                        };
                    (verifier, hint)
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let tls_config = match &ctl.certfile {
            Some(certfile) => {
                let certs = tls::load_certs(certfile).context("ctl.certfile")?;
                let keyfile = ctl.keyfile.as_deref().unwrap_or(certfile);
                let key = tls::load_private_key(keyfile).context(if ctl.keyfile.is_some() {
                    "ctl.keyfile"
                } else {
                    "ctl.certfile (no keyfile given)"
                })?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    anyhow!(
                        "ctl.certfile/keyfile: the key in {} does not fit the certificate in {} ({e})",
                        keyfile.display(),
                        certfile.display()
                    )
                })?
            }
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("tandem/{}", crate::api::tandem_version()))
            .build()
            .context("HTTP client setup")?;
        let auth = ctl
            .authentication
            .as_ref()
            .or(restapi.authentication.as_ref())
            .map(|c| (c.username.clone(), c.password.expose().to_string()));
        Ok(Setup {
            http,
            auth,
            tls_hint,
        })
    }
}

impl PeerClient {
    /// A request with this client's credentials; the caller adds a body and a timeout.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let setup = self.setup();
        let rb = setup.http.request(method, url);
        match &setup.auth {
            Some((user, password)) => rb.basic_auth(user, Some(password)),
            None => rb,
        }
    }

    /// `GET url`, expecting a 2xx JSON answer within `timeout`.
    pub async fn get_json(&self, url: &str, timeout: Duration) -> Result<Value> {
        let resp = self
            .request(reqwest::Method::GET, url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.explain(url, e))?;
        let code = resp.status();
        let body = read_capped(resp)
            .await
            .with_context(|| format!("GET {url}"))?;
        if !code.is_success() {
            return Err(anyhow!("GET {url}: HTTP {code}"));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: the answer is not JSON"))
    }

    /// Probes a member's `api_url` (its `/patroni` document) for the leader race. `None` when the
    /// member does not answer in time or answers nonsense.
    pub async fn probe_member(&self, api_url: &str, timeout: Duration) -> Option<PeerAnswer> {
        match self.get_json(api_url, timeout).await {
            Ok(doc) => {
                let answer = peer_answer(&doc);
                if answer.is_none() {
                    debug!("probe of {api_url}: the answer has no role: ignored");
                }
                answer
            }
            Err(e) => {
                debug!("probe of {api_url} failed: {e:#}");
                None
            }
        }
    }

    fn explain(&self, url: &str, e: reqwest::Error) -> anyhow::Error {
        let hint = if url.starts_with("https:") && e.is_connect() {
            self.setup().tls_hint
        } else {
            ""
        };
        let mut msg = format!("GET {url}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        anyhow!("{msg}{hint}")
    }
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(anyhow!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What the leader race needs from a member's `/patroni` document: whether it runs as a
/// primary, its WAL position and its failover priority. `None` without a `role`.
pub fn peer_answer(doc: &Value) -> Option<PeerAnswer> {
    let role = doc.get("role")?.as_str()?;
    let is_primary = matches!(role, "primary" | "master" | "standby_leader");
    let xlog = doc.get("xlog");
    let at = |key: &str| xlog.and_then(|x| x.get(key)).and_then(Value::as_u64);
    let wal_position = at("location").unwrap_or_else(|| {
        at("received_location")
            .unwrap_or(0)
            .max(at("replayed_location").unwrap_or(0))
    });
    let tags = doc
        .get("tags")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let failover_priority = MemberValue {
        tags,
        ..Default::default()
    }
    .failover_priority();
    Some(PeerAnswer {
        is_primary,
        wal_position,
        failover_priority,
        streaming: doc.get("replication_state").and_then(Value::as_str) == Some("streaming"),
    })
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    if let Some(bundle) = SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|p| p.exists()) {
        if let Ok(certs) = tls::load_certs(bundle) {
            roots.add_parsable_certificates(certs);
        }
    }
    roots
}

/// Accepts (or, with no trust store at all, refuses) every server certificate without looking
/// at it, still checking the handshake signatures.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
    accept: bool,
}

impl Unchecked {
    fn accept_all(provider: &Arc<CryptoProvider>) -> Unchecked {
        Unchecked {
            provider: provider.clone(),
            accept: true,
        }
    }
    fn reject_all(provider: &Arc<CryptoProvider>) -> Unchecked {
        Unchecked {
            provider: provider.clone(),
            accept: false,
        }
    }
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accept {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies the certificate chain against the CA but accepts any host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked first: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primary_document() {
        let doc = json!({"state": "running", "role": "primary", "xlog": {"location": 67395656}, "timeline": 2, "tags": {}});
        assert_eq!(
            peer_answer(&doc),
            Some(PeerAnswer {
                is_primary: true,
                wal_position: 67395656,
                failover_priority: 1,
                streaming: false,
            })
        );
        let legacy = json!({"role": "master", "xlog": {"location": 5}});
        assert!(peer_answer(&legacy).unwrap().is_primary);
        let standby_leader = json!({"role": "standby_leader", "xlog": {"received_location": 9, "replayed_location": 8}});
        assert_eq!(
            peer_answer(&standby_leader).map(|a| (a.is_primary, a.wal_position)),
            Some((true, 9))
        );
    }

    #[test]
    fn replica_document_takes_the_furthest_position() {
        let doc = json!({"role": "replica", "xlog": {"received_location": 100, "replayed_location": 120, "replayed_timestamp": null, "paused": false}, "tags": {"failover_priority": 3}});
        assert_eq!(
            peer_answer(&doc),
            Some(PeerAnswer {
                is_primary: false,
                wal_position: 120,
                failover_priority: 3,
                streaming: false,
            })
        );
        let stopped = json!({"role": "replica", "state": "stopped"});
        assert_eq!(peer_answer(&stopped).map(|a| a.wal_position), Some(0));
    }

    #[test]
    fn nofailover_means_priority_zero() {
        let doc = json!({"role": "replica", "xlog": {"received_location": 1, "replayed_location": 1}, "tags": {"nofailover": true, "failover_priority": 5}});
        assert_eq!(peer_answer(&doc).unwrap().failover_priority, 0);
        let off = json!({"role": "replica", "tags": {"nofailover": false}});
        assert_eq!(peer_answer(&off).unwrap().failover_priority, 1);
    }

    #[test]
    fn nonsense_is_not_an_answer() {
        for doc in [
            json!(null),
            json!([]),
            json!({"state": "running"}),
            json!({"role": 3}),
            json!({"role": "replica", "xlog": "x", "tags": 1}),
        ] {
            if doc.get("role").and_then(Value::as_str).is_some() {
                assert_eq!(peer_answer(&doc).map(|a| a.wal_position), Some(0));
            } else {
                assert_eq!(peer_answer(&doc), None, "{doc}");
            }
        }
    }
}
