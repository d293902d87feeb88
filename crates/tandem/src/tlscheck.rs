//! Start-up checks of the TLS files a configuration names (issue 14): the seed's pitfalls,
//! reported before anything runs, each naming the file, what is wrong and the command that
//! fixes it.
//!
//! What is checked ([`check_files`]):
//!
//! - every file exists and the agent's user can read it (`open` decides, so ACLs count);
//! - PostgreSQL's server key (`ssl_key_file`) has the owner and mode PostgreSQL demands: owned
//!   by the user it runs as (the agent's) with no group or other bits, or by root with 0640 at
//!   most; libpq client keys (`sslkey`) have no group or other bits when the user owns them
//!   (0640 at most when root does). These are metadata checks: root can open anything, and
//!   PostgreSQL looks at the mode, not at whether it could open the file;
//! - every certificate parses and is within its dates (expired, not yet valid: errors; ending
//!   within [`WARN_DAYS`] days: a warning); a CA file holds a CA;
//! - each key belongs to its certificate (same public key);
//! - each certificate was signed by the CA that will verify it (directly or through the
//!   intermediates bundled with it);
//! - the REST API certificate names `restapi.connect_address`'s host and PostgreSQL's names
//!   `postgresql.connect_address`'s (an IP SAN for an IP, a DNS SAN for a name: rustls and
//!   libpq do not fall back to the common name when SANs exist, and rustls never does).
//!
//! Errors are what makes the peer (PostgreSQL, etcd, libpq, the other agents) refuse; a
//! mismatch that only a setting not visible here would make fatal (a client certificate
//! checked against a CA this file does not name) is a warning.
//!
//! [`check_etcd`] then shakes hands with each etcd endpoint with the configured CA and client
//! certificate, and names what etcd's certificate lacks, or that etcd refused ours.
//!
//! [`register`] records the certificates in use; `/metrics` shows their days to expiry and
//! [`spawn_expiry_warnings`] logs a warning each day from [`WARN_DAYS`] days before the end.

use crate::config::Config;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tandem_core::dynamic::parse_bool;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A certificate this close to its end is reported (start-up, `validate`, the daily warning).
pub const WARN_DAYS: i64 = 30;
/// How long a TLS handshake with an etcd endpoint may take at start-up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const DAY: i64 = 86_400;

// --- findings --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The agent refuses to start: a peer would refuse this file.
    Error,
    /// Logged; the agent starts.
    Warning,
    /// `validate` prints it; the agent does not (etcd down at start-up is no TLS problem).
    Note,
}

/// One problem: the file, what is wrong, the command (or setting) that fixes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The file, or `etcd at HOST:PORT` for what a handshake found.
    pub file: String,
    /// The configuration keys naming the file (`etcd3.key`, ...), or where the problem was seen.
    pub keys: Vec<String>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        // `{:#}` puts the fix on a line of its own (`tandem validate`); logs keep one line.
        let sep = if f.alternate() {
            "\n  fix: "
        } else {
            "; fix: "
        };
        write!(
            f,
            "{sev}: {} ({}): {}{sep}{}",
            self.file,
            self.keys.join(", "),
            self.problem,
            self.fix
        )
    }
}

pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

// --- the files of a configuration -------------------------------------------------------------

/// What a file is to the process that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Certificate,
    Ca,
    Key(KeyRule),
}

/// Whose rules a private key must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyRule {
    /// `ssl_key_file`: owned by PostgreSQL's user with no group/other bits, or root's with
    /// 0640 at most (PostgreSQL's `check_ssl_key_file_permissions`).
    PostgresServer,
    /// `sslkey`: libpq refuses group/other bits when the user owns it (0640 when root does).
    Libpq,
    /// The agent's own keys (REST API, etcd client, ctl): world-readable is a warning.
    Agent,
}

/// One use of a file by the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFile {
    pub path: PathBuf,
    /// The configuration key, e.g. `etcd3.cacert`.
    pub key: String,
    /// `restapi`, `etcd3`, `ctl`, `postgresql`, `replication`, `superuser`, `rewind`.
    pub role: &'static str,
    pub kind: Kind,
}

/// A certificate with its key, the CA it must chain to, and the host it must name.
#[derive(Clone, Debug)]
struct Bundle {
    cert: Option<TlsFile>,
    key: Option<TlsFile>,
    ca: Option<TlsFile>,
    /// The CA that verifies the certificate, and how serious a certificate it did not sign is.
    signer: Option<(TlsFile, Severity, &'static str)>,
    /// (key, host, severity, who checks the name)
    name: Option<(String, String, Severity, &'static str)>,
    /// Files inside a data directory not yet initialized: not there yet, not an error.
    uninitialized_data_dir: Option<PathBuf>,
}

fn use_of(path: &Path, key: &str, role: &'static str, kind: Kind) -> TlsFile {
    TlsFile {
        path: path.to_path_buf(),
        key: key.to_string(),
        role,
        kind,
    }
}

/// The host of `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> String {
    let a = addr.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a.to_string(),
    }
}

/// A PostgreSQL parameter: the local `postgresql.parameters` first, then
/// `bootstrap.dcs.postgresql.parameters` (where the seed puts `ssl`), with the key that set it.
fn pg_parameter(cfg: &Config, name: &str) -> Option<(String, String)> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(v) = cfg.postgresql.parameters.get(name) {
        return Some((text(v), format!("postgresql.parameters.{name}")));
    }
    cfg.bootstrap
        .dcs
        .pointer(&format!("/postgresql/parameters/{name}"))
        .map(|v| {
            (
                text(v),
                format!("bootstrap.dcs.postgresql.parameters.{name}"),
            )
        })
}

fn bundles(cfg: &Config) -> Vec<Bundle> {
    let mut out = Vec::new();
    let empty = || Bundle {
        cert: None,
        key: None,
        ca: None,
        signer: None,
        name: None,
        uninitialized_data_dir: None,
    };

    // REST API: the peers (and tandem's CLI) verify it with ctl.cacert, else restapi.cafile.
    let r = &cfg.restapi;
    let mut b = empty();
    b.ca = r
        .cafile
        .as_deref()
        .map(|p| use_of(p, "restapi.cafile", "restapi", Kind::Ca));
    if let Some(cert) = &r.certfile {
        b.cert = Some(use_of(
            cert,
            "restapi.certfile",
            "restapi",
            Kind::Certificate,
        ));
        b.key = Some(match &r.keyfile {
            Some(k) => use_of(k, "restapi.keyfile", "restapi", Kind::Key(KeyRule::Agent)),
            None => use_of(
                cert,
                "restapi.certfile",
                "restapi",
                Kind::Key(KeyRule::Agent),
            ),
        });
        let verifier = cfg
            .ctl
            .cacert
            .as_deref()
            .map(|p| use_of(p, "ctl.cacert", "ctl", Kind::Ca))
            .or_else(|| b.ca.clone());
        let checked = !cfg.ctl.insecure;
        let sev = if checked {
            Severity::Error
        } else {
            Severity::Warning
        };
        b.signer = verifier.map(|v| {
            (
                v,
                sev,
                "the other agents and tandem's CLI verify the REST API with it, and will refuse this certificate",
            )
        });
        b.name = Some((
            "restapi.connect_address".into(),
            host_of(&r.connect_address),
            sev,
            "tandem's CLI and patronictl check this name when they call the REST API",
        ));
    }
    if b.cert.is_some() || b.ca.is_some() {
        out.push(b);
    }

    // etcd client: etcd checks the client certificate with its own --trusted-ca-file, usually
    // the CA of etcd3.cacert; the handshake (check_etcd) sees the real verdict.
    let e = &cfg.etcd3;
    let mut b = empty();
    b.ca = e
        .cacert
        .as_deref()
        .map(|p| use_of(p, "etcd3.cacert", "etcd3", Kind::Ca));
    b.cert = e
        .cert
        .as_deref()
        .map(|p| use_of(p, "etcd3.cert", "etcd3", Kind::Certificate));
    b.key = e
        .key
        .as_deref()
        .map(|p| use_of(p, "etcd3.key", "etcd3", Kind::Key(KeyRule::Agent)));
    b.signer = b.ca.clone().map(|c| {
        (
            c,
            Severity::Warning,
            "etcd refuses it unless its --trusted-ca-file holds the CA that did sign it",
        )
    });
    if b.cert.is_some() || b.key.is_some() || b.ca.is_some() {
        out.push(b);
    }

    // ctl: the client certificate presented to the other agents' REST APIs.
    let c = &cfg.ctl;
    let mut b = empty();
    b.ca = c
        .cacert
        .as_deref()
        .map(|p| use_of(p, "ctl.cacert", "ctl", Kind::Ca));
    if let Some(cert) = &c.certfile {
        b.cert = Some(use_of(cert, "ctl.certfile", "ctl", Kind::Certificate));
        b.key = Some(match &c.keyfile {
            Some(k) => use_of(k, "ctl.keyfile", "ctl", Kind::Key(KeyRule::Agent)),
            None => use_of(cert, "ctl.certfile", "ctl", Kind::Key(KeyRule::Agent)),
        });
        // The REST APIs check it with their restapi.cafile (the same file on every node).
        let verifier = cfg
            .restapi
            .cafile
            .as_deref()
            .map(|p| use_of(p, "restapi.cafile", "restapi", Kind::Ca))
            .or_else(|| b.ca.clone());
        b.signer = verifier.map(|v| {
            (
                v,
                Severity::Warning,
                "REST APIs that check client certificates against it will refuse this one",
            )
        });
    }
    if b.cert.is_some() || b.ca.is_some() {
        out.push(b);
    }

    // PostgreSQL server: relative paths are relative to the data directory.
    let pg = &cfg.postgresql;
    let ssl_on = pg_parameter(cfg, "ssl")
        .and_then(|(v, _)| parse_bool(&serde_json::Value::String(v)))
        .unwrap_or(false);
    let cert_param = pg_parameter(cfg, "ssl_cert_file");
    let key_param = pg_parameter(cfg, "ssl_key_file");
    if ssl_on || cert_param.is_some() || key_param.is_some() {
        let data_dir = &pg.data_dir;
        let initialized = data_dir.join("PG_VERSION").exists();
        let mut inside = false;
        let mut resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                inside = true;
                data_dir.join(p)
            }
        };
        let (cert, cert_key) = match &cert_param {
            Some((v, k)) => (resolve(v), k.clone()),
            None => (
                resolve("server.crt"),
                "postgresql.parameters.ssl_cert_file (default)".into(),
            ),
        };
        let (key, key_key) = match &key_param {
            Some((v, k)) => (resolve(v), k.clone()),
            None => (
                resolve("server.key"),
                "postgresql.parameters.ssl_key_file (default)".into(),
            ),
        };
        let ca = pg_parameter(cfg, "ssl_ca_file")
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, k)| (resolve(&v), k));
        let mut b = empty();
        b.cert = Some(use_of(&cert, &cert_key, "postgresql", Kind::Certificate));
        b.key = Some(use_of(
            &key,
            &key_key,
            "postgresql",
            Kind::Key(KeyRule::PostgresServer),
        ));
        b.ca = ca
            .as_ref()
            .map(|(p, k)| use_of(p, k, "postgresql", Kind::Ca));
        // Standbys verify this certificate with replication.sslrootcert when their sslmode
        // says so; otherwise the CA of ssl_ca_file is the best guess of what clients trust.
        let rep = &pg.authentication.replication;
        let mode = rep.sslmode.as_deref().unwrap_or("prefer");
        let verifying = matches!(mode, "verify-ca" | "verify-full");
        let root = rep
            .sslrootcert
            .as_deref()
            .filter(|r| *r != "system" && verifying);
        b.signer = match root {
            Some(r) => Some((
                use_of(
                    Path::new(r),
                    "postgresql.authentication.replication.sslrootcert",
                    "replication",
                    Kind::Ca,
                ),
                Severity::Error,
                "the standbys verify the primary with it (sslmode verify-ca/verify-full) and will refuse this certificate",
            )),
            None => b.ca.clone().map(|c| {
                (
                    c,
                    Severity::Warning,
                    "clients that trust this CA (sslmode verify-ca/verify-full) will refuse this certificate",
                )
            }),
        };
        b.name = Some((
            "postgresql.connect_address".into(),
            host_of(&pg.connect_address),
            if mode == "verify-full" {
                Severity::Error
            } else {
                Severity::Warning
            },
            "clients with sslmode=verify-full (the standbys too, when replication.sslmode is) check this name",
        ));
        if inside && !initialized {
            b.uninitialized_data_dir = Some(data_dir.clone());
        }
        out.push(b);
    }

    // libpq client identities.
    let auth = &pg.authentication;
    let creds = [
        ("superuser", Some(&auth.superuser)),
        ("replication", Some(&auth.replication)),
        ("rewind", auth.rewind.as_ref()),
    ];
    for (role, c) in creds {
        let Some(c) = c else { continue };
        let k = |f: &str| format!("postgresql.authentication.{role}.{f}");
        let mut b = empty();
        b.cert = c
            .sslcert
            .as_deref()
            .map(|p| use_of(Path::new(p), &k("sslcert"), role, Kind::Certificate));
        b.key = c
            .sslkey
            .as_deref()
            .map(|p| use_of(Path::new(p), &k("sslkey"), role, Kind::Key(KeyRule::Libpq)));
        b.ca = c
            .sslrootcert
            .as_deref()
            .filter(|r| *r != "system")
            .map(|p| use_of(Path::new(p), &k("sslrootcert"), role, Kind::Ca));
        b.signer = b.ca.clone().map(|ca| {
            (
                ca,
                Severity::Warning,
                "PostgreSQL refuses it unless its ssl_ca_file holds the CA that did sign it",
            )
        });
        if b.cert.is_some() || b.key.is_some() || b.ca.is_some() {
            out.push(b);
        }
    }
    out
}

/// Every TLS file the configuration uses, once per key naming it.
pub fn tls_files(cfg: &Config) -> Vec<TlsFile> {
    let mut out: Vec<TlsFile> = Vec::new();
    for b in bundles(cfg) {
        for f in [b.cert, b.key, b.ca].into_iter().flatten() {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if let Some((f, _, _)) = b.signer {
            if !out.iter().any(|o| o.path == f.path && o.key == f.key) {
                out.push(f);
            }
        }
    }
    out
}

// --- certificates ----------------------------------------------------------------------------

/// What the checks read from a certificate.
#[derive(Clone, Debug)]
pub struct CertFacts {
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
    /// The SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

impl CertFacts {
    pub fn from_der(der: &[u8]) -> Result<CertFacts, String> {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| format!("not X.509: {e}"))?;
        let mut ips = Vec::new();
        let mut dns = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(CertFacts {
            der: der.to_vec(),
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            is_ca: c
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|b| b.value.ca),
            ips,
            dns,
            spki: c.public_key().raw.to_vec(),
        })
    }

    /// The names as `IP:… DNS:…`, for messages.
    pub fn names(&self) -> String {
        let mut v: Vec<String> = self.ips.iter().map(|i| format!("IP:{i}")).collect();
        v.extend(self.dns.iter().map(|d| format!("DNS:{d}")));
        if v.is_empty() {
            "no subject alternative names".into()
        } else {
            v.join(", ")
        }
    }

    /// Whether a client connecting to `host` accepts this certificate's names: an IP must be
    /// an IP SAN, a name a DNS SAN (a `*.` wildcard covers one label). No common-name fallback.
    pub fn covers(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns.iter().any(|d| {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            match d.strip_prefix("*.") {
                Some(rest) => host
                    .split_once('.')
                    .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
                None => d == host,
            }
        })
    }
}

/// Whether the certificate `der` was signed by the key of `issuer`.
fn signed_by(der: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (
        X509Certificate::from_der(der),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    c.issuer().as_raw() == i.subject().as_raw() && c.verify_signature(Some(i.public_key())).is_ok()
}

/// Whether the first certificate of `chain` leads to one of `roots`, through the others.
pub fn chains_to(chain: &[CertFacts], roots: &[CertFacts]) -> bool {
    let Some(mut current) = chain.first() else {
        return false;
    };
    for _ in 0..=chain.len() {
        if roots.iter().any(|r| signed_by(&current.der, &r.der)) {
            return true;
        }
        match chain[1..]
            .iter()
            .find(|i| i.der != current.der && signed_by(&current.der, &i.der))
        {
            Some(next) => current = next,
            None => return false,
        }
    }
    false
}

fn parse_pem_certs(bytes: &[u8]) -> Result<Vec<CertFacts>, String> {
    let ders = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM ({e})"))?;
    if ders.is_empty() {
        return Err("no certificate in it (expected a '-----BEGIN CERTIFICATE-----' block)".into());
    }
    ders.iter().map(|d| CertFacts::from_der(d)).collect()
}

/// The SubjectPublicKeyInfo of the first private key in a PEM text.
fn key_spki(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let key = match rustls_pemfile::private_key(&mut &bytes[..]) {
        Ok(Some(k)) => k,
        Ok(None) if bytes.windows(9).any(|w| w == b"ENCRYPTED") => {
            return Err("the private key is encrypted, which tandem does not read".into())
        }
        Ok(None) => {
            return Err(
                "no private key in it (expected a '-----BEGIN PRIVATE KEY-----' block)".into(),
            )
        }
        Err(e) => return Err(format!("invalid PEM ({e})")),
    };
    let signer = crate::api::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("not a usable private key ({e})"))?;
    signer
        .public_key()
        .map(|k| k.as_ref().to_vec())
        .ok_or_else(|| "its public key cannot be derived".into())
}

fn date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ts.to_string())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// --- the checks ------------------------------------------------------------------------------

/// Who runs the agent (and PostgreSQL), for owner checks and fix commands.
#[derive(Clone, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub name: String,
}

impl RunAs {
    pub fn current() -> RunAs {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        RunAs {
            uid,
            name: crate::certs::user_name(uid),
        }
    }
}

/// The command that issues this node's certificates again.
fn reissue(cfg: &Config) -> String {
    let mut addrs: Vec<String> = Vec::new();
    for a in [
        &cfg.postgresql.connect_address,
        &cfg.restapi.connect_address,
    ] {
        let h = host_of(a);
        if !h.is_empty() && !addrs.contains(&h) {
            addrs.push(h);
        }
    }
    format!(
        "`tandem certs issue --dir <CA dir> --db {}={}` (the directory with ca.crt and ca.key), then copy the host's files in place",
        cfg.name,
        addrs.join(",")
    )
}

impl RunAs {
    /// The user the agent and PostgreSQL run as: the current one, except for root (PostgreSQL
    /// never runs as root; `tandem validate` is often run as root): then the owner of the data
    /// directory, or of its nearest existing parent, when that is not root.
    pub fn for_config(cfg: &Config) -> RunAs {
        let me = RunAs::current();
        if me.uid != 0 {
            return me;
        }
        use std::os::unix::fs::MetadataExt;
        let owner = cfg
            .postgresql
            .data_dir
            .ancestors()
            .find_map(|d| std::fs::metadata(d).ok())
            .map(|m| m.uid())
            .filter(|&uid| uid != 0);
        match owner {
            Some(uid) => RunAs {
                uid,
                name: crate::certs::user_name(uid),
            },
            None => me,
        }
    }
}

/// All file checks, now, for the user the agent runs as ([`RunAs::for_config`]).
pub fn check_files(cfg: &Config) -> Vec<Finding> {
    check_files_at(cfg, unix_now(), &RunAs::for_config(cfg))
}

/// What was read from one path.
struct Read {
    bytes: Option<Vec<u8>>,
    certs: Option<Vec<CertFacts>>,
}

/// All file checks at `now` (seconds since the epoch) for user `run`.
pub fn check_files_at(cfg: &Config, now: i64, run: &RunAs) -> Vec<Finding> {
    let bundles = bundles(cfg);
    let fix_cert = reissue(cfg);
    let mut out = Vec::new();

    // Uses of each path, in order of appearance.
    let mut paths: Vec<(PathBuf, Vec<TlsFile>, Option<PathBuf>)> = Vec::new();
    for b in &bundles {
        let signer = b.signer.as_ref().map(|s| s.0.clone());
        for f in [b.cert.clone(), b.key.clone(), b.ca.clone(), signer]
            .into_iter()
            .flatten()
        {
            match paths.iter_mut().find(|(p, _, _)| *p == f.path) {
                Some((_, uses, _)) => {
                    if !uses.contains(&f) {
                        uses.push(f)
                    }
                }
                None => paths.push((f.path.clone(), vec![f], b.uninitialized_data_dir.clone())),
            }
        }
    }

    let mut read: BTreeMap<PathBuf, Read> = BTreeMap::new();
    for (path, uses, uninit) in &paths {
        let keys = keys_of(uses);
        let finding = |severity, problem: String, fix: String| Finding {
            severity,
            file: path.display().to_string(),
            keys: keys.clone(),
            problem,
            fix,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                if let (Some(dir), std::io::ErrorKind::NotFound) = (uninit, e.kind()) {
                    out.push(finding(
                        Severity::Note,
                        format!("not checked: it lives in the data directory {}, which is not initialized yet", dir.display()),
                        "none needed now; it must be there (or be copied by the base backup) before PostgreSQL starts".into(),
                    ));
                } else {
                    out.push(unreadable(path, &keys, uses, &e, run, &fix_cert));
                }
                read.insert(
                    path.clone(),
                    Read {
                        bytes: None,
                        certs: None,
                    },
                );
                continue;
            }
        };

        // Keys: owner and mode, as the program that reads them checks them.
        if let Some(rule) = uses
            .iter()
            .filter_map(|u| match u.kind {
                Kind::Key(r) => Some(r),
                _ => None,
            })
            .min()
        {
            if let Ok(m) = std::fs::metadata(path) {
                if let Some((sev, problem, fix)) =
                    key_mode_problem(rule, path, m.uid(), m.permissions().mode() & 0o7777, run)
                {
                    out.push(finding(sev, problem, fix));
                }
            }
        }

        // Certificates: parse, dates, CA-ness.
        let wants_cert = uses
            .iter()
            .any(|u| matches!(u.kind, Kind::Certificate | Kind::Ca));
        let mut certs = None;
        if wants_cert {
            match parse_pem_certs(&bytes) {
                Err(e) => out.push(finding(
                    Severity::Error,
                    format!("cannot be read as a certificate: {e}"),
                    format!(
                        "point {} at a PEM certificate, or issue one: {fix_cert}",
                        keys.join(" / ")
                    ),
                )),
                Ok(c) => {
                    let many = c.len() > 1;
                    for cert in &c {
                        let which = if many {
                            format!("the certificate {} in it", cert.subject)
                        } else {
                            "the certificate".to_string()
                        };
                        let is_ca_file = uses.iter().all(|u| u.kind == Kind::Ca);
                        let fix = if is_ca_file {
                            "replace the CA: `tandem certs init --dir <CA dir> --new-ca`, then issue every host's certificates again and copy them in place".to_string()
                        } else {
                            format!("re-issue it: {fix_cert}")
                        };
                        if cert.not_after <= now {
                            out.push(finding(
                                Severity::Error,
                                format!("{which} expired on {}", date(cert.not_after)),
                                fix,
                            ));
                        } else if cert.not_before > now {
                            out.push(finding(
                                Severity::Error,
                                format!(
                                    "{which} is not valid before {} (is this host's clock right? it reads {})",
                                    date(cert.not_before),
                                    date(now)
                                ),
                                "check the clock (`timedatectl`), or re-issue the certificate with a start date in the past".to_string(),
                            ));
                        } else if cert.not_after - now < WARN_DAYS * DAY {
                            out.push(finding(
                                Severity::Warning,
                                format!(
                                    "{which} expires in {} days, on {}",
                                    (cert.not_after - now) / DAY,
                                    date(cert.not_after)
                                ),
                                fix,
                            ));
                        }
                    }
                    if uses.iter().any(|u| u.kind == Kind::Ca) && !c.iter().any(|x| x.is_ca) {
                        let ca_keys = keys_of(
                            &uses
                                .iter()
                                .filter(|u| u.kind == Kind::Ca)
                                .cloned()
                                .collect::<Vec<_>>(),
                        );
                        out.push(finding(
                            Severity::Error,
                            format!(
                                "it is not a CA certificate (it holds {}, without basicConstraints CA:TRUE), so nothing it is asked to verify can chain to it",
                                c[0].subject
                            ),
                            format!(
                                "point {} at the CA certificate (ca.crt from `tandem certs`)",
                                ca_keys.join(" / ")
                            ),
                        ));
                    }
                    certs = Some(c);
                }
            }
        }
        read.insert(
            path.clone(),
            Read {
                bytes: Some(bytes),
                certs,
            },
        );
    }

    for b in &bundles {
        check_bundle(b, &read, &fix_cert, &mut out);
    }
    let mut seen = Vec::new();
    out.retain(|f| {
        let k = (f.file.clone(), f.problem.clone());
        let new = !seen.contains(&k);
        seen.push(k);
        new
    });
    out.sort_by_key(|f| f.severity);
    out
}

fn keys_of(uses: &[TlsFile]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for u in uses {
        if !keys.contains(&u.key) {
            keys.push(u.key.clone());
        }
    }
    keys
}

/// Key, signer and name checks of one certificate.
fn check_bundle(
    b: &Bundle,
    read: &BTreeMap<PathBuf, Read>,
    fix_cert: &str,
    out: &mut Vec<Finding>,
) {
    let Some(cert) = &b.cert else { return };
    let Some(chain) = read.get(&cert.path).and_then(|r| r.certs.as_ref()) else {
        return;
    };
    let leaf = &chain[0];

    if let Some(key) = &b.key {
        if let Some(bytes) = read.get(&key.path).and_then(|r| r.bytes.as_ref()) {
            match key_spki(bytes) {
                Ok(spki) if spki != leaf.spki => out.push(Finding {
                    severity: Severity::Error,
                    file: key.path.display().to_string(),
                    keys: vec![key.key.clone()],
                    problem: format!(
                        "this key does not belong to the certificate {} ({}): their public keys differ",
                        cert.path.display(),
                        cert.key
                    ),
                    fix: format!(
                        "point {} at the key issued with that certificate, or re-issue both: {fix_cert}",
                        key.key
                    ),
                }),
                Ok(_) => {}
                Err(e) => out.push(Finding {
                    severity: Severity::Error,
                    file: key.path.display().to_string(),
                    keys: vec![key.key.clone()],
                    problem: format!("cannot be read as a private key: {e}"),
                    fix: format!(
                        "point {} at the PEM key (unencrypted) of {}, or re-issue both: {fix_cert}",
                        key.key,
                        cert.path.display()
                    ),
                }),
            }
        }
    }

    if let Some((ca, severity, why)) = &b.signer {
        if let Some(roots) = read.get(&ca.path).and_then(|r| r.certs.as_ref()) {
            let roots: Vec<CertFacts> = roots.iter().filter(|r| r.is_ca).cloned().collect();
            if !roots.is_empty() && !chains_to(chain, &roots) {
                out.push(Finding {
                    severity: *severity,
                    file: cert.path.display().to_string(),
                    keys: vec![cert.key.clone()],
                    problem: format!(
                        "the certificate ({}, issued by {}) was not signed by the CA in {} ({}, {}): {why}",
                        leaf.subject,
                        leaf.issuer,
                        ca.path.display(),
                        ca.key,
                        roots.iter().map(|r| r.subject.clone()).collect::<Vec<_>>().join("; "),
                    ),
                    fix: format!(
                        "re-issue the certificate with that CA: {fix_cert}; or point {} at the CA that signed it",
                        ca.key
                    ),
                });
            }
        }
    }

    if let Some((key, host, severity, why)) = &b.name {
        // Nobody connects to a wildcard address: nothing to name.
        let wildcard = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if !host.is_empty() && !wildcard && !leaf.covers(host) {
            let kind = if host.parse::<IpAddr>().is_ok() {
                "IP"
            } else {
                "DNS"
            };
            out.push(Finding {
                severity: *severity,
                file: cert.path.display().to_string(),
                keys: vec![cert.key.clone()],
                problem: format!(
                    "the certificate does not name {host} ({key}) as a subject alternative name \
                     (it has: {}; the common name does not count): {why}",
                    leaf.names()
                ),
                fix: format!("re-issue it with {kind}:{host}: {fix_cert}"),
            });
        }
    }
}

/// Why the owner or mode of a key makes its reader refuse it (PostgreSQL's
/// `check_ssl_key_file_permissions`, libpq's `initialize_SSL`), or `None`.
pub fn key_mode_problem(
    rule: KeyRule,
    path: &Path,
    owner: u32,
    mode: u32,
    run: &RunAs,
) -> Option<(Severity, String, String)> {
    let p = path.display();
    let user = &run.name;
    let owner_name = crate::certs::user_name(owner);
    let perm = mode & 0o777;
    match rule {
        KeyRule::PostgresServer | KeyRule::Libpq => {
            let who = if rule == KeyRule::PostgresServer {
                "PostgreSQL"
            } else {
                "libpq"
            };
            if owner == run.uid {
                (perm & 0o077 != 0).then(|| {
                    (
                        Severity::Error,
                        format!("mode {perm:04o} lets group or others read it, and {who} refuses such a key (it must be 0600 or 0400 when {user} owns it)"),
                        format!("`chmod 0600 {p}`"),
                    )
                })
            } else if owner == 0 {
                (perm & 0o037 != 0).then(|| {
                    (
                        Severity::Error,
                        format!("it is root's with mode {perm:04o}, and {who} refuses a root-owned key with more than 0640"),
                        format!("`chown {user} {p} && chmod 0600 {p}`"),
                    )
                })
            } else if rule == KeyRule::PostgresServer {
                Some((
                    Severity::Error,
                    format!("it is owned by {owner_name}, and PostgreSQL (running as {user}) refuses a key owned by anyone but itself or root"),
                    format!("`chown {user} {p} && chmod 0600 {p}`"),
                ))
            } else {
                None
            }
        }
        KeyRule::Agent => (perm & 0o004 != 0).then(|| {
            (
                Severity::Warning,
                format!("mode {perm:04o} lets every user on this host read this private key"),
                format!("`chmod 0600 {p}` (owner {owner_name}; give {user} access with `setfacl -m u:{user}:r {p}` if it is not the owner)"),
            )
        }),
    }
}

/// The finding for a file that cannot be read: missing, or not readable by the agent's user
/// (with its owner and mode, or the directory on its path that stops the user).
fn unreadable(
    path: &Path,
    keys: &[String],
    uses: &[TlsFile],
    err: &std::io::Error,
    run: &RunAs,
    fix_cert: &str,
) -> Finding {
    let p = path.display();
    let user = &run.name;
    let pg_key = uses
        .iter()
        .any(|u| u.kind == Kind::Key(KeyRule::PostgresServer));
    let (problem, fix) = match err.kind() {
        std::io::ErrorKind::NotFound => (
            "the file does not exist".to_string(),
            format!(
                "correct {} or put the file there (issue it with {fix_cert})",
                keys.join(" / ")
            ),
        ),
        std::io::ErrorKind::PermissionDenied => {
            match std::fs::metadata(path) {
                Ok(m) => {
                    let owner = crate::certs::user_name(m.uid());
                    let mode = m.permissions().mode() & 0o777;
                    let fix = if pg_key {
                        format!("`chown {user} {p} && chmod 0600 {p}` (PostgreSQL, running as {user}, reads it too)")
                    } else {
                        format!("`chown {user} {p}`, or keep {owner} as its owner and `setfacl -m u:{user}:r {p}`")
                    };
                    (
                    format!("{user} (the agent's user) cannot read it: owner {owner}, mode {mode:04o}"),
                    fix,
                )
                }
                Err(_) => {
                    let dir = blocking_dir(path);
                    let shown = dir
                        .as_deref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| "a directory on its path".into());
                    let detail = dir
                        .as_deref()
                        .and_then(|d| std::fs::metadata(d).ok())
                        .map(|m| {
                            format!(
                                " (owner {}, mode {:04o})",
                                crate::certs::user_name(m.uid()),
                                m.permissions().mode() & 0o777
                            )
                        })
                        .unwrap_or_default();
                    (
                    format!("{user} (the agent's user) cannot reach it: {shown}{detail} does not let {user} in"),
                    format!("`setfacl -m u:{user}:x {shown}` (or `chmod o+x {shown}`)"),
                )
                }
            }
        }
        _ => (format!("cannot be read: {err}"), format!("check {p}")),
    };
    Finding {
        severity: Severity::Error,
        file: path.display().to_string(),
        keys: keys.to_vec(),
        problem,
        fix,
    }
}

/// The first directory on `path` the current user cannot search.
fn blocking_dir(path: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    dirs.into_iter()
        .filter(|d| !d.as_os_str().is_empty())
        .find(|d| {
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            // SAFETY: c is a valid NUL-terminated path for the duration of the call.
            unsafe { libc::access(c.as_ptr(), libc::X_OK) != 0 }
        })
        .map(Path::to_path_buf)
}

/// Every finding for `tandem validate`: the files, then a handshake with each etcd endpoint
/// (an unreachable etcd is a note).
pub async fn validate(cfg: &Config) -> Vec<Finding> {
    let mut out = check_files(cfg);
    out.extend(check_etcd(&cfg.etcd3, HANDSHAKE_TIMEOUT).await);
    out.sort_by_key(|f| f.severity);
    out
}

/// The start-up check of `tandem agent`: logs each error and warning (notes are dropped: etcd
/// may be down while the agent starts) and refuses to start on errors.
pub async fn at_startup(cfg: &Config) -> anyhow::Result<()> {
    let findings = validate(cfg).await;
    let mut errors = 0;
    for f in &findings {
        match f.severity {
            Severity::Error => {
                errors += 1;
                tracing::error!("{f}");
            }
            Severity::Warning => tracing::warn!("{f}"),
            Severity::Note => {}
        }
    }
    if errors > 0 {
        anyhow::bail!(
            "not starting: {errors} TLS problem(s), each logged above with its fix (`tandem validate -c FILE` lists them again)"
        );
    }
    Ok(())
}

// --- etcd handshake --------------------------------------------------------------------------

mod handshake;
pub use handshake::check_etcd;

// --- expiry: /metrics and the daily warning --------------------------------------------------

/// A certificate file in use and its end.
#[derive(Clone, Debug, PartialEq)]
pub struct Expiry {
    pub file: PathBuf,
    pub key: String,
    pub role: &'static str,
    /// The earliest end among the certificates in the file (seconds since the epoch).
    pub not_after: i64,
}

impl Expiry {
    pub fn days_left(&self, now: i64) -> f64 {
        (self.not_after - now) as f64 / DAY as f64
    }
}

struct Cached {
    file: TlsFile,
    stamp: Option<(SystemTime, u64)>,
    not_after: Option<i64>,
}

static IN_USE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// Records the certificate files of `cfg` as the ones in use (call again after a reload):
/// `/metrics` and [`spawn_expiry_warnings`] read them from here.
pub fn register(cfg: &Config) {
    let files: Vec<Cached> = tls_files(cfg)
        .into_iter()
        .filter(|f| matches!(f.kind, Kind::Certificate | Kind::Ca))
        .map(|file| Cached {
            file,
            stamp: None,
            not_after: None,
        })
        .collect();
    *IN_USE.lock().unwrap_or_else(|e| e.into_inner()) = files;
}

/// The registered certificates with their ends, re-read when a file changed (renewal).
pub fn in_use() -> Vec<Expiry> {
    let mut files = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for c in files.iter_mut() {
        let stamp = std::fs::metadata(&c.file.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        if stamp != c.stamp {
            c.stamp = stamp;
            c.not_after = std::fs::read(&c.file.path)
                .ok()
                .and_then(|b| parse_pem_certs(&b).ok())
                .and_then(|certs| certs.iter().map(|x| x.not_after).min());
        }
        if let Some(not_after) = c.not_after {
            out.push(Expiry {
                file: c.file.path.clone(),
                key: c.file.key.clone(),
                role: c.file.role,
                not_after,
            });
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `tandem_certificate_expiry_days` lines (with HELP and TYPE) for `certs`; `labels` are the
/// node's (`scope="…",name="…"`, without braces). Empty without certificates.
pub fn expiry_metrics(certs: &[Expiry], labels: &str, now: i64) -> String {
    use fmt::Write as _;
    if certs.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "# HELP tandem_certificate_expiry_days Days until the certificate in the file ends (negative: expired); the earliest end when the file holds several.\n# TYPE tandem_certificate_expiry_days gauge\n",
    );
    for c in certs {
        let _ = writeln!(
            s,
            "tandem_certificate_expiry_days{{{labels},file=\"{}\",key=\"{}\",role=\"{}\"}} {:.2}",
            escape(&c.file.display().to_string()),
            escape(&c.key),
            c.role,
            c.days_left(now)
        );
    }
    s
}

/// The warning for a certificate ending within [`WARN_DAYS`] days (or already ended).
pub fn expiry_warning(c: &Expiry, now: i64) -> Option<String> {
    let left = c.not_after - now;
    if left >= WARN_DAYS * DAY {
        return None;
    }
    Some(if left <= 0 {
        format!(
            "certificate {} ({}) expired on {}; re-issue it with `tandem certs issue --dir <CA dir> ...` (docs/certs.md) and copy it in place",
            c.file.display(),
            c.key,
            date(c.not_after)
        )
    } else {
        format!(
            "certificate {} ({}) expires in {} days, on {}; re-issue it with `tandem certs issue --dir <CA dir> ...` (docs/certs.md) and copy it in place",
            c.file.display(),
            c.key,
            left / DAY,
            date(c.not_after)
        )
    })
}

/// A task that logs [`expiry_warning`]s for the registered certificates once a day, the
/// first a day from now ([`at_startup`] has just logged them). Call it inside the runtime
/// after [`register`].
pub fn spawn_expiry_warnings() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let period = Duration::from_secs(DAY as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            let now = unix_now();
            let mut seen = Vec::new();
            for c in in_use() {
                if seen.contains(&c.file) {
                    continue;
                }
                seen.push(c.file.clone());
                if let Some(w) = expiry_warning(&c, now) {
                    tracing::warn!("{w}");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
