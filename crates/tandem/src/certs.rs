//! `tandem certs`: the private CA and the TLS certificates of a cluster, in one command.
//!
//! The seed builds its TLS by hand (section 5: about forty `openssl`, `chown`, `chmod` and
//! `setfacl` commands). Here the same files come from [`rcgen`], written with the mode and
//! owner each consumer demands:
//!
//! ```text
//! DIR/ca.crt  DIR/ca.key                the CA (key 0600; it never leaves this directory)
//! DIR/<host>/ca.crt                     a copy, so that DIR/<host>/ is all a host needs
//! DIR/<host>/etcd.crt|key               etcd member: server + peer (serverAuth and clientAuth)
//! DIR/<host>/postgresql.crt|key         PostgreSQL server (ssl_cert_file / ssl_key_file)
//! DIR/<host>/restapi.crt|key            REST API server (restapi.certfile / keyfile)
//! DIR/<host>/client.crt|key             client: etcd3.cert/key, ctl.certfile/keyfile, routers
//! ```
//!
//! Keys are 0600, certificates 0644. Each file is written to a temporary name with its final
//! mode and owner and then renamed, so a key is never readable by others, not even briefly.
//! Keys are ECDSA P-256 (what `ring` can generate; etcd, PostgreSQL, Patroni and rustls all
//! accept it). The CA is kept across runs (re-issuing replaces host certificates only) unless
//! `--new-ca` is given. Private keys are never printed.

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The CA certificate and key, directly in the certificate directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const DEFAULT_CA_NAME: &str = "tandem-ca";
pub const DEFAULT_CA_DAYS: u32 = 3650;
pub const DEFAULT_DAYS: u32 = 825;
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
/// Certificates start one hour in the past, so a host whose clock is a little behind the
/// admin host's accepts them at once.
const BACKDATE: time::Duration = time::Duration::hours(1);
/// A CA closer than this to its end is reported (re-issued leaves are cut to its end).
const CA_WARN_DAYS: i64 = 30;

// --- command line ---------------------------------------------------------------------------

#[derive(clap::Subcommand, Debug)]
pub enum CertsAction {
    /// Create the private CA (DIR/ca.crt, DIR/ca.key) unless DIR already has one.
    Init(InitArgs),
    /// Issue certificates for hosts and roles (the CA is created first if DIR has none).
    ///
    /// Example, the seed's six hosts:
    /// `tandem certs issue --dir ./certs --owner postgres --etcd-owner etcd
    /// --db postgres-01=192.168.0.203 --db postgres-02=192.168.0.204 --db postgres-03=192.168.0.205
    /// --router haproxy-01=192.168.0.200 --router haproxy-02=192.168.0.201
    /// --router haproxy-03=192.168.0.202`
    Issue(Box<IssueArgs>),
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Directory of the CA and of the certificates (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Common name of the CA.
    #[arg(long = "ca-name", value_name = "NAME", default_value = DEFAULT_CA_NAME)]
    pub ca_name: String,
    /// Days the CA is valid.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CA_DAYS)]
    pub days: u32,
    /// Replace an existing CA (every certificate it signed must then be issued again).
    #[arg(long = "new-ca")]
    pub new_ca: bool,
}

#[derive(clap::Args, Debug, Default)]
pub struct IssueArgs {
    /// Directory of the CA and of the certificates (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Hosts from a YAML file (`hosts: [{name, addresses, roles, owner, etcd_owner}]`,
    /// see docs/certs.md); flags add to it and override its top-level settings.
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// A database host: roles etcd, postgresql, restapi and client. NAME=ADDR[,ADDR...]
    /// (addresses: IPs or DNS names).
    #[arg(long = "db", value_name = "NAME=ADDRS")]
    pub db: Vec<String>,
    /// A router host (`tandem proxy`, `tandem vip`): role client. NAME=ADDR[,ADDR...].
    #[arg(long = "router", value_name = "NAME=ADDRS")]
    pub router: Vec<String>,
    /// A host with the roles of --role. NAME=ADDR[,ADDR...] (NAME alone for a client).
    #[arg(long = "host", value_name = "NAME=ADDRS")]
    pub host: Vec<String>,
    /// Roles of the --host hosts: etcd, postgresql, restapi, client, or db (the first four)
    /// or router (client). Default: db.
    #[arg(long = "role", value_name = "ROLES")]
    pub role: Option<String>,
    /// Owner (USER or USER:GROUP) of the PostgreSQL, REST API and client files of every host
    /// that runs PostgreSQL: the user PostgreSQL and the agent run as (usually postgres).
    #[arg(long, value_name = "USER[:GROUP]")]
    pub owner: Option<String>,
    /// Owner (USER or USER:GROUP) of the etcd files: the user etcd runs as (usually etcd).
    #[arg(long = "etcd-owner", value_name = "USER[:GROUP]")]
    pub etcd_owner: Option<String>,
    /// Days the host certificates are valid (cut to the CA's end).
    #[arg(long, value_name = "N")]
    pub days: Option<u32>,
    /// Common name of the CA, when one is created.
    #[arg(long = "ca-name", value_name = "NAME")]
    pub ca_name: Option<String>,
    /// Days the CA is valid, when one is created.
    #[arg(long = "ca-days", value_name = "N")]
    pub ca_days: Option<u32>,
    /// Replace the CA (every host must then get the new certificates).
    #[arg(long = "new-ca")]
    pub new_ca: bool,
    /// Where the files will live on each host, for the printed configuration (default: the
    /// host's directory under DIR, as an absolute path).
    #[arg(long = "target-dir", value_name = "PATH")]
    pub target_dir: Option<PathBuf>,
}

/// Runs `tandem certs ...` and prints what it wrote and where each file goes.
pub fn run(action: &CertsAction) -> Result<()> {
    let report = match action {
        CertsAction::Init(a) => init(a)?,
        CertsAction::Issue(a) => issue(a)?,
    };
    print!("{}", report.render());
    Ok(())
}

// --- roles and hosts ------------------------------------------------------------------------

/// What a certificate is for; also the stem of its file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Etcd,
    Postgresql,
    Restapi,
    Client,
}

impl Role {
    pub const DB: [Role; 4] = [Role::Etcd, Role::Postgresql, Role::Restapi, Role::Client];
    pub const ROUTER: [Role; 1] = [Role::Client];

    pub fn name(self) -> &'static str {
        match self {
            Role::Etcd => "etcd",
            Role::Postgresql => "postgresql",
            Role::Restapi => "restapi",
            Role::Client => "client",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Role::Etcd => "etcd member (server and peer)",
            Role::Postgresql => "PostgreSQL server",
            Role::Restapi => "REST API server",
            Role::Client => "client (etcd3, ctl, proxy, vip)",
        }
    }

    /// Extended key usages: a server proves itself to clients, a client to servers, an etcd
    /// member is both (it dials its peers with the same certificate).
    pub fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Role::Etcd => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Postgresql | Role::Restapi => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }

    /// Servers also answer on loopback (etcdctl, psql and the CLI on the host itself).
    fn loopback_names(self) -> bool {
        self != Role::Client
    }
}

/// Parses `etcd,postgresql,...` (also `db`, `router`, `all`; `pg`, `postgres`, `rest`, `api`).
pub fn parse_roles(s: &str, origin: &str) -> Result<Vec<Role>> {
    let mut out = BTreeSet::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "etcd" => {
                out.insert(Role::Etcd);
            }
            "postgresql" | "postgres" | "pg" => {
                out.insert(Role::Postgresql);
            }
            "restapi" | "rest" | "api" => {
                out.insert(Role::Restapi);
            }
            "client" => {
                out.insert(Role::Client);
            }
            "db" | "all" => out.extend(Role::DB),
            "router" => out.extend(Role::ROUTER),
            _ => bail!(
                "{origin}: unknown role '{word}': use etcd, postgresql, restapi, client, \
                 or db (all four) or router (client)"
            ),
        }
    }
    if out.is_empty() {
        bail!("{origin}: no role given: use etcd, postgresql, restapi, client, db or router");
    }
    Ok(out.into_iter().collect())
}

/// One host of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
    pub roles: Vec<Role>,
    /// Owner of the non-etcd files (topology file, per host).
    pub owner: Option<String>,
    /// Owner of the etcd files (topology file, per host).
    pub etcd_owner: Option<String>,
}

impl Host {
    /// From `NAME=ADDR[,ADDR...]` (or `NAME` alone).
    pub fn parse(spec: &str, roles: &[Role], flag: &str) -> Result<Host> {
        let (name, addrs) = spec.split_once('=').unwrap_or((spec, ""));
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        Host::new(
            name.trim(),
            &addrs,
            roles.to_vec(),
            &format!("{flag} {spec}"),
        )
    }

    fn new(name: &str, addrs: &[String], roles: Vec<Role>, origin: &str) -> Result<Host> {
        if !valid_host_name(name) {
            bail!(
                "{origin}: '{name}' is not a usable host name (letters, digits, '.', '-', '_'; \
                 it names the host's directory): write NAME=ADDR, e.g. postgres-01=192.168.0.203"
            );
        }
        let mut ips = Vec::new();
        let mut dns = Vec::new();
        for a in addrs {
            if let Ok(ip) = a.parse::<IpAddr>() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            } else if valid_dns_name(a) {
                if !dns.contains(a) {
                    dns.push(a.clone());
                }
            } else {
                bail!(
                    "{origin}: '{a}' is neither an IP address nor a DNS name: list the host's \
                     addresses separated by commas, e.g. {name}=192.168.0.203,{name}.example.org"
                );
            }
        }
        let server = roles.iter().any(|r| *r != Role::Client);
        if server && ips.is_empty() && dns.is_empty() {
            bail!(
                "{origin}: host '{name}' has server roles but no address: give the addresses \
                 clients use to reach it, e.g. {name}=192.168.0.203"
            );
        }
        Ok(Host {
            name: name.to_string(),
            ips,
            dns,
            roles,
            owner: None,
            etcd_owner: None,
        })
    }

    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The names one role's certificate carries: the host's addresses, its name when that is
    /// a DNS name, and for servers 127.0.0.1 and localhost.
    pub fn subject_alt_names(&self, role: Role) -> (Vec<IpAddr>, Vec<String>) {
        let mut ips = self.ips.clone();
        let mut dns = Vec::new();
        if valid_dns_name(&self.name) {
            dns.push(self.name.clone());
        }
        for d in &self.dns {
            if !dns.contains(d) {
                dns.push(d.clone());
            }
        }
        if role.loopback_names() {
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            if !ips.contains(&lo) {
                ips.push(lo);
            }
            if !dns.iter().any(|d| d == "localhost") {
                dns.push("localhost".into());
            }
        }
        (ips, dns)
    }
}

fn valid_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// RFC 1123 names; a last label of digits only is a mistyped IP address (RFC 3696 §2).
fn valid_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

// --- topology file ----------------------------------------------------------------------------

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    ca_name: Option<String>,
    ca_days: Option<u32>,
    days: Option<u32>,
    owner: Option<String>,
    etcd_owner: Option<String>,
    target_dir: Option<PathBuf>,
    #[serde(default)]
    hosts: Vec<TopologyHost>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TopologyHost {
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    roles: OneOrMany,
    owner: Option<String>,
    etcd_owner: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Everything `issue` needs, from flags and the topology file together.
#[derive(Debug, Default)]
pub struct Topology {
    pub hosts: Vec<Host>,
    pub owner: Option<(String, String)>,
    pub etcd_owner: Option<(String, String)>,
    pub days: Option<u32>,
    pub ca_name: Option<String>,
    pub ca_days: Option<u32>,
    pub target_dir: Option<PathBuf>,
}

/// Parses a topology file's text; `origin` names it in errors.
pub fn parse_topology(text: &str, origin: &str) -> Result<Topology> {
    let f: TopologyFile = serde_yaml::from_str(text).map_err(|e| {
        anyhow!(
            "topology file {origin}: {e} (expected `hosts:` with entries \
             `{{name: postgres-01, addresses: [192.168.0.203], roles: db}}`; see docs/certs.md)"
        )
    })?;
    let mut hosts = Vec::new();
    for h in f.hosts {
        let at = format!("topology file {origin}, host '{}'", h.name);
        let roles = match h.roles {
            OneOrMany::One(s) => parse_roles(&s, &at)?,
            OneOrMany::Many(v) => parse_roles(&v.join(","), &at)?,
        };
        let mut host = Host::new(&h.name, &h.addresses, roles, &at)?;
        host.owner = h.owner;
        host.etcd_owner = h.etcd_owner;
        hosts.push(host);
    }
    let src = |key: &str| format!("topology file {origin}: {key}");
    Ok(Topology {
        hosts,
        owner: f.owner.map(|o| (o, src("owner"))),
        etcd_owner: f.etcd_owner.map(|o| (o, src("etcd_owner"))),
        days: f.days,
        ca_name: f.ca_name,
        ca_days: f.ca_days,
        target_dir: f.target_dir,
    })
}

impl IssueArgs {
    /// The topology file (if any) with the flags' hosts added and their settings on top.
    pub fn topology(&self) -> Result<Topology> {
        let mut t = match &self.topology {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("--topology: cannot read {}: check the path", p.display())
                })?;
                parse_topology(&text, &p.display().to_string())?
            }
            None => Topology::default(),
        };
        for s in &self.db {
            t.hosts.push(Host::parse(s, &Role::DB, "--db")?);
        }
        for s in &self.router {
            t.hosts.push(Host::parse(s, &Role::ROUTER, "--router")?);
        }
        let roles = match &self.role {
            Some(r) => parse_roles(r, "--role")?,
            None => Role::DB.to_vec(),
        };
        if self.role.is_some() && self.host.is_empty() {
            bail!("--role applies to --host hosts, and none was given: add --host NAME=ADDR, or drop --role (--db and --router carry their roles)");
        }
        for s in &self.host {
            t.hosts.push(Host::parse(s, &roles, "--host")?);
        }
        let mut seen = BTreeSet::new();
        for h in &t.hosts {
            if !seen.insert(h.name.as_str()) {
                bail!("host '{}' is given twice: give each host once, with all its addresses (NAME=ADDR1,ADDR2)", h.name);
            }
        }
        if t.hosts.is_empty() {
            bail!("no hosts to issue certificates for: pass --db NAME=IP, --router NAME=IP, --host NAME=IP --role ROLES, or --topology FILE");
        }
        if let Some(o) = &self.owner {
            t.owner = Some((o.clone(), "--owner".into()));
        }
        if let Some(o) = &self.etcd_owner {
            t.etcd_owner = Some((o.clone(), "--etcd-owner".into()));
        }
        t.days = self.days.or(t.days);
        t.ca_name = self.ca_name.clone().or(t.ca_name);
        t.ca_days = self.ca_days.or(t.ca_days);
        t.target_dir = self.target_dir.clone().or(t.target_dir);
        Ok(t)
    }
}

// --- owners ---------------------------------------------------------------------------------

/// A resolved file owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub spec: String,
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `USER` or `USER:GROUP` on this host; `origin` (the flag) names it in errors.
pub fn resolve_owner(spec: &str, origin: &str) -> Result<Owner> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let Some((uid, primary_gid)) = lookup_user(user)? else {
        bail!(
            "{origin} {spec}: there is no user '{user}' on this host: create it first (the \
             PostgreSQL and etcd packages create `postgres` and `etcd`), run `tandem certs` \
             where it exists, or leave {origin} out and chown the keys after copying them"
        );
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => lookup_group(g)?.ok_or_else(|| {
            anyhow!("{origin} {spec}: there is no group '{g}' on this host: name an existing group, or give the user alone")
        })?,
    };
    Ok(Owner {
        spec: spec.to_string(),
        uid,
        gid,
    })
}

fn lookup_user(name: &str) -> Result<Option<(u32, u32)>> {
    let cname = CString::new(name).map_err(|_| anyhow!("user name '{name}' contains a NUL"))?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: a zeroed passwd is a valid out-parameter; buf outlives the call and pw is read
    // only when getpwnam_r reports success.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        bail!(
            "cannot look up user '{name}': {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok((!result.is_null()).then_some((pw.pw_uid, pw.pw_gid)))
}

fn lookup_group(name: &str) -> Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| anyhow!("group name '{name}' contains a NUL"))?;
    let mut buf = vec![0 as libc::c_char; 65536];
    // SAFETY: as in lookup_user.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        bail!(
            "cannot look up group '{name}': {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok((!result.is_null()).then_some(gr.gr_gid))
}

/// The name of user `uid`, or the number.
pub(crate) fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: as in lookup_user.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() {
        // SAFETY: pw_name points into buf, NUL-terminated, on success.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    uid.to_string()
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// --- the CA ---------------------------------------------------------------------------------

/// The CA as loaded or created: its certificate (PEM) and key.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
    pub common_name: String,
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// A new self-signed CA valid `days` days (path length 0: it signs host certificates only).
    pub fn create(name: &str, days: u32) -> Result<Ca> {
        if days == 0 {
            bail!("the CA's validity must be at least 1 day (--days / --ca-days)");
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(days.into());
        let key = KeyPair::generate().context("cannot generate the CA key")?;
        let cert = params
            .self_signed(&key)
            .context("cannot sign the CA certificate")?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key,
            common_name: name.to_string(),
            not_after: params.not_after,
        })
    }

    /// Reads DIR/ca.crt and DIR/ca.key and checks that they belong together.
    pub fn load(dir: &Path) -> Result<Ca> {
        let (cp, kp) = (dir.join(CA_CERT), dir.join(CA_KEY));
        let cert_pem = std::fs::read_to_string(&cp)
            .with_context(|| format!("cannot read the CA certificate {}", cp.display()))?;
        let key_pem = std::fs::read_to_string(&kp)
            .with_context(|| format!("cannot read the CA key {}", kp.display()))?;
        let info = CertInfo::parse(cert_pem.as_bytes()).with_context(|| {
            format!(
                "{} is not a PEM certificate: restore it, or pass --new-ca",
                cp.display()
            )
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| {
            anyhow!(
                "{} is not a PEM private key tandem can use (ECDSA, Ed25519 or RSA in PKCS#8): \
                 restore it, or pass --new-ca",
                kp.display()
            )
        })?;
        if info.public_key != key.public_key_raw() {
            bail!(
                "{} does not belong to {} (their public keys differ): restore the matching pair, \
                 or pass --new-ca to start a new CA",
                kp.display(),
                cp.display()
            );
        }
        if !info.is_ca {
            bail!(
                "{} is not a CA certificate (no basicConstraints CA:TRUE): pass --new-ca",
                cp.display()
            );
        }
        Ok(Ca {
            cert_pem,
            key,
            common_name: info.common_name,
            not_after: info.not_after,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(|e| anyhow!("cannot use the CA certificate to sign: {e}"))
    }

    /// A certificate and key for `role` on `host`, valid `days` days but never past the CA.
    pub fn issue(&self, host: &Host, role: Role, days: u32) -> Result<(String, String)> {
        if days == 0 {
            bail!("host certificates must be valid at least 1 day (--days)");
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.name.as_str());
        dn.push(DnType::OrganizationalUnitName, role.name());
        params.distinguished_name = dn;
        let (ips, dns) = host.subject_alt_names(role);
        let mut sans: Vec<SanType> = ips.into_iter().map(SanType::IpAddress).collect();
        for d in dns {
            let ia5 = d
                .as_str()
                .try_into()
                .map_err(|_| anyhow!("'{d}' cannot be written as a DNS name"))?;
            sans.push(SanType::DnsName(ia5));
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = role.extended_key_usages();
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = (now + time::Duration::days(days.into())).min(self.not_after);
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params.signed_by(&key, &self.issuer()?).with_context(|| {
            format!(
                "cannot sign the {} certificate of {}",
                role.name(),
                host.name
            )
        })?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// What tandem reads back from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub common_name: String,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    pub public_key: Vec<u8>,
}

impl CertInfo {
    pub fn parse(pem: &[u8]) -> Result<CertInfo> {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem).map_err(|e| anyhow!("not PEM: {e}"))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string();
        let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
            .map_err(|e| anyhow!("certificate end date out of range: {e}"))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        Ok(CertInfo {
            common_name,
            not_after,
            is_ca,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }
}

/// What happened to the CA in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaOutcome {
    Created,
    Kept,
    Replaced,
}

/// Loads the CA of `dir`, or creates it when there is none (or when `new_ca`).
fn ensure_ca(dir: &Path, name: &str, days: u32, new_ca: bool, report: &mut Report) -> Result<Ca> {
    let (cp, kp) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let outcome = match (cp.exists(), kp.exists(), new_ca) {
        (true, true, false) => CaOutcome::Kept,
        (false, false, _) => CaOutcome::Created,
        (_, _, true) => CaOutcome::Replaced,
        (true, false, false) => bail!(
            "{} exists but {} does not: restore the CA key (certificates cannot be signed \
             without it), or pass --new-ca to start a new CA and issue every certificate again",
            cp.display(),
            kp.display()
        ),
        (false, true, false) => bail!(
            "{} exists but {} does not: restore the CA certificate, or pass --new-ca to start \
             a new CA and issue every certificate again",
            kp.display(),
            cp.display()
        ),
    };
    let ca = if outcome == CaOutcome::Kept {
        let ca = Ca::load(dir)?;
        let now = OffsetDateTime::now_utc();
        if ca.not_after <= now {
            bail!(
                "the CA in {} expired on {}: pass --new-ca, then install the new certificates on \
                 every host",
                cp.display(),
                ca.not_after.date()
            );
        }
        if ca.not_after - now < time::Duration::days(CA_WARN_DAYS) {
            report.notes.push(format!(
                "the CA expires on {}: host certificates end then too; plan `--new-ca`",
                ca.not_after.date()
            ));
        }
        let mode = std::fs::metadata(&kp)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            report.notes.push(format!(
                "{} has mode {mode:04o}: the CA key should be readable by its owner alone \
                 (chmod 600 {})",
                kp.display(),
                kp.display()
            ));
        }
        ca
    } else {
        let ca = Ca::create(name, days)?;
        write_file(&kp, ca.key.serialize_pem().as_bytes(), KEY_MODE, None)?;
        report.wrote(&kp, KEY_MODE, None, "CA key (keep it here; never copy it)");
        write_file(&cp, ca.cert_pem.as_bytes(), CERT_MODE, None)?;
        report.wrote(&cp, CERT_MODE, None, "CA certificate");
        ca
    };
    report.ca = Some((outcome, cp, ca.common_name.clone(), ca.not_after));
    Ok(ca)
}

// --- files ----------------------------------------------------------------------------------

/// Writes `data` to `path` with `mode` and `owner`, through a temporary file renamed into
/// place: the file never exists with a wider mode or another owner.
pub fn write_file(path: &Path, data: &[u8], mode: u32, owner: Option<&Owner>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        // The umask may have narrowed the mode at creation: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(o) = owner {
            std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid)).map_err(|e| {
                anyhow!(
                    "cannot give {} to {}: {e} (run tandem certs as root, or leave the owner \
                     flag out and chown the files after copying them)",
                    path.display(),
                    o.spec
                )
            })?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} into place", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create directory {}: check the path and your rights",
            dir.display()
        )
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    Ok(())
}

// --- the verbs ------------------------------------------------------------------------------

/// `tandem certs init`.
pub fn init(a: &InitArgs) -> Result<Report> {
    ensure_dir(&a.dir)?;
    let mut report = Report::default();
    let ca = ensure_ca(&a.dir, &a.ca_name, a.days, a.new_ca, &mut report)?;
    if report
        .ca
        .as_ref()
        .is_some_and(|c| c.0 == CaOutcome::Replaced)
    {
        report.notes.push(
            "the CA is new: certificates signed by the old one are no longer trusted; run \
             `tandem certs issue` for every host again"
                .into(),
        );
    }
    if report.ca.as_ref().is_some_and(|c| c.0 == CaOutcome::Kept) && ca.common_name != a.ca_name {
        report.notes.push(format!(
            "the existing CA is named '{}'; --ca-name {} applies to a new CA only (--new-ca)",
            ca.common_name, a.ca_name
        ));
    }
    Ok(report)
}

/// `tandem certs issue`.
pub fn issue(a: &IssueArgs) -> Result<Report> {
    let topo = a.topology()?;
    // Owners first: a missing user is an error before anything is written.
    let owner = topo
        .owner
        .as_ref()
        .map(|(s, o)| resolve_owner(s, o))
        .transpose()?;
    let etcd_owner = topo
        .etcd_owner
        .as_ref()
        .map(|(s, o)| resolve_owner(s, o))
        .transpose()?;
    let mut per_host = Vec::new();
    for h in &topo.hosts {
        let at = format!("host '{}': owner", h.name);
        let o = h
            .owner
            .as_ref()
            .map(|s| resolve_owner(s, &at))
            .transpose()?;
        let at = format!("host '{}': etcd_owner", h.name);
        let e = h
            .etcd_owner
            .as_ref()
            .map(|s| resolve_owner(s, &at))
            .transpose()?;
        per_host.push((o, e));
    }
    let days = topo.days.unwrap_or(DEFAULT_DAYS);
    if days == 0 {
        bail!("--days 0: host certificates must be valid at least 1 day");
    }

    ensure_dir(&a.dir)?;
    let dir = std::fs::canonicalize(&a.dir)
        .with_context(|| format!("cannot resolve {}", a.dir.display()))?;
    let mut report = Report::default();
    let ca = ensure_ca(
        &dir,
        topo.ca_name.as_deref().unwrap_or(DEFAULT_CA_NAME),
        topo.ca_days.unwrap_or(DEFAULT_CA_DAYS),
        a.new_ca,
        &mut report,
    )?;
    if ca.not_after < OffsetDateTime::now_utc() + time::Duration::days(days.into()) {
        report.notes.push(format!(
            "host certificates end with the CA on {} (sooner than --days {days})",
            ca.not_after.date()
        ));
    }

    for (h, (host_owner, host_etcd_owner)) in topo.hosts.iter().zip(&per_host) {
        let hdir = dir.join(&h.name);
        ensure_dir(&hdir)?;
        let ca_copy = hdir.join(CA_CERT);
        write_file(&ca_copy, ca.cert_pem.as_bytes(), CERT_MODE, None)?;
        report.wrote(&ca_copy, CERT_MODE, None, "CA certificate (copy)");
        // --owner is for the hosts that run PostgreSQL (and the agent beside it); routers
        // run tandem proxy / vip as root, so their files stay with the invoking user.
        let runs_pg = h.has(Role::Postgresql);
        for &role in &h.roles {
            let o = match role {
                Role::Etcd => host_etcd_owner.as_ref().or(etcd_owner.as_ref()),
                _ => host_owner.as_ref().or(owner.as_ref().filter(|_| runs_pg)),
            };
            let (cert, key) = ca.issue(h, role, days)?;
            let kp = hdir.join(format!("{}.key", role.name()));
            let cp = hdir.join(format!("{}.crt", role.name()));
            write_file(&kp, key.as_bytes(), KEY_MODE, o)?;
            report.wrote(&kp, KEY_MODE, o, &format!("{} key", role.describe()));
            write_file(&cp, cert.as_bytes(), CERT_MODE, o)?;
            report.wrote(
                &cp,
                CERT_MODE,
                o,
                &format!("{} certificate", role.describe()),
            );
            if role == Role::Postgresql && o.is_none() && is_root() {
                report.notes.push(format!(
                    "{} is root's with mode 0600: PostgreSQL (running as postgres) cannot read \
                     it: pass --owner postgres, or chown it to PostgreSQL's user on the host",
                    kp.display()
                ));
            }
        }
        let base = match &topo.target_dir {
            Some(t) => t.clone(),
            None => hdir.clone(),
        };
        report.hosts.push((h.clone(), hdir, base));
    }
    if report
        .ca
        .as_ref()
        .is_some_and(|c| c.0 == CaOutcome::Replaced)
    {
        let issued: BTreeSet<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
        let stale: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(CA_CERT).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !issued.contains(n.as_str()))
            .collect();
        if !stale.is_empty() {
            report.notes.push(format!(
                "the CA is new: the certificates of {} were signed by the old one; issue them \
                 again",
                stale.join(", ")
            ));
        }
    }
    Ok(report)
}

// --- the report -----------------------------------------------------------------------------

/// What a run did, and what to put in each host's configuration. Holds no key material.
#[derive(Default)]
pub struct Report {
    pub ca: Option<(CaOutcome, PathBuf, String, OffsetDateTime)>,
    pub written: Vec<(PathBuf, u32, String, String)>,
    /// (host, its directory here, where its files will be on the host)
    pub hosts: Vec<(Host, PathBuf, PathBuf)>,
    pub notes: Vec<String>,
}

impl Report {
    fn wrote(&mut self, path: &Path, mode: u32, owner: Option<&Owner>, what: &str) {
        let who = match owner {
            Some(o) => o.spec.clone(),
            None => std::fs::metadata(path)
                .map(|m| user_name(m.uid()))
                .unwrap_or_default(),
        };
        self.written
            .push((path.to_path_buf(), mode, who, what.to_string()));
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some((outcome, path, cn, end)) = &self.ca {
            let verb = match outcome {
                CaOutcome::Created => "created",
                CaOutcome::Kept => "kept",
                CaOutcome::Replaced => "replaced (every host needs its new certificates)",
            };
            let _ = writeln!(
                s,
                "CA {verb}: {} (CN={cn}, valid until {})",
                path.display(),
                end.date()
            );
        }
        if !self.written.is_empty() {
            let _ = writeln!(s, "\nWrote:");
            let width = self.written.iter().map(|w| w.2.len()).max().unwrap_or(0);
            for (path, mode, who, what) in &self.written {
                let _ = writeln!(
                    s,
                    "  {mode:04o} {who:<width$}  {}  - {what}",
                    path.display()
                );
            }
        }
        for (host, here, base) in &self.hosts {
            let _ = writeln!(s, "\n== {} ==", host.name);
            if here != base {
                let _ = writeln!(
                    s,
                    "Copy {}/ to {}:{}/ keeping modes and owners (as root: \
                     rsync -a {}/ {}:{}/).",
                    here.display(),
                    host.name,
                    base.display(),
                    here.display(),
                    host.name,
                    base.display()
                );
            }
            s.push_str(&host_snippet(host, base));
        }
        for n in &self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        s
    }
}

/// The configuration lines of one host: the tandem/Patroni YAML keys and the etcd flags.
pub fn host_snippet(host: &Host, base: &Path) -> String {
    let p = |f: &str| base.join(f).display().to_string();
    let ca = p(CA_CERT);
    let mut s = String::new();
    // The etcd client identity: the client certificate, else the member's own (as the seed).
    let client = if host.has(Role::Client) {
        Some("client")
    } else if host.has(Role::Etcd) {
        Some("etcd")
    } else {
        None
    };
    let _ = writeln!(
        s,
        "# {} configuration (tandem agent / proxy / vip, Patroni):",
        host.name
    );
    if let Some(c) = client {
        let _ = writeln!(
            s,
            "etcd3:\n  protocol: https\n  cacert: {ca}\n  cert: {}\n  key: {}",
            p(&format!("{c}.crt")),
            p(&format!("{c}.key"))
        );
    }
    if host.has(Role::Restapi) {
        let _ = writeln!(
            s,
            "restapi:\n  certfile: {}\n  keyfile: {}\n  cafile: {ca}\n  verify_client: optional",
            p("restapi.crt"),
            p("restapi.key")
        );
    }
    if host.has(Role::Client) {
        let _ = writeln!(
            s,
            "ctl:\n  cacert: {ca}\n  certfile: {}\n  keyfile: {}",
            p("client.crt"),
            p("client.key")
        );
    }
    if host.has(Role::Postgresql) {
        let _ = writeln!(
            s,
            "postgresql:\n  parameters:\n    ssl: 'on'\n    ssl_cert_file: {}\n    \
             ssl_key_file: {}\n    ssl_ca_file: {ca}",
            p("postgresql.crt"),
            p("postgresql.key")
        );
    }
    if host.has(Role::Etcd) {
        let (cert, key) = (p("etcd.crt"), p("etcd.key"));
        let _ = writeln!(
            s,
            "# etcd flags (or the ETCD_* variables of the same names), with https:// URLs:\n\
             #   --cert-file={cert} --key-file={key}\n\
             #   --trusted-ca-file={ca} --client-cert-auth\n\
             #   --peer-cert-file={cert} --peer-key-file={key}\n\
             #   --peer-trusted-ca-file={ca} --peer-client-cert-auth"
        );
    }
    s
}

#[cfg(test)]
mod tests;
