//! The lab's TLS: certificates issued with `tandem certs` (one CA in DIR/tls, a directory per
//! host), and the lab's own HTTPS checks of etcd and the REST API, which verify the CA and
//! present the router's client certificate.
//!
//! ```text
//! DIR/tls/ca.crt, ca.key      the lab's CA (its key stays here)
//! DIR/tls/<node>/             etcd, postgresql, restapi and client certificates of a node
//! DIR/tls/etcd<k>/            etcd member k's, when it has no node of the same slot
//! DIR/tls/router/             the client certificate of the router and of the lab's checks
//! ```

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;

use crate::certs::{self, IssueArgs};

/// Name of the lab's client-only host (the router, the lab's checks).
pub const CLIENT_HOST: &str = "router";

/// Where a lab's certificates are.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabTls {
    /// DIR/tls
    pub dir: PathBuf,
}

impl LabTls {
    /// Issues the CA and every host's certificates into `dir` with `tandem certs issue`:
    /// `hosts` are (name, address) of servers with the `db` roles, `etcd_only` of etcd members
    /// without a node; files owned by `owner` (the user running the lab's processes).
    pub fn issue(
        dir: &Path,
        hosts: &[(String, String)],
        etcd_only: &[(String, String)],
        owner: &str,
    ) -> Result<LabTls> {
        let mut host = vec![];
        for (n, a) in etcd_only {
            host.push(format!("{n}={a}"));
        }
        let args = IssueArgs {
            dir: dir.to_path_buf(),
            db: hosts.iter().map(|(n, a)| format!("{n}={a}")).collect(),
            router: vec![CLIENT_HOST.to_string()],
            host,
            role: (!etcd_only.is_empty()).then(|| "etcd".into()),
            owner: Some(owner.to_string()),
            etcd_owner: Some(owner.to_string()),
            ca_name: Some("tandem lab CA".into()),
            ..IssueArgs::default()
        };
        // A router host is client-only: its files go to --owner only for PostgreSQL hosts,
        // so they stay the caller's; the router runs as `owner` and must read them.
        certs::issue(&args).context("cannot issue the lab's certificates")?;
        let client = dir.join(CLIENT_HOST);
        for f in ["client.crt", "client.key"] {
            let o = certs::resolve_owner(owner, "lab")?;
            chown(&client.join(f), o.uid, o.gid)?;
        }
        Ok(LabTls {
            dir: dir.to_path_buf(),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(certs::CA_CERT)
    }

    /// DIR/tls/<host>/<role>.<ext> (`ext`: crt or key).
    pub fn file(&self, host: &str, role: &str, ext: &str) -> PathBuf {
        self.dir.join(host).join(format!("{role}.{ext}"))
    }

    /// A client configuration that trusts the lab's CA and presents the router's client
    /// certificate.
    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        use crate::api::tls::{load_certs, load_private_key, load_roots, provider};
        let roots = load_roots(&self.ca())?;
        let chain = load_certs(&self.file(CLIENT_HOST, "client", "crt"))?;
        let key = load_private_key(&self.file(CLIENT_HOST, "client", "key"))?;
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Arc::new(cfg))
    }

    /// An HTTP/1.0 GET over TLS on `tcp`, connected to `sa` (verified against the CA, with
    /// the address as the name): the status code and the body.
    pub fn https_get(&self, tcp: TcpStream, sa: SocketAddr, path: &str) -> Result<(u16, String)> {
        let addr = sa.to_string();
        let name = rustls::pki_types::ServerName::IpAddress(sa.ip().into());
        let conn = rustls::ClientConnection::new(self.client_config()?, name)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        // A server may close without close_notify: what was read before counts.
        match (&mut s).take(4 << 20).read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
            Err(e) => return Err(e.into()),
        }
        super::parse_http_response(&buf, &addr, path)
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", path.display()))
}

/// The pg_hba lines of a TLS lab: `hostssl` only, for loopback and each host address.
pub fn hostssl_hba(addrs: &[String], replication_user: &str) -> Vec<String> {
    let mut hba = Vec::new();
    for a in addrs {
        hba.push(format!(
            "hostssl replication {replication_user} {a}/32 scram-sha-256"
        ));
        hba.push(format!("hostssl all all {a}/32 scram-sha-256"));
    }
    hba
}
