//! The local configuration file: Patroni's YAML format (spec §7.1, §7.3, §7.4).
//!
//! Loading goes: YAML text → a JSON tree (one file, or every `*.yml`/`*.yaml` of a directory merged
//! in sorted order) → `PATRONI_*` environment variables written onto that tree → typed extraction.
//! Because the environment is overlaid on the tree, one validation path serves both sources, and
//! every error names the key path it is about.
//!
//! A key tandem accepts does what its documentation says, or it is refused. Unknown keys (typos,
//! settings of a newer Patroni) get a warning with a "did you mean". Known keys that tandem does
//! not carry out are *refusals*: the agent does not start (a reload is refused) with one, each
//! message naming the key and the fix, because a setting that is silently ignored is worse than
//! none (a `pre_promote` fencing script that never runs, a `watchdog.mode: required` with no
//! watchdog). A refusal concerns either the agent (`postgresql`, `bootstrap`, `watchdog`, ...),
//! the command-line tools (`ctl`), or both (`etcd3`, `citus`); loading for the other purpose only
//! warns about it. Settings whose job tandem does another way (Patroni's Python thread pool sizes)
//! are accepted with a warning that they have no effect.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use tandem_core::dynamic::{parse_bool, DynamicConfig};

/// A node may not take the name Patroni uses as a placeholder in `synchronous_standby_names`.
pub const STRICT_SYNC_PLACEHOLDER: &str = "__patroni_strict_sync_replica_placeholder__";

/// A password or similar. `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// HTTP basic-auth credentials (`restapi.authentication`, `ctl.authentication`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyClient {
    #[default]
    None,
    Optional,
    Required,
}

/// What a configuration is loaded for: which refusals stop the load (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// `tandem agent`, `tandem validate`, `tandem proxy`: the node's own settings must hold.
    Agent,
    /// The patronictl-style verbs: only what they use must hold.
    Ctl,
}

/// Whom a refused setting concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Agent,
    Ctl,
    Both,
}

impl Who {
    fn stops(self, purpose: Purpose) -> bool {
        matches!(
            (self, purpose),
            (Who::Both, _) | (Who::Agent, Purpose::Agent) | (Who::Ctl, Purpose::Ctl)
        )
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub scope: String,
    /// As given, e.g. `/service/`; default `/service`.
    pub namespace: String,
    pub name: String,
    pub etcd3: EtcdConfig,
    pub restapi: RestApiConfig,
    pub bootstrap: BootstrapConfig,
    pub postgresql: PostgresqlConfig,
    pub tags: Tags,
    pub ctl: CtlConfig,
    /// Unknown keys, adjusted values, unsupported settings: one sentence each, naming the key path.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EtcdConfig {
    /// `host:port` entries.
    pub hosts: Vec<String>,
    /// `http` or `https`.
    pub protocol: String,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl EtcdConfig {
    /// `http(s)://host:port` for each host.
    pub fn endpoints(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| format!("{}://{}", self.protocol, h))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RestApiConfig {
    pub listen: String,
    pub connect_address: String,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub keyfile_password: Option<Secret>,
    pub cafile: Option<PathBuf>,
    pub verify_client: VerifyClient,
    pub authentication: Option<Credentials>,
    pub allowlist: Vec<String>,
    pub allowlist_include_members: bool,
    /// `http_extra_headers`, with `https_extra_headers` merged over them when TLS is on.
    pub http_extra_headers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// Initial dynamic configuration (an object; `{}` when absent).
    pub dcs: Value,
    /// Extra initdb arguments, e.g. `["--encoding=UTF8", "--data-checksums"]`.
    pub initdb_args: Vec<String>,
    pub pg_hba: Vec<String>,
    /// `post_bootstrap` (or its alias `post_init`).
    pub post_bootstrap: Option<String>,
    /// Whether the file had a `bootstrap` section at all.
    pub present: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PgCredentials {
    pub username: String,
    pub password: Option<Secret>,
    pub sslmode: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslpassword: Option<Secret>,
    /// Other libpq options given: sslcrl, sslcrldir, sslnegotiation, gssencmode, channel_binding.
    pub extra: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PgAuthentication {
    pub superuser: PgCredentials,
    pub replication: PgCredentials,
    pub rewind: Option<PgCredentials>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PostgresqlConfig {
    /// As given: `host:port`, or `a,b:port`.
    pub listen: String,
    pub connect_address: String,
    pub data_dir: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub pgpass: PathBuf,
    pub database: String,
    pub authentication: PgAuthentication,
    pub parameters: Map<String, Value>,
    pub pg_hba: Vec<String>,
    pub use_pg_rewind: Option<bool>,
    pub pg_ctl_timeout: u64,
    pub remove_data_directory_on_rewind_failure: bool,
    pub remove_data_directory_on_diverged_timelines: bool,
    /// Extra pg_basebackup arguments, e.g. `["--max-rate=100M", "--checkpoint=fast"]`.
    pub basebackup_args: Vec<String>,
    /// `on_start`, `on_stop`, `on_restart`, `on_reload`, `on_role_change` → command.
    pub callbacks: BTreeMap<String, String>,
}

impl PostgresqlConfig {
    /// The port of `listen` (validated at load time).
    pub fn listen_port(&self) -> u16 {
        split_listen(&self.listen).map(|(_, p)| p).unwrap_or(5432)
    }

    /// The first listen address, with a wildcard (`0.0.0.0`, `*`, `::`, empty) replaced by
    /// `127.0.0.1`: the address to use for local connections.
    pub fn local_host(&self) -> String {
        let first = split_listen(&self.listen)
            .and_then(|(hosts, _)| hosts.into_iter().next())
            .unwrap_or_default();
        if is_wildcard(&first) {
            "127.0.0.1".to_string()
        } else {
            first
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tags {
    pub nofailover: bool,
    pub failover_priority: Option<i64>,
    pub noloadbalance: bool,
    pub clonefrom: bool,
    pub nosync: bool,
    pub nostream: bool,
    pub sync_priority: Option<i64>,
    pub replicatefrom: Option<String>,
    /// Custom tags, published as given.
    pub extra: Map<String, Value>,
}

impl Tags {
    /// The tags as published in the member key: boolean tags only when true, priorities when set,
    /// custom tags as given. (Conflicts between `nofailover` and `failover_priority` were resolved
    /// at load time, so the published priority agrees with `nofailover`.)
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let flags = [
            ("nofailover", self.nofailover),
            ("noloadbalance", self.noloadbalance),
            ("clonefrom", self.clonefrom),
            ("nosync", self.nosync),
            ("nostream", self.nostream),
        ];
        for (k, v) in flags {
            if v {
                m.insert(k.to_string(), Value::Bool(true));
            }
        }
        if let Some(p) = self.failover_priority {
            m.insert("failover_priority".to_string(), Value::from(p));
        }
        if let Some(p) = self.sync_priority {
            m.insert("sync_priority".to_string(), Value::from(p));
        }
        if let Some(r) = &self.replicatefrom {
            m.insert("replicatefrom".to_string(), Value::String(r.clone()));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    /// 0 when `nofailover`, else `failover_priority`, default 1.
    pub fn effective_failover_priority(&self) -> i64 {
        if self.nofailover {
            0
        } else {
            self.failover_priority.unwrap_or(1)
        }
    }

    pub fn can_failover(&self) -> bool {
        self.effective_failover_priority() > 0
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CtlConfig {
    pub insecure: bool,
    pub cacert: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub authentication: Option<Credentials>,
}

impl Config {
    /// Load a YAML file, or a directory of `*.yml`/`*.yaml` files merged in sorted order (later
    /// files win), then apply `PATRONI_*` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config> {
        let env = process_env();
        let origin = path.display().to_string();
        let tree = if path.is_dir() {
            read_dir_tree(path)?
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read configuration file {origin}"))?;
            parse_yaml(&text, &origin)?
        };
        build(tree, &env, &origin, true, Purpose::Agent)
    }

    /// For the CLI: also accepts a patronictl-style file (`scope`, `namespace`, `etcd3`, `ctl`,
    /// perhaps `restapi.authentication`) without the agent-only sections, which get placeholders.
    pub fn load_for_ctl(path: &Path) -> Result<Config> {
        Config::load_for_ctl_with(Some(path), None)
    }

    /// The CLI's configuration from a file (or none), with patronictl's `--dcs-url`
    /// (`[scheme://][host][:port][/namespace]`, spec §6.1) replacing the file's etcd hosts and
    /// namespace. With neither a file nor a URL there is nothing to talk to: an error says so.
    pub fn load_for_ctl_with(path: Option<&Path>, dcs_url: Option<&str>) -> Result<Config> {
        let env = process_env();
        let origin = path.map_or("--dcs-url".to_string(), |p| p.display().to_string());
        let mut tree = match path {
            Some(path) if path.is_dir() => read_dir_tree(path)?,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read configuration file {origin}"))?;
                parse_yaml(&text, &origin)?
            }
            // The scope then comes from the command line (`list CLUSTER`); a placeholder keeps
            // the checks of `build` quiet and is cleared below.
            None if dcs_url.is_some() => serde_json::json!({"scope": "unnamed"}),
            None => bail!("no configuration file: pass -c /path/to/node.yml (a node's configuration works), -d etcd3://host:2379, or set PATRONICTL_CONFIG_FILE"),
        };
        if let (Some(url), Value::Object(top)) = (dcs_url, &mut tree) {
            let (hosts, namespace) = parse_dcs_url(url)?;
            let etcd = top
                .entry("etcd3")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(e) = etcd {
                e.remove("host");
                e.remove("url");
                e.remove("hosts");
                e.insert("hosts".into(), Value::from(hosts));
            }
            top.remove("etcd");
            if let Some(ns) = namespace {
                top.insert("namespace".into(), Value::from(ns));
            }
        }
        if let Value::Object(top) = &mut tree {
            top.entry("name")
                .or_insert_with(|| Value::from("tandem-ctl"));
            let restapi = top
                .entry("restapi")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(r) = restapi {
                r.entry("listen")
                    .or_insert_with(|| Value::from("127.0.0.1:8008"));
            }
            if !top.contains_key("postgresql") {
                top.insert(
                    "postgresql".into(),
                    serde_json::json!({
                        "listen": "127.0.0.1:5432",
                        "data_dir": "/nonexistent",
                        "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "replicator"}}
                    }),
                );
            }
        }
        let mut cfg = build(tree, &env, &origin, true, Purpose::Ctl)?;
        if path.is_none() {
            cfg.scope.clear();
        }
        Ok(cfg)
    }

    /// `Some(path)` → [`Config::load`]; `None` → [`Config::from_env`] with the process environment.
    pub fn load_or_env(path: Option<&Path>) -> Result<Config> {
        match path {
            Some(p) => Config::load(p),
            None => Config::from_env(&process_env()),
        }
    }

    /// No configuration file: the whole YAML from `PATRONI_CONFIGURATION` (other variables are then
    /// ignored, as in Patroni), or else a configuration built from `PATRONI_*` variables alone.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Config> {
        match env.get("PATRONI_CONFIGURATION") {
            Some(text) => {
                let tree = parse_yaml(text, "PATRONI_CONFIGURATION")?;
                build(tree, env, "PATRONI_CONFIGURATION", false, Purpose::Agent)
            }
            None => build(
                Value::Object(Map::new()),
                env,
                "environment",
                true,
                Purpose::Agent,
            ),
        }
    }

    /// Parse YAML text (`origin` names it in messages), then apply `PATRONI_*` overrides from `env`.
    pub fn from_yaml_str(
        yaml: &str,
        env: &BTreeMap<String, String>,
        origin: &str,
    ) -> Result<Config> {
        let tree = parse_yaml(yaml, origin)?;
        build(tree, env, origin, true, Purpose::Agent)
    }

    /// The settings of `new` that a reload cannot apply to a running agent, one sentence each:
    /// what identifies the node (`name`, `scope`, `namespace`, `postgresql.data_dir`, the
    /// PostgreSQL address others use) or what the agent bound at start (`etcd3`, `restapi.listen`).
    /// A reload that changes any of them is refused; the running configuration stays.
    pub fn restart_required_changes(&self, new: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |key: &str, old: String, new: String| {
            if old != new {
                out.push(format!("{key} changed ({old} -> {new})"));
            }
        };
        check("name", self.name.clone(), new.name.clone());
        check("scope", self.scope.clone(), new.scope.clone());
        check("namespace", self.base_path(), new.base_path());
        check(
            "postgresql.data_dir",
            self.postgresql.data_dir.display().to_string(),
            new.postgresql.data_dir.display().to_string(),
        );
        check(
            "postgresql.listen",
            self.postgresql.listen.clone(),
            new.postgresql.listen.clone(),
        );
        check(
            "postgresql.connect_address",
            self.postgresql.connect_address.clone(),
            new.postgresql.connect_address.clone(),
        );
        check(
            "restapi.listen",
            self.restapi.listen.clone(),
            new.restapi.listen.clone(),
        );
        let etcd = |c: &Config| {
            let e = &c.etcd3;
            let password = e.password.as_ref().map(|p| p.expose().to_string());
            (
                e.protocol.clone(),
                e.hosts.clone(),
                e.username.clone(),
                password,
            )
        };
        // (No value is shown: the etcd password is among them.) The TLS files (etcd3.cacert,
        // cert, key) may change: a reload gives the etcd client the new ones (Dcs::reload_tls).
        if etcd(self) != etcd(new) {
            out.push(
                "etcd3 protocol, hosts or credentials changed (the etcd client is made at start)"
                    .into(),
            );
        }
        out
    }

    /// `/<namespace>/<scope>/` with duplicate slashes collapsed, e.g. `/service/batman/`.
    pub fn base_path(&self) -> String {
        let raw = format!("/{}/{}/", self.namespace, self.scope);
        let mut out = String::with_capacity(raw.len());
        for c in raw.chars() {
            if c == '/' && out.ends_with('/') {
                continue;
            }
            out.push(c);
        }
        out
    }

    /// `<http|https>://<restapi.connect_address>/patroni` (https iff `restapi.certfile` is set).
    pub fn api_url(&self) -> String {
        let scheme = if self.restapi.certfile.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/patroni", self.restapi.connect_address)
    }

    /// `postgres://<postgresql.connect_address>/<database>`.
    pub fn conn_url(&self) -> String {
        format!(
            "postgres://{}/{}",
            self.postgresql.connect_address, self.postgresql.database
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Reading sources

fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("PATRONI_") || k == "HOME")
        .collect()
}

fn read_dir_tree(dir: &Path) -> Result<Value> {
    let origin = dir.display().to_string();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read configuration directory {origin}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yml") | Some("yaml")
                )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{origin}: the directory holds no *.yml or *.yaml file");
    }
    let mut tree = Value::Object(Map::new());
    for f in &files {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read configuration file {name}"))?;
        let part = parse_yaml(&text, &name)?;
        deep_merge(&mut tree, part);
    }
    Ok(tree)
}

/// Objects merge key by key, recursively; anything else replaces.
fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// YAML text → JSON tree; the top level must be a mapping (an empty document counts as `{}`).
fn parse_yaml(text: &str, origin: &str) -> Result<Value> {
    let y: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let Some(loc) = e.location() else {
            return anyhow!("{origin}: invalid YAML: {e}");
        };
        // serde_yaml places a duplicate key at the start of its mapping; point at the duplicate.
        let msg = e.to_string();
        if let Some(key) = duplicate_key(&msg) {
            if let Some((first, dup, col)) =
                locate_duplicate(text, loc.line(), loc.column(), &key)
            {
                return anyhow!(
                    "{origin}: invalid YAML at line {dup}, column {col}: duplicate key '{key}' (first given at line {first}); keep one of them"
                );
            }
        }
        anyhow!(
            "{origin}: invalid YAML at line {}, column {}: {e}",
            loc.line(),
            loc.column()
        )
    })?;
    let v = yaml_to_json(y, "").map_err(|m| anyhow!("{origin}: {m}"))?;
    match v {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(v),
        other => bail!(
            "{origin}: expected a mapping of settings (key: value) at the top level, got {}",
            short(&other)
        ),
    }
}

/// The key of serde_yaml's "duplicate entry with key \"name\"" message (string keys, written
/// with Rust's string escapes, and numbers).
fn duplicate_key(msg: &str) -> Option<String> {
    let rest = msg.split("duplicate entry with key ").nth(1)?;
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(key),
                '\\' => key.push(chars.next()?),
                c => key.push(c),
            }
        }
        None
    } else {
        let end = rest.find([' ', ',']).unwrap_or(rest.len());
        Some(rest[..end].to_string()).filter(|k| !k.is_empty())
    }
}

/// Where the duplicate `key` of the block mapping starting at `line`/`column` (1-based, as
/// serde_yaml reports it) is: (line of the first occurrence, line and column of the second).
/// Looks at the keys written at the mapping's own indentation until the mapping ends; None when
/// the mapping is not a plain block mapping (flow style, anchors), so the caller keeps
/// serde_yaml's location.
fn locate_duplicate(
    text: &str,
    line: usize,
    column: usize,
    key: &str,
) -> Option<(usize, usize, usize)> {
    let indent = column.checked_sub(1)?;
    let mut first = None;
    for (i, l) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let n = i + 1;
        let (at, body) = if n == line {
            // The mapping may start after a `- ` on its first line.
            (indent, l.get(indent..)?)
        } else {
            let trimmed = l.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let at = l.len() - trimmed.len();
            if at < indent {
                break;
            }
            if at > indent {
                continue;
            }
            (at, trimmed)
        };
        if line_key(body).as_deref() == Some(key) {
            match first {
                None => first = Some(n),
                Some(f) => return Some((f, n, at + 1)),
            }
        }
    }
    None
}

/// The key of a block-mapping line (`name: x`, `"a b": 1`, `'k': 2`, `k:`), if it has one.
fn line_key(body: &str) -> Option<String> {
    let quoted = |q: char| -> Option<String> {
        let rest = body.strip_prefix(q)?;
        let end = rest.find(q)?;
        rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_string())
    };
    if body.starts_with('"') {
        return quoted('"');
    }
    if body.starts_with('\'') {
        return quoted('\'');
    }
    let colon = body
        .char_indices()
        .find(|&(i, c)| {
            c == ':'
                && body[i + 1..]
                    .chars()
                    .next()
                    .is_none_or(|n| n == ' ' || n == '\t')
        })?
        .0;
    Some(body[..colon].trim_end().to_string())
}

fn yaml_to_json(y: serde_yaml::Value, path: &str) -> std::result::Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(n.to_string()))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(yaml_to_json(item, &format!("{path}[{i}]"))?);
            }
            Value::Array(out)
        }
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_string(),
                    _ => {
                        let at = if path.is_empty() { "top level" } else { path };
                        return Err(format!("{at}: mapping keys must be plain names"));
                    }
                };
                let child = jp(path, &key);
                let v = yaml_to_json(v, &child)?;
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, path)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Environment overlay (spec §7.4)

#[derive(Clone, Copy)]
enum EnvKind {
    Str,
    List,
    Dict,
}

fn env_table() -> Vec<(String, Vec<String>, EnvKind)> {
    use EnvKind::*;
    let mut t: Vec<(String, Vec<String>, EnvKind)> = Vec::new();
    let mut add = |var: &str, path: &[&str], kind: EnvKind| {
        t.push((
            var.to_string(),
            path.iter().map(|s| s.to_string()).collect(),
            kind,
        ));
    };
    add("NAME", &["name"], Str);
    add("NAMESPACE", &["namespace"], Str);
    add("SCOPE", &["scope"], Str);
    for (suffix, key, kind) in [
        ("LISTEN", "listen", Str),
        ("CONNECT_ADDRESS", "connect_address", Str),
        ("CERTFILE", "certfile", Str),
        ("KEYFILE", "keyfile", Str),
        ("KEYFILE_PASSWORD", "keyfile_password", Str),
        ("CAFILE", "cafile", Str),
        ("CIPHERS", "ciphers", Str),
        ("VERIFY_CLIENT", "verify_client", Str),
        ("HTTP_EXTRA_HEADERS", "http_extra_headers", Dict),
        ("HTTPS_EXTRA_HEADERS", "https_extra_headers", Dict),
        ("ALLOWLIST", "allowlist", List),
        (
            "ALLOWLIST_INCLUDE_MEMBERS",
            "allowlist_include_members",
            Str,
        ),
        ("REQUEST_QUEUE_SIZE", "request_queue_size", Str),
        ("SERVER_TOKENS", "server_tokens", Str),
    ] {
        add(&format!("RESTAPI_{suffix}"), &["restapi", key], kind);
    }
    add(
        "RESTAPI_USERNAME",
        &["restapi", "authentication", "username"],
        Str,
    );
    add(
        "RESTAPI_PASSWORD",
        &["restapi", "authentication", "password"],
        Str,
    );
    for (suffix, key) in [
        ("INSECURE", "insecure"),
        ("CACERT", "cacert"),
        ("CERTFILE", "certfile"),
        ("KEYFILE", "keyfile"),
        ("KEYFILE_PASSWORD", "keyfile_password"),
    ] {
        add(&format!("CTL_{suffix}"), &["ctl", key], Str);
    }
    add("CTL_USERNAME", &["ctl", "authentication", "username"], Str);
    add("CTL_PASSWORD", &["ctl", "authentication", "password"], Str);
    for (suffix, key) in [
        ("LISTEN", "listen"),
        ("CONNECT_ADDRESS", "connect_address"),
        ("PROXY_ADDRESS", "proxy_address"),
        ("CONFIG_DIR", "config_dir"),
        ("DATA_DIR", "data_dir"),
        ("PGPASS", "pgpass"),
        ("BIN_DIR", "bin_dir"),
    ] {
        add(&format!("POSTGRESQL_{suffix}"), &["postgresql", key], Str);
    }
    for bin in [
        "PG_CTL",
        "INITDB",
        "PG_CONTROLDATA",
        "PG_BASEBACKUP",
        "POSTGRES",
        "PG_ISREADY",
        "PG_REWIND",
    ] {
        let key = bin.to_ascii_lowercase();
        add(
            &format!("POSTGRESQL_BIN_{bin}"),
            &["postgresql", "bin_name", &key],
            Str,
        );
    }
    for role in ["SUPERUSER", "REPLICATION", "REWIND"] {
        let r = role.to_ascii_lowercase();
        for opt in [
            "USERNAME",
            "PASSWORD",
            "SSLMODE",
            "SSLCERT",
            "SSLKEY",
            "SSLPASSWORD",
            "SSLROOTCERT",
            "SSLCRL",
            "SSLCRLDIR",
            "GSSENCMODE",
            "CHANNEL_BINDING",
            "SSLNEGOTIATION",
        ] {
            let o = opt.to_ascii_lowercase();
            add(
                &format!("{role}_{opt}"),
                &["postgresql", "authentication", &r, &o],
                Str,
            );
        }
    }
    t
}

/// DCS variables: `PATRONI_ETCD3_*` → `etcd3.*`, `PATRONI_ETCD_*` → `etcd.*`.
const DCS_ENV_SUFFIXES: &[(&str, EnvKind)] = &[
    ("HOST", EnvKind::Str),
    ("HOSTS", EnvKind::List),
    ("URL", EnvKind::Str),
    ("PROXY", EnvKind::Str),
    ("SRV", EnvKind::Str),
    ("SRV_SUFFIX", EnvKind::Str),
    ("PROTOCOL", EnvKind::Str),
    ("CACERT", EnvKind::Str),
    ("CERT", EnvKind::Str),
    ("KEY", EnvKind::Str),
    ("USE_PROXIES", EnvKind::Str),
];

fn env_value(var: &str, raw: &str, kind: EnvKind) -> Result<Value> {
    match kind {
        EnvKind::Str => Ok(Value::String(raw.to_string())),
        EnvKind::List => {
            let t = raw.trim();
            if t.starts_with('[') || t.starts_with('-') {
                let v = parse_env_yaml(var, t)?;
                match v {
                    Value::Array(_) => Ok(v),
                    other => bail!("{var}: expected a list, got {}", short(&other)),
                }
            } else {
                let items = t
                    .split(',')
                    .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                    .filter(|s| !s.is_empty())
                    .map(Value::String)
                    .collect();
                Ok(Value::Array(items))
            }
        }
        EnvKind::Dict => {
            let t = raw.trim();
            let text = if t.starts_with('{') {
                t.to_string()
            } else {
                format!("{{{t}}}")
            };
            match parse_env_yaml(var, &text)? {
                v @ Value::Object(_) => Ok(v),
                other => bail!(
                    "{var}: expected a mapping such as {{Name: value}}, got {}",
                    short(&other)
                ),
            }
        }
    }
}

fn parse_env_yaml(var: &str, text: &str) -> Result<Value> {
    let y: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| anyhow!("{var}: cannot parse {text:?}: {e}"))?;
    yaml_to_json(y, "").map_err(|m| anyhow!("{var}: {m}"))
}

/// Write `value` at `path`, creating (or replacing non-mapping) intermediate sections.
fn set_path(tree: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = tree;
    for p in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry(p.clone()).or_insert(Value::Null);
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), value);
    }
}

fn apply_env(tree: &mut Value, env: &BTreeMap<String, String>) -> Result<()> {
    for (suffix, path, kind) in env_table() {
        let var = format!("PATRONI_{suffix}");
        if let Some(raw) = env.get(&var) {
            set_path(tree, &path, env_value(&var, raw, kind)?);
        }
    }
    for section in ["etcd3", "etcd"] {
        let up = section.to_ascii_uppercase();
        for (suffix, kind) in DCS_ENV_SUFFIXES {
            let var = format!("PATRONI_{up}_{suffix}");
            if let Some(raw) = env.get(&var) {
                let path = [section.to_string(), suffix.to_ascii_lowercase()];
                set_path(tree, &path, env_value(&var, raw, *kind)?);
            }
        }
        // Credentials alone do not create the section (as in Patroni): they complete one that the
        // file or another variable defined.
        if tree.get(section).is_some_and(|s| !s.is_null()) {
            for suffix in ["USERNAME", "PASSWORD"] {
                if let Some(raw) = env.get(&format!("PATRONI_{up}_{suffix}")) {
                    let path = [section.to_string(), suffix.to_ascii_lowercase()];
                    set_path(tree, &path, Value::String(raw.clone()));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Typed extraction

fn jp(sect: &str, key: &str) -> String {
    if sect.is_empty() {
        key.to_string()
    } else {
        format!("{sect}.{key}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn close(a: &str, b: &str) -> bool {
    // One edit for short names, two for longer ones: "lisen" → "listen", but not "foo" → "log".
    let limit = if a.len().min(b.len()) < 5 { 1 } else { 2 };
    a != b && a.len().min(b.len()) >= 3 && edit_distance(a, b) <= limit
}

/// Value at `key`, treating an explicit YAML null (`key:` with nothing after it) as absent.
fn get<'v>(m: Option<&'v Map<String, Value>>, key: &str) -> Option<&'v Value> {
    m.and_then(|m| m.get(key)).filter(|v| !v.is_null())
}

struct Ex<'a> {
    origin: &'a str,
    warnings: Vec<String>,
    /// Settings tandem does not carry out, one sentence each naming the key and the fix.
    refusals: Vec<(Who, String)>,
}

type Obj<'v> = Option<&'v Map<String, Value>>;

impl Ex<'_> {
    fn err(&self, path: &str, msg: impl fmt::Display) -> anyhow::Error {
        anyhow!("{}: {path}: {msg}", self.origin)
    }

    fn expected(&self, path: &str, what: &str, got: &Value) -> anyhow::Error {
        self.err(path, format!("expected {what}, got {}", short(got)))
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    fn refuse(&mut self, who: Who, path: &str, why_and_fix: impl fmt::Display) {
        self.refusals.push((who, format!("{path}: {why_and_fix}")));
    }

    fn missing(&self, m: Obj, sect: &str, key: &str, hint: &str) -> anyhow::Error {
        let mut msg = format!("{}: {} is missing: {hint}", self.origin, jp(sect, key));
        if let Some(typo) = m.and_then(|m| m.keys().find(|k| close(k, key))) {
            msg.push_str(&format!(
                " (found '{}': a misspelling of '{key}'?)",
                jp(sect, typo)
            ));
        }
        anyhow!(msg)
    }

    fn section<'v>(&self, m: Obj<'v>, sect: &str, key: &str) -> Result<Obj<'v>> {
        match get(m, key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => {
                Err(self.expected(&jp(sect, key), "a mapping of settings (key: value)", other))
            }
        }
    }

    fn string(&self, m: Obj, sect: &str, key: &str) -> Result<Option<String>> {
        match get(m, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.expected(&jp(sect, key), "a string", other)),
        }
    }

    fn req_string(&self, m: Obj, sect: &str, key: &str, hint: &str) -> Result<String> {
        match self.string(m, sect, key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.missing(m, sect, key, hint)),
        }
    }

    fn path(&self, m: Obj, sect: &str, key: &str) -> Result<Option<PathBuf>> {
        Ok(self
            .string(m, sect, key)?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    }

    fn secret(&self, m: Obj, sect: &str, key: &str) -> Result<Option<Secret>> {
        match get(m, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(Secret(s.clone()))),
            Some(Value::Number(n)) => Ok(Some(Secret(n.to_string()))),
            // Never echo what might be a password.
            Some(_) => Err(self.err(&jp(sect, key), "expected a string (quote it in YAML)")),
        }
    }

    fn boolean(&self, m: Obj, sect: &str, key: &str) -> Result<Option<bool>> {
        match get(m, key) {
            None => Ok(None),
            Some(v) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| self.expected(&jp(sect, key), "true or false", v)),
        }
    }

    fn uint(&self, m: Obj, sect: &str, key: &str) -> Result<Option<u64>> {
        match get(m, key) {
            None => Ok(None),
            Some(v) => tandem_core::dynamic::parse_uint(v)
                .map(Some)
                .ok_or_else(|| self.expected(&jp(sect, key), "a non-negative integer", v)),
        }
    }

    fn int(&self, m: Obj, sect: &str, key: &str) -> Result<Option<i64>> {
        match get(m, key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(v @ Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.expected(&jp(sect, key), "an integer", v)),
            Some(v) => Err(self.expected(&jp(sect, key), "an integer", v)),
        }
    }

    /// A list of strings; with `comma`, a single comma-separated string is accepted too.
    fn list(&self, m: Obj, sect: &str, key: &str, comma: bool) -> Result<Vec<String>> {
        let path = jp(sect, key);
        match get(m, key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, it)| match it {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(self.expected(&format!("{path}[{i}]"), "a string", other)),
                })
                .collect(),
            Some(Value::String(s)) if comma => Ok(s
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()),
            Some(other) => {
                let what = if comma {
                    "a list of strings or a comma-separated string"
                } else {
                    "a list of strings"
                };
                Err(self.expected(&path, what, other))
            }
        }
    }

    fn string_map(&self, m: Obj, sect: &str, key: &str) -> Result<BTreeMap<String, String>> {
        let path = jp(sect, key);
        let mut out = BTreeMap::new();
        if let Some(o) = self.section(m, sect, key)? {
            for (k, v) in o {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(self.expected(&jp(&path, k), "a string", other)),
                };
                out.insert(k.clone(), s);
            }
        }
        Ok(out)
    }

    /// Warn about keys of `m` that are neither `known` nor `unsupported`; refuse the `unsupported`
    /// ones that are set (`(key, why and fix)`; a null or empty value asks for nothing).
    fn check_keys(
        &mut self,
        m: Obj,
        sect: &str,
        known: &[&str],
        unsupported: &[(&str, &str)],
        who: Who,
    ) {
        let Some(m) = m else { return };
        for (k, v) in m {
            if known.contains(&k.as_str()) {
                continue;
            }
            if let Some((_, fix)) = unsupported.iter().find(|(u, _)| u == k) {
                if !is_empty_setting(v) {
                    self.refuse(who, &jp(sect, k), fix);
                }
                continue;
            }
            let hint = known
                .iter()
                .chain(unsupported.iter().map(|(u, _)| u))
                .find(|c| close(k, c))
                .map(|c| format!("; did you mean '{c}'?"))
                .unwrap_or_default();
            self.warn(format!("unknown key '{}' (ignored{hint})", jp(sect, k)));
        }
    }

    fn credentials(&self, m: Obj, sect: &str, key: &str) -> Result<Option<Credentials>> {
        let Some(a) = self.section(m, sect, key)? else {
            return Ok(None);
        };
        let path = jp(sect, key);
        let username = self.req_string(
            Some(a),
            &path,
            "username",
            "set the user name for basic authentication",
        )?;
        let password = self.secret(Some(a), &path, "password")?.ok_or_else(|| {
            self.missing(
                Some(a),
                &path,
                "password",
                "set the password for basic authentication",
            )
        })?;
        Ok(Some(Credentials { username, password }))
    }
}

/// A value that asks for nothing: null, an empty string, list or mapping.
fn is_empty_setting(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn is_wildcard(host: &str) -> bool {
    matches!(host.trim(), "" | "0.0.0.0" | "*" | "::" | "[::]")
}

/// `host:port` or `[v6]:port` → (host without brackets, port), or what is wrong with `s` (for
/// the error message). Port 1..=65535.
fn host_port(s: &str) -> std::result::Result<(String, u16), String> {
    let s = s.trim();
    let split = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:").map(|(h, p)| (h.to_string(), p))
    } else {
        s.rsplit_once(':').map(|(h, p)| (h.to_string(), p))
    };
    let Some((host, port)) = split else {
        return Err("no port given".to_string());
    };
    let port = parse_port(port)?;
    if host.contains(',') || host.contains(char::is_whitespace) {
        return Err(format!(
            "'{host}' is not one host (no commas or spaces here)"
        ));
    }
    Ok((host, port))
}

/// A port 1..=65535, or why not. Port 0 asks the system for any free port, which nobody else
/// could then find: every address tandem reads is one others connect to.
fn parse_port(p: &str) -> std::result::Result<u16, String> {
    match p.trim().parse::<u32>() {
        Ok(0) => Err("port 0 is not allowed: it would pick a random free port that the other nodes and clients cannot know; use a fixed port".to_string()),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!("'{}' is not a port number (1-65535)", p.trim())),
    }
}

/// `a,b:port` (PostgreSQL's listen_addresses plus a port) → (hosts, port).
fn split_listen(s: &str) -> Option<(Vec<String>, u16)> {
    listen_parts(s).ok()
}

/// [`split_listen`], or what is wrong with `s`.
fn listen_parts(s: &str) -> std::result::Result<(Vec<String>, u16), String> {
    let Some((hosts, port)) = s.trim().rsplit_once(':') else {
        return Err("no port given".to_string());
    };
    let port = parse_port(port)?;
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| {
            h.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .collect();
    if let Some(h) = hosts.iter().find(|h| h.contains(char::is_whitespace)) {
        return Err(format!("'{h}' is not a host name or address"));
    }
    Ok((hosts, port))
}

/// `path: expected "host:port", got "…": <reason>`.
fn bad_address(ex: &Ex, path: &str, what: &str, got: &str, reason: &str) -> anyhow::Error {
    ex.err(
        path,
        format!("expected {what}, got {}: {reason}", Value::from(got)),
    )
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Turn `bootstrap.initdb` / `postgresql.basebackup` (a list of names and `name: value` pairs, or a
/// mapping) into `--name` / `--name=value` arguments.
fn user_options(ex: &Ex, v: Option<&Value>, path: &str, forbidden: &[&str]) -> Result<Vec<String>> {
    fn one(
        ex: &Ex,
        path: &str,
        name: &str,
        val: Option<&Value>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        let name = name.trim().trim_start_matches('-');
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('=') {
            return Err(ex.err(
                path,
                format!("expected an option name such as data-checksums, or a pair such as `encoding: UTF8`; got {name:?}"),
            ));
        }
        match val {
            None | Some(Value::Null) | Some(Value::Bool(true)) => out.push(format!("--{name}")),
            Some(Value::Bool(false)) => {}
            Some(Value::String(s)) => out.push(format!("--{name}={s}")),
            Some(Value::Number(n)) => out.push(format!("--{name}={n}")),
            Some(other) => return Err(ex.expected(&jp(path, name), "a single value", other)),
        }
        Ok(())
    }
    let mut out = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let ip = format!("{path}[{i}]");
                match it {
                    Value::String(s) => one(ex, &ip, s, None, &mut out)?,
                    Value::Object(m) if !m.is_empty() => {
                        for (k, val) in m {
                            one(ex, &ip, k, Some(val), &mut out)?;
                        }
                    }
                    other => {
                        return Err(ex.expected(
                            &ip,
                            "an option name or a `name: value` pair",
                            other,
                        ));
                    }
                }
            }
        }
        Some(Value::Object(m)) => {
            for (k, val) in m {
                one(ex, path, k, Some(val), &mut out)?;
            }
        }
        Some(other) => {
            return Err(ex.expected(
                path,
                "a list of options (e.g. [data-checksums, {encoding: UTF8}]) or a mapping",
                other,
            ));
        }
    }
    for arg in &out {
        let name = arg
            .trim_start_matches('-')
            .split('=')
            .next()
            .unwrap_or_default();
        if forbidden.contains(&name) {
            return Err(ex.err(
                path,
                format!("option '{name}' is not allowed here: tandem sets it itself"),
            ));
        }
    }
    Ok(out)
}

const TOP_KNOWN: &[&str] = &[
    // `tandem vip` (VRRP or leader mode) and `tandem proxy` may share a node's file.
    "vip",
    "proxy",
    "name",
    "scope",
    "namespace",
    "restapi",
    "ctl",
    "etcd",
    "etcd3",
    "bootstrap",
    "postgresql",
    "tags",
    "log",
    "thread_pool_size",
    "thread_stack_size",
];
const TOP_UNSUPPORTED: &[(&str, &str)] = &[(
    "citus",
    "tandem does not manage Citus clusters; remove the citus section",
)];
/// Patroni's Python thread settings: tandem runs on an async runtime and has no such pools.
const THREAD_KEYS: &[&str] = &["thread_pool_size", "thread_stack_size"];
const OTHER_DCS: &[&str] = &["consul", "zookeeper", "exhibitor", "kubernetes", "raft"];
/// Dynamic settings that Patroni only reads from the DCS; at the top level of the local file they
/// have no effect.
const DYNAMIC_KEYS: &[&str] = &[
    "ttl",
    "loop_wait",
    "retry_timeout",
    "maximum_lag_on_failover",
    "maximum_lag_on_syncnode",
    "primary_start_timeout",
    "master_start_timeout",
    "primary_stop_timeout",
    "master_stop_timeout",
    "primary_race_backoff",
    "max_timelines_history",
    "check_timeline",
    "synchronous_mode",
    "synchronous_mode_strict",
    "synchronous_node_count",
    "failsafe_mode",
    "pause",
    "member_slots_ttl",
    "slots",
    "permanent_slots",
    "permanent_replication_slots",
    "ignore_slots",
    "standby_cluster",
];
const DCS_PG_KEYS: &[&str] = &[
    "use_pg_rewind",
    "use_slots",
    "recovery_conf",
    "parameters",
    "parameters_primary",
    "parameters_replica",
    "parameters_standby_leader",
    "pg_hba",
    "pg_hba_primary",
    "pg_hba_replica",
    "pg_hba_standby_leader",
    "pg_ident",
    "pg_ident_primary",
    "pg_ident_replica",
    "pg_ident_standby_leader",
    "pg_ctl_timeout",
    "rewind",
    "basebackup",
    "remove_data_directory_on_rewind_failure",
    "remove_data_directory_on_diverged_timelines",
    "create_replica_methods",
];
/// Parameters Patroni takes only from the dynamic configuration (spec §7.5).
const DYNAMIC_ONLY_PARAMS: &[&str] = &[
    "max_connections",
    "max_locks_per_transaction",
    "max_worker_processes",
    "max_prepared_transactions",
    "wal_level",
    "track_commit_timestamp",
    "max_wal_senders",
    "max_replication_slots",
    "wal_keep_segments",
    "wal_keep_size",
    "wal_log_hints",
];
const CALLBACKS: &[&str] = &[
    "on_start",
    "on_stop",
    "on_restart",
    "on_reload",
    "on_role_change",
];

/// patronictl's `--dcs-url` (spec §6.1): `[scheme://][host][:port][/namespace]`, scheme `etcd3`
/// (or `etcd`, taken as etcd's v3 API: tandem speaks nothing else), host default `localhost`, port
/// default 2379. Several hosts may be given separated by commas. Returns the `host:port` list and
/// the namespace when the URL has a path.
pub fn parse_dcs_url(url: &str) -> Result<(Vec<String>, Option<String>)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("etcd3".to_string(), url),
    };
    match scheme.as_str() {
        "etcd3" | "etcd" => {}
        "consul" | "zookeeper" | "exhibitor" | "kubernetes" | "raft" => bail!(
            "--dcs-url {url}: tandem works with etcd only (its v3 API), not {scheme}; use etcd3://host:2379"
        ),
        other => bail!(
            "--dcs-url {url}: unknown scheme '{other}'; expected etcd3://host[:port][/namespace]"
        ),
    }
    let (hosts_part, namespace) = match rest.split_once('/') {
        Some((h, ns)) if !ns.trim_matches('/').is_empty() => {
            (h, Some(format!("/{}", ns.trim_matches('/'))))
        }
        Some((h, _)) => (h, None),
        None => (rest, None),
    };
    let mut hosts = Vec::new();
    for h in hosts_part.split(',') {
        let h = h.trim();
        // `[v6]:port`, `host:port`, `host`, `:port`.
        let (host, port) = match h.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((v6, tail)) => (v6, tail.strip_prefix(':')),
            None => match h.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            },
        };
        let port: u16 =
            match port {
                None => 2379,
                Some(p) => p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    anyhow!("--dcs-url {url}: '{p}' is not a port number (1-65535)")
                })?,
            };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        if host.contains(char::is_whitespace) || host.contains('@') {
            bail!("--dcs-url {url}: '{host}' is not a host name or address");
        }
        hosts.push(format!("{host}:{port}"));
    }
    Ok((hosts, namespace))
}

fn build(
    mut tree: Value,
    env: &BTreeMap<String, String>,
    origin: &str,
    use_env: bool,
    purpose: Purpose,
) -> Result<Config> {
    let mut ex = Ex {
        origin,
        warnings: Vec::new(),
        refusals: Vec::new(),
    };
    if use_env {
        if env.contains_key("PATRONI_CONFIGURATION") && origin != "environment" {
            ex.warn(format!(
                "PATRONI_CONFIGURATION is ignored because the configuration was read from {origin}"
            ));
        }
        apply_env(&mut tree, env)?;
    }
    let Value::Object(top_map) = &tree else {
        bail!("{origin}: expected a mapping of settings at the top level");
    };
    let top = Some(top_map);

    // ---- top level
    let mut known_top: Vec<&str> = TOP_KNOWN.to_vec();
    known_top.extend_from_slice(OTHER_DCS);
    for k in top_map.keys() {
        if DYNAMIC_KEYS.contains(&k.as_str()) {
            ex.warn(format!(
                "'{k}' at the top level has no effect: dynamic settings belong in bootstrap.dcs (first start) or are changed with `tandem edit-config`"
            ));
        }
    }
    let mut known_top_all = known_top.clone();
    known_top_all.extend_from_slice(DYNAMIC_KEYS);
    known_top_all.push("watchdog");
    ex.check_keys(top, "", &known_top_all, TOP_UNSUPPORTED, Who::Both);
    for k in THREAD_KEYS {
        if get(top, k).is_some() {
            ex.warn(format!(
                "'{k}' has no effect in tandem (a setting of Patroni's Python threads; tandem has none)"
            ));
        }
    }
    log_section(&mut ex, top)?;
    watchdog_section(&mut ex, top)?;

    let name = ex.req_string(
        top,
        "",
        "name",
        "set it to this node's unique name, e.g. postgresql-01",
    )?;
    if name == STRICT_SYNC_PLACEHOLDER {
        return Err(ex.err(
            "name",
            format!("'{name}' is reserved; choose another node name"),
        ));
    }
    if name.contains('/') {
        return Err(ex.err(
            "name",
            format!("'{name}' must not contain '/' (it becomes part of an etcd key)"),
        ));
    }
    let scope = ex.req_string(
        top,
        "",
        "scope",
        "set it to the cluster name (the same on every node), e.g. postgresql-cluster",
    )?;
    let namespace = ex
        .string(top, "", "namespace")?
        .unwrap_or_else(|| "/service".to_string());

    let etcd3 = etcd_section(&mut ex, top)?;
    let restapi = restapi_section(&mut ex, top)?;
    let bootstrap = bootstrap_section(&mut ex, top)?;
    let postgresql = postgresql_section(&mut ex, top, env)?;
    let tags = tags_section(&mut ex, top)?;
    let ctl = ctl_section(&mut ex, top)?;

    let mut refused = Vec::new();
    for (who, r) in std::mem::take(&mut ex.refusals) {
        if who.stops(purpose) {
            refused.push(r);
        } else if purpose == Purpose::Ctl {
            ex.warn(format!("{r} (`tandem agent` refuses to start with it)"));
        } else {
            ex.warn(format!("{r} (the command-line tools refuse it)"));
        }
    }
    match refused.as_slice() {
        [] => {}
        [one] => bail!("{origin}: {one}"),
        many => bail!(
            "{origin}: {} settings that tandem does not carry out (it refuses them rather than ignore them):\n  {}",
            many.len(),
            many.join("\n  ")
        ),
    }

    Ok(Config {
        scope,
        namespace,
        name,
        etcd3,
        restapi,
        bootstrap,
        postgresql,
        tags,
        ctl,
        warnings: ex.warnings,
    })
}

/// `log`: tandem logs to standard error, at the level `RUST_LOG` sets. `log.dir` (log files) is
/// refused, since the logs a user expects there would never appear; the other keys only shape
/// Patroni's Python logging and have no effect (a warning says so).
fn log_section(ex: &mut Ex, top: Obj) -> Result<()> {
    let Some(m) = ex.section(top, "", "log")? else {
        return Ok(());
    };
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        if k == "dir" {
            ex.refuse(
                Who::Both,
                "log.dir",
                "tandem does not write log files: it logs to standard error (the systemd journal, or a redirect, keeps them); remove log.dir",
            );
        } else {
            ex.warn(format!(
                "log.{k} has no effect: tandem logs to standard error, at the level set by RUST_LOG (e.g. RUST_LOG=debug)"
            ));
        }
    }
    Ok(())
}

/// `watchdog` (spec §8.1), read as Patroni reads `mode`: `false`, `off`, `disable(d)` → off;
/// `auto(matic)` (the default when the section is present without a mode) → use one if
/// available; `require(d)` → never lead without one; anything else → off, with a warning.
/// tandem does not drive a watchdog, so `required` is refused. `automatic` only warns: Patroni
/// itself goes on without a watchdog in automatic mode when none is usable, which is what
/// tandem does; the safety of a leader that loses etcd rests on the demotion before its lease
/// expires (docs/timing.md), not on a watchdog.
fn watchdog_section(ex: &mut Ex, top: Obj) -> Result<()> {
    let mode = match get(top, "watchdog") {
        None | Some(Value::Bool(false)) => return Ok(()),
        Some(Value::Object(o)) => {
            ex.check_keys(
                Some(o),
                "watchdog",
                &["mode", "device", "safety_margin"],
                &[],
                Who::Agent,
            );
            match o.get("mode") {
                None | Some(Value::Null) => "automatic".to_string(),
                Some(Value::Bool(false)) => "off".to_string(),
                Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
                Some(other) => other.to_string().to_ascii_lowercase(),
            }
        }
        Some(other) => return Err(ex.expected("watchdog", "a mapping such as {mode: off}", other)),
    };
    match mode.as_str() {
        "off" | "disable" | "disabled" => {}
        "require" | "required" => ex.refuse(
            Who::Agent,
            "watchdog.mode",
            format!("'{mode}': tandem does not drive a watchdog (a node would lead without the watchdog you require); set watchdog.mode: off (a leader that cannot renew its lease demotes itself before the lease expires: docs/timing.md)"),
        ),
        "auto" | "automatic" => ex.warn(format!(
            "watchdog.mode: {mode}: tandem does not drive a watchdog and runs without one, as Patroni does in automatic mode when no watchdog is usable; set watchdog.mode: off to silence this"
        )),
        other => ex.warn(format!(
            "watchdog.mode: '{other}' is not off, automatic or required; Patroni then runs without a watchdog, and so does tandem"
        )),
    }
    Ok(())
}

fn etcd_section(ex: &mut Ex, top: Obj) -> Result<EtcdConfig> {
    let present = |k: &str| get(top, k).is_some();
    let sect = if present("etcd3") {
        if present("etcd") {
            ex.refuse(
                Who::Both,
                "etcd",
                "both 'etcd3' and 'etcd' are set, and a configuration names one DCS (Patroni would not use both); tandem uses 'etcd3': remove the 'etcd' section",
            );
        }
        "etcd3"
    } else if present("etcd") {
        ex.warn(
            "'etcd' section: tandem always talks to etcd with the v3 API; rename the section to 'etcd3' \
             (keys written by Patroni through the v2 API are not visible to tandem)"
                .to_string(),
        );
        "etcd"
    } else {
        if let Some(other) = OTHER_DCS.iter().find(|k| present(k)) {
            bail!(
                "{}: {other}: tandem supports only etcd; add an 'etcd3' section with the etcd hosts (e.g. hosts: 10.0.0.1:2379,10.0.0.2:2379)",
                ex.origin
            );
        }
        ex.warn("no 'etcd3' section: using etcd at 127.0.0.1:2379".to_string());
        return Ok(EtcdConfig {
            hosts: vec!["127.0.0.1:2379".to_string()],
            protocol: "http".to_string(),
            cacert: None,
            cert: None,
            key: None,
            username: None,
            password: None,
        });
    };
    for other in OTHER_DCS {
        if present(other) {
            ex.refuse(
                Who::Both,
                other,
                format!("both '{sect}' and '{other}' are set, and a configuration names one DCS (Patroni would not use both); tandem talks to etcd only: remove the '{other}' section"),
            );
        }
    }
    let m = ex.section(top, "", sect)?;
    let srv = format!(
        "tandem does not discover etcd through DNS SRV records; list the etcd members in {sect}.hosts and remove {sect}.srv and {sect}.srv_suffix"
    );
    ex.check_keys(
        m,
        sect,
        &[
            "host", "hosts", "url", "urls", "protocol", "cacert", "cert", "key", "username",
            "password", "user",
            // tandem talks to exactly the endpoints listed, never to members it would discover:
            // what `use_proxies: true` asks for. With `false` (Patroni's default) Patroni would
            // also learn other members from etcd; list every member in `hosts`.
            "use_proxies",
        ],
        &[
            (
                "proxy",
                &format!("tandem does not reach etcd through an HTTP proxy; list the etcd members in {sect}.hosts and remove {sect}.proxy"),
            ),
            ("srv", &srv),
            ("srv_suffix", &srv),
            (
                "retry_timeout",
                &format!("tandem's etcd request budget comes from the dynamic retry_timeout (docs/timing.md); remove {sect}.retry_timeout"),
            ),
        ],
        Who::Both,
    );

    let mut url_scheme: Option<String> = None;
    let mut hosts: Vec<String> = Vec::new();
    let mut add_entry = |ex: &Ex, path: &str, entry: &str| -> Result<()> {
        let mut e = entry.trim();
        if let Some((scheme, rest)) = e.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(ex.err(
                    path,
                    format!("expected an http:// or https:// URL, got {entry:?}"),
                ));
            }
            url_scheme = Some(scheme);
            e = rest.split('/').next().unwrap_or_default();
        }
        let hp = match host_port(e) {
            Ok(_) => e.to_string(),
            // A host (or bracketed IPv6 address) without a port: etcd's client port.
            Err(_)
                if (!e.is_empty() && !e.contains(':'))
                    || (e.starts_with('[') && e.ends_with(']')) =>
            {
                format!("{e}:2379")
            }
            Err(reason) => {
                return Err(bad_address(ex, path, "\"host:port\"", entry, &reason));
            }
        };
        hosts.push(hp);
        Ok(())
    };
    let urls = {
        let mut u = ex.list(m, sect, "urls", true)?;
        if let Some(one) = ex.string(m, sect, "url")? {
            u.insert(0, one);
        }
        u
    };
    let (src, entries) = if !urls.is_empty() {
        ("url", urls)
    } else {
        let hs = ex.list(m, sect, "hosts", true)?;
        if !hs.is_empty() {
            ("hosts", hs)
        } else {
            ("host", ex.string(m, sect, "host")?.into_iter().collect())
        }
    };
    let path = jp(sect, src);
    for e in &entries {
        add_entry(ex, &path, e)?;
    }
    if hosts.is_empty() {
        ex.warn(format!(
            "{sect}: no host, hosts or url given: using 127.0.0.1:2379"
        ));
        hosts.push("127.0.0.1:2379".to_string());
    }

    let cacert = ex.path(m, sect, "cacert")?;
    let cert = ex.path(m, sect, "cert")?;
    let key = ex.path(m, sect, "key")?;
    let protocol = match ex.string(m, sect, "protocol")? {
        Some(p) => {
            let p = p.trim().to_ascii_lowercase();
            if p != "http" && p != "https" {
                return Err(ex.expected(
                    &jp(sect, "protocol"),
                    "\"http\" or \"https\"",
                    &Value::String(p),
                ));
            }
            p
        }
        None => {
            if let Some(s) = url_scheme {
                s
            } else if cacert.is_some() || cert.is_some() {
                ex.warn(format!("{sect}.protocol is not set: using https because {sect}.cacert or {sect}.cert is set"));
                "https".to_string()
            } else {
                "http".to_string()
            }
        }
    };
    let username = match ex.string(m, sect, "username")? {
        Some(u) => Some(u),
        None => ex.string(m, sect, "user")?,
    };
    let password = ex.secret(m, sect, "password")?;
    match (&username, &password) {
        (Some(_), None) => {
            return Err(ex.missing(
                m,
                sect,
                "password",
                &format!("{sect}.username is set; set the etcd user's password too"),
            ))
        }
        (None, Some(_)) => {
            return Err(ex.missing(
                m,
                sect,
                "username",
                &format!("{sect}.password is set; set the etcd user name too"),
            ))
        }
        _ => {}
    }
    Ok(EtcdConfig {
        hosts,
        protocol,
        cacert,
        cert,
        key,
        username,
        password,
    })
}

fn default_connect(ex: &mut Ex, sect: &str, listen_host: &str, port: u16) -> String {
    let host = if is_wildcard(listen_host) {
        "127.0.0.1".to_string()
    } else {
        host_for_url(listen_host)
    };
    let addr = format!("{host}:{port}");
    ex.warn(format!(
        "{sect}.connect_address is not set: using {addr} (from {sect}.listen); set it to an address the other nodes can reach"
    ));
    addr
}

fn restapi_section(ex: &mut Ex, top: Obj) -> Result<RestApiConfig> {
    let s = "restapi";
    let m = ex.section(top, "", s)?;
    ex.check_keys(
        m,
        s,
        &[
            "listen",
            "connect_address",
            "certfile",
            "keyfile",
            "cafile",
            "verify_client",
            "authentication",
            "allowlist",
            "allowlist_include_members",
            "http_extra_headers",
            "https_extra_headers",
            "request_queue_size",
            "thread_pool_size",
            "server_tokens",
        ],
        &[
            (
                "ciphers",
                "tandem does not take a cipher list (its TLS library offers TLS 1.2 and 1.3 with modern AEAD ciphers only); remove restapi.ciphers",
            ),
            (
                "crlfile",
                "tandem does not check client certificates against a revocation list yet; remove restapi.crlfile (to revoke, issue new certificates from a new CA)",
            ),
            (
                "keyfile_password",
                "tandem cannot read an encrypted private key yet; decrypt it (openssl pkey -in key.pem -out key-plain.pem), point restapi.keyfile at the result and remove restapi.keyfile_password",
            ),
        ],
        Who::Agent,
    );
    for k in ["request_queue_size", "thread_pool_size"] {
        if get(m, k).is_some() {
            ex.warn(format!(
                "restapi.{k} has no effect in tandem (a setting of Patroni's Python HTTP server)"
            ));
        }
    }
    if let Some(t) = ex.string(m, s, "server_tokens")? {
        if !t.trim().eq_ignore_ascii_case("original") {
            ex.refuse(
                Who::Agent,
                "restapi.server_tokens",
                format!("'{t}': tandem always sends `Server: tandem/<version>`; remove restapi.server_tokens or set it to original"),
            );
        }
    }
    let listen = ex.req_string(
        m,
        s,
        "listen",
        "set it to the REST API address as host:port, e.g. 0.0.0.0:8008",
    )?;
    let (lhost, lport) = host_port(&listen)
        .map_err(|reason| bad_address(ex, "restapi.listen", "\"host:port\"", &listen, &reason))?;
    let connect_address = match ex
        .string(m, s, "connect_address")?
        .filter(|c| !c.trim().is_empty())
    {
        Some(c) => {
            if let Err(reason) = host_port(&c) {
                return Err(bad_address(
                    ex,
                    "restapi.connect_address",
                    "\"host:port\"",
                    &c,
                    &reason,
                ));
            }
            c
        }
        None => default_connect(ex, s, &lhost, lport),
    };
    let certfile = ex.path(m, s, "certfile")?;
    let keyfile = ex.path(m, s, "keyfile")?;
    let cafile = ex.path(m, s, "cafile")?;
    let verify_client = match ex.string(m, s, "verify_client")? {
        None => VerifyClient::None,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "none" | "" => VerifyClient::None,
            "optional" => VerifyClient::Optional,
            "required" => VerifyClient::Required,
            _ => {
                return Err(ex.expected(
                    "restapi.verify_client",
                    "none, optional or required",
                    &Value::String(v),
                ))
            }
        },
    };
    if verify_client != VerifyClient::None && cafile.is_none() {
        return Err(ex.missing(
            m,
            s,
            "cafile",
            "restapi.verify_client needs the CA that signs client certificates",
        ));
    }
    if certfile.is_none() && (keyfile.is_some() || verify_client != VerifyClient::None) {
        ex.warn("restapi.certfile is not set, so the REST API serves plain HTTP and restapi.keyfile/verify_client have no effect".to_string());
    }
    let mut http_extra_headers = ex.string_map(m, s, "http_extra_headers")?;
    let https = ex.string_map(m, s, "https_extra_headers")?;
    if certfile.is_some() {
        http_extra_headers.extend(https);
    }
    let allowlist_include_members = ex
        .boolean(m, s, "allowlist_include_members")?
        .unwrap_or(false);
    if let Some(n) = ex.uint(m, s, "request_queue_size")? {
        if n > 4096 {
            return Err(ex.expected(
                "restapi.request_queue_size",
                "an integer from 0 to 4096",
                &Value::from(n),
            ));
        }
    }
    Ok(RestApiConfig {
        listen,
        connect_address,
        certfile,
        keyfile,
        // Refused above when set; kept so that a future reader of encrypted keys has it.
        keyfile_password: ex.secret(m, s, "keyfile_password")?,
        cafile,
        verify_client,
        authentication: ex.credentials(m, s, "authentication")?,
        allowlist: ex.list(m, s, "allowlist", true)?,
        allowlist_include_members,
        http_extra_headers,
    })
}

fn bootstrap_section(ex: &mut Ex, top: Obj) -> Result<BootstrapConfig> {
    let s = "bootstrap";
    let present = get(top, s).is_some();
    let m = ex.section(top, "", s)?;
    if let Some(method) = ex.string(m, s, "method")? {
        if method != "initdb" {
            return Err(ex.err(
                "bootstrap.method",
                format!("custom bootstrap method '{method}' is not supported by tandem yet; remove bootstrap.method to use initdb"),
            ));
        }
    }
    ex.check_keys(
        m,
        s,
        &["dcs", "method", "initdb"],
        &[
            (
                "users",
                "tandem does not create users at bootstrap (Patroni 4 dropped this too); create them once the cluster runs and remove bootstrap.users",
            ),
            (
                "pg_hba",
                "tandem does not read bootstrap.pg_hba; move the lines to bootstrap.dcs.postgresql.pg_hba (or to postgresql.pg_hba)",
            ),
            (
                "post_bootstrap",
                "tandem does not run a post-bootstrap script yet (it creates the replication user itself); run the script once yourself after the first start and remove bootstrap.post_bootstrap",
            ),
            (
                "post_init",
                "tandem does not run a post-bootstrap script yet (it creates the replication user itself); run the script once yourself after the first start and remove bootstrap.post_init",
            ),
        ],
        Who::Agent,
    );

    let dcs = match get(m, "dcs") {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => {
            return Err(ex.expected(
                "bootstrap.dcs",
                "a mapping of dynamic settings (ttl, loop_wait, postgresql, ...)",
                other,
            ))
        }
    };
    let dm = dcs.as_object();
    let mut known_dcs = DYNAMIC_KEYS.to_vec();
    known_dcs.push("postgresql");
    ex.check_keys(dm, "bootstrap.dcs", &known_dcs, &[], Who::Agent);
    if let Some(Value::Object(pg)) = get(dm, "postgresql") {
        let mut pg_known = DCS_PG_KEYS.to_vec();
        // Local-only keys are ignored in the DCS copy; name them so the warning says so.
        for local in [
            "connect_address",
            "proxy_address",
            "listen",
            "config_dir",
            "data_dir",
            "pgpass",
            "authentication",
        ] {
            if pg.contains_key(local) {
                ex.warn(format!(
                    "'bootstrap.dcs.postgresql.{local}' is ignored: it is a local setting; put it under postgresql"
                ));
            }
            pg_known.push(local);
        }
        ex.check_keys(
            Some(pg),
            "bootstrap.dcs.postgresql",
            &pg_known,
            &[],
            Who::Agent,
        );
    }
    // The document a first start writes to the DCS passes the check `PATCH /config` applies:
    // an invalid value or a setting tandem does not carry out refuses the file (once, here; the
    // agent used to print the same warnings a second time when it parsed bootstrap.dcs again).
    for r in DynamicConfig::refusals_at(&dcs, "bootstrap.dcs") {
        ex.refusals.push((Who::Agent, r));
    }

    let initdb_args = user_options(
        ex,
        get(m, "initdb"),
        "bootstrap.initdb",
        &["pgdata", "nosync", "pwfile", "sync-only", "version"],
    )?;
    let pg_hba = ex.list(m, s, "pg_hba", false)?;
    let post_bootstrap = match ex.string(m, s, "post_bootstrap")? {
        Some(p) => Some(p),
        None => ex.string(m, s, "post_init")?,
    };
    Ok(BootstrapConfig {
        dcs,
        initdb_args,
        pg_hba,
        post_bootstrap,
        present,
    })
}

fn pg_credentials(ex: &mut Ex, auth: Obj, role: &str, hint: &str) -> Result<Option<PgCredentials>> {
    let sect = "postgresql.authentication";
    let Some(c) = ex.section(auth, sect, role)? else {
        return Ok(None);
    };
    let path = jp(sect, role);
    let extra_keys = [
        "sslcrl",
        "sslcrldir",
        "sslnegotiation",
        "gssencmode",
        "channel_binding",
    ];
    let mut known = vec![
        "username",
        "password",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslpassword",
    ];
    known.extend_from_slice(&extra_keys);
    ex.check_keys(Some(c), &path, &known, &[], Who::Agent);
    // The TLS settings go into every TCP connection made as this role (primary_conninfo,
    // pg_basebackup, pg_rewind and its check of the source); the agent's own connection uses
    // the Unix socket, where libpq does no TLS. An encrypted client key would need its
    // passphrase on a command line or in postgresql.conf: refused.
    if get(Some(c), "sslpassword").is_some_and(|v| !is_empty_setting(v)) {
        ex.refuse(
            Who::Agent,
            &jp(&path, "sslpassword"),
            "tandem does not use encrypted client keys (the passphrase would reach command lines); store the key unencrypted with mode 0600 (`openssl pkey -in KEY -out KEY.plain`) and remove sslpassword",
        );
    }
    if let Some(v) = get(Some(c), "sslmode").filter(|v| !is_empty_setting(v)) {
        const MODES: [&str; 6] = [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ];
        if !v.as_str().is_some_and(|m| MODES.contains(&m.trim())) {
            ex.refuse(
                Who::Agent,
                &jp(&path, "sslmode"),
                "expected one of disable, allow, prefer, require, verify-ca, verify-full (libpq's sslmode)",
            );
        }
    }
    let username = ex.req_string(Some(c), &path, "username", hint)?;
    let mut extra = BTreeMap::new();
    for k in extra_keys {
        if let Some(v) = ex.string(Some(c), &path, k)? {
            extra.insert(k.to_string(), v);
        }
    }
    Ok(Some(PgCredentials {
        username,
        password: ex.secret(Some(c), &path, "password")?,
        sslmode: ex.string(Some(c), &path, "sslmode")?,
        sslcert: ex.string(Some(c), &path, "sslcert")?,
        sslkey: ex.string(Some(c), &path, "sslkey")?,
        sslrootcert: ex.string(Some(c), &path, "sslrootcert")?,
        sslpassword: ex.secret(Some(c), &path, "sslpassword")?,
        extra,
    }))
}

fn postgresql_section(
    ex: &mut Ex,
    top: Obj,
    env: &BTreeMap<String, String>,
) -> Result<PostgresqlConfig> {
    let s = "postgresql";
    let m = ex.section(top, "", s)?;
    let create_methods = ex.list(m, s, "create_replica_methods", false)?;
    let mut known = vec![
        "listen",
        "connect_address",
        "data_dir",
        "config_dir",
        "bin_dir",
        "pgpass",
        "database",
        "authentication",
        "parameters",
        "pg_hba",
        "use_pg_rewind",
        "pg_ctl_timeout",
        "remove_data_directory_on_rewind_failure",
        "remove_data_directory_on_diverged_timelines",
        "basebackup",
        "callbacks",
        "create_replica_methods",
        // tandem's own connections to the local server always go through the Unix socket
        // (what `use_unix_socket: true` asks for); with `false` Patroni would use TCP to
        // `postgresql.listen`, which the same pg_hba lines must allow anyway.
        "use_unix_socket",
        "use_unix_socket_repl",
        "use_slots",
        "retry_timeout",
        "config_base_name",
    ];
    for cm in &create_methods {
        known.push(cm.as_str());
    }
    let per_role = "tandem does not apply per-role settings yet; put what every node needs in postgresql.parameters or postgresql.pg_hba and remove it";
    let pg_ident = "tandem does not write pg_ident.conf yet; remove it (and any map= option of pg_hba that needs it)";
    ex.check_keys(
        m,
        s,
        &known,
        &[
            ("proxy_address", "tandem does not publish a proxy address (the member key's proxy_url) yet; remove postgresql.proxy_address"),
            ("bin_name", "tandem runs the standard program names (pg_ctl, initdb, pg_basebackup, ...) from postgresql.bin_dir; remove postgresql.bin_name (a directory of symlinks can serve as bin_dir)"),
            ("rewind", "tandem does not pass extra options to pg_rewind yet; remove postgresql.rewind"),
            ("parameters_primary", per_role),
            ("parameters_replica", per_role),
            ("parameters_standby_leader", per_role),
            ("pg_hba_primary", per_role),
            ("pg_hba_replica", per_role),
            ("pg_hba_standby_leader", per_role),
            ("pg_ident", pg_ident),
            ("pg_ident_primary", pg_ident),
            ("pg_ident_replica", pg_ident),
            ("pg_ident_standby_leader", pg_ident),
            ("recovery_conf", "tandem does not apply extra recovery settings yet; remove postgresql.recovery_conf (restore_command can go in postgresql.parameters)"),
            ("custom_conf", "tandem writes postgresql.conf itself (over the server's own file, kept as postgresql.base.conf) and does not read a custom_conf yet; move its settings into postgresql.parameters and remove postgresql.custom_conf"),
            ("pre_promote", "tandem does not run a pre-promote (fencing) script yet, so a promotion would go ahead without it; remove postgresql.pre_promote"),
            ("before_stop", "tandem does not run a before_stop script yet; remove postgresql.before_stop"),
        ],
        Who::Agent,
    );
    if get(m, "use_slots").is_some() {
        ex.warn("'postgresql.use_slots' is read only from the dynamic configuration; set it in bootstrap.dcs.postgresql".to_string());
    }
    let others: Vec<&str> = create_methods
        .iter()
        .map(String::as_str)
        .filter(|cm| *cm != "basebackup")
        .collect();
    if !others.is_empty() {
        ex.refuse(
            Who::Agent,
            "postgresql.create_replica_methods",
            format!("tandem creates replicas with pg_basebackup only, not with {}; set create_replica_methods: [basebackup] or remove it", others.join(", ")),
        );
    }
    if let Some(base) = ex.string(m, s, "config_base_name")? {
        if base.trim() != "postgresql" {
            ex.refuse(
                Who::Agent,
                "postgresql.config_base_name",
                format!("'{base}': tandem writes postgresql.conf; remove postgresql.config_base_name or set it to postgresql"),
            );
        }
    }

    let listen = ex.req_string(
        m,
        s,
        "listen",
        "set it to PostgreSQL's listen address as host:port, e.g. 0.0.0.0:5432",
    )?;
    let (lhosts, lport) = listen_parts(&listen).map_err(|reason| {
        bad_address(
            ex,
            "postgresql.listen",
            "\"host:port\" (hosts may be a comma-separated list)",
            &listen,
            &reason,
        )
    })?;
    let connect_address = match ex
        .string(m, s, "connect_address")?
        .filter(|c| !c.trim().is_empty())
    {
        Some(c) => {
            if let Err(reason) = host_port(&c) {
                return Err(bad_address(
                    ex,
                    "postgresql.connect_address",
                    "\"host:port\"",
                    &c,
                    &reason,
                ));
            }
            c
        }
        None => {
            let first = lhosts.first().cloned().unwrap_or_default();
            default_connect(ex, s, &first, lport)
        }
    };
    let data_dir = PathBuf::from(ex.req_string(
        m,
        s,
        "data_dir",
        "set it to the PostgreSQL data directory, e.g. /var/lib/postgresql/data",
    )?);
    let config_dir = ex.path(m, s, "config_dir")?;
    if let Some(dir) = &config_dir {
        if dir.components().ne(data_dir.components()) {
            ex.refuse(
                Who::Agent,
                "postgresql.config_dir",
                format!("tandem writes postgresql.conf and pg_hba.conf in the data directory ({}), not in {}; remove postgresql.config_dir (or set it to data_dir)", data_dir.display(), dir.display()),
            );
        }
    }

    let home = env
        .get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok())
        .filter(|h| !h.is_empty());
    let pgpass_raw = ex
        .string(m, s, "pgpass")?
        .unwrap_or_else(|| "~/pgpass".to_string());
    let pgpass = match pgpass_raw.strip_prefix("~/") {
        Some(rest) => match &home {
            Some(h) => Path::new(h).join(rest),
            None => {
                let base = data_dir
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                let p = base.join(rest);
                ex.warn(format!(
                    "postgresql.pgpass: HOME is not set; using {}",
                    p.display()
                ));
                p
            }
        },
        None => PathBuf::from(pgpass_raw),
    };

    let auth_hint = "set it under postgresql.authentication";
    let auth = ex.section(m, s, "authentication")?;
    if auth.is_none() {
        return Err(ex.missing(
            m,
            s,
            "authentication",
            "add superuser and replication users, e.g. authentication: {superuser: {username: postgres, password: ...}, replication: {username: replicator, password: ...}}",
        ));
    }
    ex.check_keys(
        auth,
        "postgresql.authentication",
        &["superuser", "replication", "rewind"],
        &[],
        Who::Agent,
    );
    let superuser = match pg_credentials(
        ex,
        auth,
        "superuser",
        "set it to the PostgreSQL superuser name, e.g. postgres",
    )? {
        Some(c) => c,
        None => {
            return Err(ex.missing(
                auth,
                "postgresql.authentication",
                "superuser.username",
                "set it to the PostgreSQL superuser name, e.g. postgres",
            ))
        }
    };
    let replication = match pg_credentials(
        ex,
        auth,
        "replication",
        "set it to the replication user name, e.g. replicator",
    )? {
        Some(c) => c,
        None => {
            return Err(ex.missing(
                auth,
                "postgresql.authentication",
                "replication.username",
                "set it to the replication user name, e.g. replicator",
            ))
        }
    };
    let rewind = pg_credentials(
        ex,
        auth,
        "rewind",
        &format!("set the pg_rewind user name ({auth_hint})"),
    )?;

    let mut parameters = Map::new();
    if let Some(p) = ex.section(m, s, "parameters")? {
        for (k, v) in p {
            match v {
                Value::Null => continue,
                Value::Array(_) | Value::Object(_) => {
                    return Err(ex.expected(
                        &format!("postgresql.parameters.{k}"),
                        "a single value (string, number or boolean)",
                        v,
                    ))
                }
                _ => {}
            }
            if k == "listen_addresses" || k == "port" {
                ex.warn(format!("postgresql.parameters.{k} is ignored: tandem derives it from postgresql.listen"));
                continue;
            }
            if DYNAMIC_ONLY_PARAMS.contains(&k.as_str()) {
                ex.warn(format!(
                    "postgresql.parameters.{k} is taken only from the dynamic configuration (bootstrap.dcs.postgresql.parameters or `tandem edit-config`); the local value is ignored"
                ));
            }
            // As Patroni does: a value PostgreSQL would refuse is dropped, with a warning, rather
            // than stopping the postmaster from starting.
            if let Err(expected) = tandem_core::pgparams::check(k, v) {
                ex.warn(format!(
                    "postgresql.parameters.{k}: expected {expected}, got {}; parameter dropped (PostgreSQL would refuse to start with it)",
                    short(v)
                ));
                continue;
            }
            parameters.insert(k.clone(), v.clone());
        }
    }

    let mut callbacks = BTreeMap::new();
    let cb = ex.section(m, s, "callbacks")?;
    ex.check_keys(cb, "postgresql.callbacks", CALLBACKS, &[], Who::Agent);
    for name in CALLBACKS {
        if let Some(cmd) = ex.string(cb, "postgresql.callbacks", name)? {
            if crate::callbacks::split(&cmd).is_none() {
                return Err(ex.err(
                    &format!("postgresql.callbacks.{name}"),
                    format!("{cmd:?} is not a command line (empty, or an unclosed quote): give the script's path and its arguments, quoted as in a shell"),
                ));
            }
            callbacks.insert(name.to_string(), cmd);
        }
    }

    Ok(PostgresqlConfig {
        listen,
        connect_address,
        data_dir,
        config_dir,
        bin_dir: ex.path(m, s, "bin_dir")?,
        pgpass,
        database: ex
            .string(m, s, "database")?
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "postgres".to_string()),
        authentication: PgAuthentication {
            superuser,
            replication,
            rewind,
        },
        parameters,
        pg_hba: ex.list(m, s, "pg_hba", false)?,
        use_pg_rewind: ex.boolean(m, s, "use_pg_rewind")?,
        pg_ctl_timeout: ex.uint(m, s, "pg_ctl_timeout")?.unwrap_or(60),
        remove_data_directory_on_rewind_failure: ex
            .boolean(m, s, "remove_data_directory_on_rewind_failure")?
            .unwrap_or(false),
        remove_data_directory_on_diverged_timelines: {
            let on = ex
                .boolean(m, s, "remove_data_directory_on_diverged_timelines")?
                .unwrap_or(false);
            if on {
                ex.refuse(
                    Who::Agent,
                    "postgresql.remove_data_directory_on_diverged_timelines",
                    "tandem does not detect diverged timelines without pg_rewind yet; a former primary rejoins through pg_rewind (use_pg_rewind: true) and is re-cloned when that fails: set it to false or remove it",
                );
            }
            on
        },
        basebackup_args: user_options(
            ex,
            get(m, "basebackup"),
            "postgresql.basebackup",
            &["pgdata", "format", "wal-method", "xlog-method", "dbname"],
        )?,
        callbacks,
    })
}

fn tags_section(ex: &mut Ex, top: Obj) -> Result<Tags> {
    let s = "tags";
    let m = ex.section(top, "", s)?;
    let known = [
        "nofailover",
        "failover_priority",
        "noloadbalance",
        "clonefrom",
        "nosync",
        "nostream",
        "sync_priority",
        "replicatefrom",
    ];
    let nofailover = ex.boolean(m, s, "nofailover")?;
    let mut failover_priority = ex.int(m, s, "failover_priority")?;
    let nosync = ex.boolean(m, s, "nosync")?;
    let mut sync_priority = ex.int(m, s, "sync_priority")?;
    for (key, v) in [
        ("failover_priority", failover_priority),
        ("sync_priority", sync_priority),
    ] {
        if let Some(p) = v.filter(|p| *p < 0) {
            return Err(ex.expected(&jp(s, key), "an integer >= 0", &Value::from(p)));
        }
    }
    // An explicit boolean tag wins over a conflicting priority; the priority is then published as
    // the boolean implies, so every reader reaches the same answer.
    for (flag, flag_v, prio_name, prio) in [
        (
            "nofailover",
            nofailover,
            "failover_priority",
            &mut failover_priority,
        ),
        ("nosync", nosync, "sync_priority", &mut sync_priority),
    ] {
        if let (Some(b), Some(p)) = (flag_v, *prio) {
            if b == (p > 0) {
                let eff = if b { 0 } else { 1 };
                ex.warn(format!(
                    "tags: {flag}: {b} conflicts with {prio_name}: {p}; {flag} wins ({prio_name} {eff} is used)"
                ));
                *prio = Some(eff);
            }
        }
    }
    let replicatefrom = ex.string(m, s, "replicatefrom")?.filter(|r| !r.is_empty());
    let mut extra = Map::new();
    if let Some(m) = m {
        for (k, v) in m {
            if !known.contains(&k.as_str()) && !v.is_null() {
                extra.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Tags {
        nofailover: nofailover.unwrap_or(false),
        failover_priority,
        noloadbalance: ex.boolean(m, s, "noloadbalance")?.unwrap_or(false),
        clonefrom: ex.boolean(m, s, "clonefrom")?.unwrap_or(false),
        nosync: nosync.unwrap_or(false),
        nostream: ex.boolean(m, s, "nostream")?.unwrap_or(false),
        sync_priority,
        replicatefrom,
        extra,
    })
}

fn ctl_section(ex: &mut Ex, top: Obj) -> Result<CtlConfig> {
    let s = "ctl";
    let m = ex.section(top, "", s)?;
    ex.check_keys(
        m,
        s,
        &[
            "insecure",
            "cacert",
            "certfile",
            "keyfile",
            "authentication",
        ],
        &[(
            "keyfile_password",
            "tandem cannot read an encrypted private key yet; decrypt it (openssl pkey -in key.pem -out key-plain.pem), point ctl.keyfile at the result and remove ctl.keyfile_password",
        )],
        Who::Ctl,
    );
    Ok(CtlConfig {
        insecure: ex.boolean(m, s, "insecure")?.unwrap_or(false),
        cacert: ex.path(m, s, "cacert")?,
        certfile: ex.path(m, s, "certfile")?,
        keyfile: ex.path(m, s, "keyfile")?,
        authentication: ex.credentials(m, s, "authentication")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 point 4 / trust issue point 7: a reload may not change what identifies the node.
    #[test]
    fn reload_refuses_identity_changes() {
        let load = |y: &str| Config::from_yaml_str(y, &BTreeMap::new(), "test").unwrap();
        let base = "scope: demo\nname: node3\netcd3:\n  hosts: 127.0.0.1:2379\nrestapi:\n  listen: 127.0.0.1:8008\n  connect_address: 127.0.0.1:8008\npostgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  data_dir: /tmp/d3\n  authentication:\n    superuser: {username: postgres, password: a}\n    replication: {username: rep, password: b}\n";
        let old = load(base);
        assert!(old.restart_required_changes(&load(base)).is_empty());
        let changed = load(
            &base
                .replace("name: node3", "name: node2")
                .replace("/tmp/d3", "/tmp/d2"),
        );
        let why = old.restart_required_changes(&changed).join("; ");
        assert!(why.contains("name changed (node3 -> node2)"), "{why}");
        assert!(why.contains("postgresql.data_dir changed"), "{why}");
        let why = old
            .restart_required_changes(&load(&base.replace("127.0.0.1:2379", "127.0.0.1:2479")))
            .join("; ");
        assert!(
            why.contains("etcd3 protocol, hosts or credentials changed"),
            "{why}"
        );
        // Tags and parameters are what a reload is for.
        let tags = load(&format!("{base}tags:\n  nofailover: true\n"));
        assert!(old.restart_required_changes(&tags).is_empty());
    }

    #[test]
    fn dcs_url_forms() {
        let p = |u: &str| parse_dcs_url(u).unwrap();
        assert_eq!(
            p("etcd3://10.0.0.1:2380/svc"),
            (vec!["10.0.0.1:2380".to_string()], Some("/svc".to_string()))
        );
        assert_eq!(p("localhost"), (vec!["localhost:2379".to_string()], None));
        assert_eq!(
            p("etcd://:3000"),
            (vec!["localhost:3000".to_string()], None)
        );
        assert_eq!(
            p("etcd3://a:1,b:2/"),
            (vec!["a:1".to_string(), "b:2".to_string()], None)
        );
        assert_eq!(
            p("etcd3://[::1]:2379"),
            (vec!["[::1]:2379".to_string()], None)
        );
        let e = |u: &str| parse_dcs_url(u).unwrap_err().to_string();
        assert!(e("consul://h:8500").contains("etcd only"));
        assert!(e("etcd3://h:99999").contains("not a port number"));
        assert!(e("ftp://h").contains("unknown scheme"));
    }
    use serde_json::json;

    /// The seed's /etc/patroni/config.yml (postgres-01), verbatim including comments.
    const SEED: &str = r#"
# /etc/patroni/config.yml — postgres-01 (192.168.0.203)

scope: postgresql-cluster
# scope: cluster name — must be identical on all Patroni nodes
# Used as the key prefix in etcd to separate multiple Patroni clusters

namespace: /service/
# namespace: etcd key prefix — all cluster state is stored under /service/postgresql-cluster/

name: postgresql-01
# name: unique name for this node within the cluster

etcd3:
  hosts: 192.168.0.203:2379,192.168.0.204:2379,192.168.0.205:2379
  # etcd3: use the etcd v3 API (gRPC) — required for etcd 3.5+
  # The older "etcd:" key uses the v2 HTTP API which is deprecated
  protocol: https
  # protocol: https — Patroni connects to etcd over TLS
  cacert: /etc/etcd/certs/ca.crt
  # cacert: CA certificate to verify the etcd server certificates
  cert: /etc/etcd/certs/etcd-node1.crt
  # cert: client certificate presented to etcd for mutual TLS
  key: /etc/etcd/certs/etcd-node1.key
  # key: private key for the client certificate

restapi:
  listen: 0.0.0.0:8008
  # listen: Patroni's REST API listens on all interfaces on port 8008
  # HAProxy queries this API to determine which node is the current primary
  connect_address: 192.168.0.203:8008
  # connect_address: the address other nodes use to reach this node's REST API — must be the actual IP
  certfile: /etc/etcd/certs/server.pem
  # certfile: combined cert+key PEM file — enables TLS on the REST API
  # HAProxy uses check-ssl when querying /primary — the API must serve a certificate

bootstrap:
  dcs:
    ttl: 30
    # ttl: leader lease duration in seconds
    # If the primary does not renew within ttl seconds, it is considered failed
    # and a standby is promoted. Lower = faster failover; higher = more tolerance for slow networks.
    loop_wait: 10
    # loop_wait: how often Patroni checks cluster health (seconds)
    retry_timeout: 10
    # retry_timeout: how long Patroni retries a failed etcd or PostgreSQL operation before giving up
    maximum_lag_on_failover: 1048576
    # maximum_lag_on_failover: standbys more than 1MB behind the primary will not be promoted
    # Prevents promoting a very stale standby that would cause significant data loss
    postgresql:
      parameters:
        ssl: 'on'
        # ssl: enable TLS on PostgreSQL connections
        ssl_cert_file: /etc/etcd/certs/server.crt
        ssl_key_file: /etc/etcd/certs/server.key
      pg_hba:
        # pg_hba: Patroni writes this pg_hba.conf on bootstrap
        # hostssl: TLS is required — plain connections are rejected
        - hostssl replication replicator 127.0.0.1/32 md5
        - hostssl replication replicator 192.168.0.203/32 md5
        - hostssl replication replicator 192.168.0.204/32 md5
        - hostssl replication replicator 192.168.0.205/32 md5
        # Replication connections from all three PostgreSQL nodes
        - hostssl all all 127.0.0.1/32 md5
        - hostssl all all 0.0.0.0/0 md5
        # Application connections — TLS required, password authentication

  initdb:
    - encoding: UTF8
    - data-checksums
    # data-checksums: enables page-level checksums — required for pg_rewind
    # Detects corrupted blocks; slight write overhead (typically under 2%)

postgresql:
  listen: 0.0.0.0:5432
  connect_address: 192.168.0.203:5432
  # connect_address: this node's actual IP — used by standbys to connect for replication
  data_dir: /var/lib/postgresql/data
  # data_dir: PostgreSQL data directory — Patroni manages this directory entirely
  bin_dir: /usr/lib/postgresql/18/bin
  # bin_dir: directory containing pg_ctl, pg_basebackup, pg_rewind, initdb
  # Adjust the version number to match your PostgreSQL installation
  authentication:
    superuser:
      username: postgres
      password: strongpassword
      # Patroni uses these credentials for internal management connections
      # Change before production use
    replication:
      username: replicator
      password: replpassword
      # Patroni creates this role automatically during bootstrap
      # Change before production use
  parameters:
    max_connections: 100
    shared_buffers: 256MB
    # shared_buffers: PostgreSQL's main memory cache — typically 25% of total RAM
    # 256MB is a conservative default; increase based on available memory

tags:
  nofailover: false
  # nofailover: set to true on a node you never want automatically promoted (e.g. a DR standby)
  noloadbalance: false
  # noloadbalance: set to true to exclude this node from read replica routing
  clonefrom: false
  nosync: false

ctl:
  insecure: true
  # insecure: skip TLS certificate verification when patronictl calls the Patroni REST API
  # Required for switchover and failover commands — without it patronictl fails with an SSL error
  # Read-only commands (patronictl list) work without this because they use etcd, not the REST API
  # Do NOT add cacert or certfile here — a server certfile causes a bad TLS handshake
"#;

    const MINIMAL: &str = "
name: n1
scope: s
restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008'}
etcd3: {hosts: '127.0.0.1:2379'}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 10.0.0.1:5432
  data_dir: /data
  authentication:
    superuser: {username: postgres, password: secret-su}
    replication: {username: replicator, password: secret-repl}
";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry("HOME".to_string())
            .or_insert_with(|| "/home/pg".to_string());
        m
    }

    fn load(yaml: &str) -> Result<Config> {
        Config::from_yaml_str(yaml, &env(&[]), "node.yml")
    }

    fn err(yaml: &str) -> String {
        match load(yaml) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// MINIMAL with one line replaced (`from` must occur in it).
    fn edit(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from}");
        MINIMAL.replacen(from, to, 1)
    }

    #[test]
    fn seed_config_loads() {
        let c = load(SEED).expect("seed config.yml must load");
        assert_eq!(c.name, "postgresql-01");
        assert_eq!(c.scope, "postgresql-cluster");
        assert_eq!(c.base_path(), "/service/postgresql-cluster/");
        assert_eq!(
            c.etcd3.endpoints(),
            vec![
                "https://192.168.0.203:2379",
                "https://192.168.0.204:2379",
                "https://192.168.0.205:2379"
            ]
        );
        assert_eq!(
            c.etcd3.cacert.as_deref(),
            Some(Path::new("/etc/etcd/certs/ca.crt"))
        );
        assert_eq!(
            c.etcd3.key.as_deref(),
            Some(Path::new("/etc/etcd/certs/etcd-node1.key"))
        );
        assert_eq!(c.api_url(), "https://192.168.0.203:8008/patroni");
        assert_eq!(c.conn_url(), "postgres://192.168.0.203:5432/postgres");
        assert_eq!(c.restapi.listen, "0.0.0.0:8008");
        assert_eq!(
            c.bootstrap.initdb_args,
            vec!["--encoding=UTF8", "--data-checksums"]
        );
        assert!(c.bootstrap.present);
        assert_eq!(c.bootstrap.dcs["ttl"], json!(30));
        assert_eq!(
            c.bootstrap.dcs["postgresql"]["parameters"]["ssl"],
            json!("on")
        );
        assert_eq!(
            c.bootstrap.dcs["postgresql"]["pg_hba"]
                .as_array()
                .map(Vec::len),
            Some(6)
        );
        assert_eq!(c.postgresql.listen_port(), 5432);
        assert_eq!(c.postgresql.local_host(), "127.0.0.1");
        assert_eq!(
            c.postgresql.bin_dir.as_deref(),
            Some(Path::new("/usr/lib/postgresql/18/bin"))
        );
        assert_eq!(c.postgresql.authentication.superuser.username, "postgres");
        assert_eq!(
            c.postgresql
                .authentication
                .superuser
                .password
                .as_ref()
                .map(Secret::expose),
            Some("strongpassword")
        );
        assert_eq!(
            c.postgresql.authentication.replication.username,
            "replicator"
        );
        assert_eq!(c.postgresql.parameters["shared_buffers"], json!("256MB"));
        assert_eq!(c.postgresql.pgpass, PathBuf::from("/home/pg/pgpass"));
        assert_eq!(c.postgresql.pg_ctl_timeout, 60);
        assert!(c.tags.to_json().is_empty());
        assert!(c.tags.can_failover());
        assert!(c.ctl.insecure);
        // Only the note that max_connections is a dynamic-only parameter.
        assert_eq!(c.warnings.len(), 1, "{:#?}", c.warnings);
        assert!(
            c.warnings[0].contains("postgresql.parameters.max_connections"),
            "{:?}",
            c.warnings
        );
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("strongpassword") && !dbg.contains("replpassword"),
            "{dbg}"
        );
    }

    #[test]
    fn minimal_loads_without_warnings() {
        let c = load(MINIMAL).expect("loads");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.namespace, "/service");
        assert_eq!(c.base_path(), "/service/s/");
        assert_eq!(c.api_url(), "http://10.0.0.1:8008/patroni");
        assert_eq!(c.etcd3.endpoints(), vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.bootstrap.dcs, json!({}));
        assert!(!c.bootstrap.present);
    }

    #[test]
    fn missing_required_keys() {
        let cases: &[(&str, &str, &str)] = &[
            ("name: n1\n", "", "node.yml: name is missing: set it to this node's unique name"),
            ("scope: s\n", "", "node.yml: scope is missing: set it to the cluster name"),
            (
                "  data_dir: /data\n",
                "",
                "node.yml: postgresql.data_dir is missing: set it to the PostgreSQL data directory, e.g. /var/lib/postgresql/data",
            ),
            ("  listen: 127.0.0.1:5432\n", "", "node.yml: postgresql.listen is missing"),
            ("listen: '127.0.0.1:8008', ", "", "node.yml: restapi.listen is missing"),
            ("listen: '127.0.0.1:8008', ", "lisen: '127.0.0.1:8008', ", "(found 'restapi.lisen': a misspelling of 'listen'?)"),
            ("{username: postgres, password: secret-su}", "{password: x}", "postgresql.authentication.superuser.username is missing"),
            ("    replication: {username: replicator, password: secret-repl}\n", "", "postgresql.authentication.replication.username is missing"),
            ("name: n1\n", "name: ''\n", "name is missing"),
        ];
        for (from, to, want) in cases {
            let e = err(&edit(from, to));
            assert!(e.contains(want), "edit {from:?}: {e}");
        }
        let e = err("name: x\n");
        assert!(e.contains("scope is missing"), "{e}");
    }

    #[test]
    fn wrong_types_and_values() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "listen: '127.0.0.1:8008'",
                "listen: 8008",
                "node.yml: restapi.listen: expected \"host:port\", got \"8008\"",
            ),
            (
                "listen: '127.0.0.1:8008'",
                "listen: 'h:99999'",
                "restapi.listen: expected \"host:port\"",
            ),
            (
                "connect_address: '10.0.0.1:8008'",
                "connect_address: 'x'",
                "restapi.connect_address: expected \"host:port\"",
            ),
            (
                "  listen: 127.0.0.1:5432",
                "  listen: 127.0.0.1",
                "postgresql.listen: expected \"host:port\" (hosts may be",
            ),
            (
                "  connect_address: 10.0.0.1:5432",
                "  connect_address: [1]",
                "postgresql.connect_address: expected a string, got [1]",
            ),
            (
                "name: n1",
                "name: __patroni_strict_sync_replica_placeholder__",
                "name: '__patroni_strict_sync_replica_placeholder__' is reserved",
            ),
            ("name: n1", "name: a/b", "must not contain '/'"),
            (
                "name: n1",
                "name: n1\ntags: {nofailover: maybe}",
                "tags.nofailover: expected true or false, got \"maybe\"",
            ),
            (
                "name: n1",
                "name: n1\ntags: {failover_priority: -1}",
                "tags.failover_priority: expected an integer >= 0",
            ),
            (
                "restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008'}",
                "restapi: 5",
                "restapi: expected a mapping",
            ),
            (
                "  data_dir: /data",
                "  data_dir: /data\n  pg_ctl_timeout: soon",
                "postgresql.pg_ctl_timeout: expected a non-negative integer, got \"soon\"",
            ),
            (
                "  data_dir: /data",
                "  data_dir: /data\n  parameters: {work_mem: [1]}",
                "postgresql.parameters.work_mem: expected a single value",
            ),
            (
                "name: n1",
                "name: n1\nctl: {authentication: {username: u}}",
                "ctl.authentication.password is missing",
            ),
            (
                "name: n1",
                "name: n1\nctl: {authentication: {username: u, password: [1]}}",
                "ctl.authentication.password: expected a string",
            ),
            (
                "etcd3: {hosts: '127.0.0.1:2379'}",
                "etcd3: {hosts: '127.0.0.1:2379', protocol: ftp}",
                "etcd3.protocol: expected \"http\" or \"https\"",
            ),
            (
                "etcd3: {hosts: '127.0.0.1:2379'}",
                "etcd3: {hosts: 'a:b:c:x'}",
                "etcd3.hosts: expected \"host:port\"",
            ),
            (
                "etcd3: {hosts: '127.0.0.1:2379'}",
                "etcd3: {hosts: 'a:1', username: u}",
                "etcd3.password is missing",
            ),
            (
                "etcd3: {hosts: '127.0.0.1:2379'}",
                "consul: {host: 'a:1'}",
                "consul: tandem supports only etcd",
            ),
            (
                "restapi: {",
                "restapi: {verify_client: required, ",
                "restapi.cafile is missing",
            ),
            (
                "restapi: {",
                "restapi: {verify_client: sometimes, ",
                "restapi.verify_client: expected none, optional or required",
            ),
            (
                "name: n1",
                "name: n1\nbootstrap: {method: wal_e}",
                "bootstrap.method: custom bootstrap method 'wal_e' is not supported",
            ),
            (
                "name: n1",
                "name: n1\nbootstrap: {dcs: [1]}",
                "bootstrap.dcs: expected a mapping",
            ),
        ];
        for (from, to, want) in cases {
            let e = err(&edit(from, to));
            assert!(e.contains(want), "edit {to:?}: {e}");
        }
    }

    #[test]
    fn secrets_never_echoed_in_errors() {
        let e = err(&edit("password: secret-su", "password: {nested: hunter2}"));
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn bad_yaml_has_location() {
        let e = err("name: n1\nscope: [unclosed\n");
        assert!(e.starts_with("node.yml: invalid YAML at line"), "{e}");
        let e = err("- just\n- a list\n");
        assert!(e.contains("expected a mapping of settings"), "{e}");
    }

    #[test]
    fn unknown_key_warnings() {
        let y = edit(
            "name: n1",
            "name: n1\nfoo: 1\nttl: 5\nlog: {level: INFO}\nwatchdog: {mode: automatic}\nthread_pool_size: 5",
        )
        .replacen("restapi: {", "restapi: {lisen_x: 1, request_queue_size: 5, ", 1)
        .replacen("  data_dir: /data", "  data_dir: /data\n  dta_dir: /x", 1);
        let c = load(&y).expect("loads");
        let w = c.warnings.join("\n");
        for want in [
            "unknown key 'foo' (ignored)",
            "'ttl' at the top level has no effect",
            "unknown key 'restapi.lisen_x' (ignored)",
            "unknown key 'postgresql.dta_dir' (ignored; did you mean 'data_dir'?)",
            "watchdog.mode: automatic: tandem does not drive a watchdog and runs without one, as Patroni does in automatic mode",
            "log.level has no effect: tandem logs to standard error, at the level set by RUST_LOG",
            "'thread_pool_size' has no effect in tandem",
            "restapi.request_queue_size has no effect in tandem",
        ] {
            assert!(w.contains(want), "missing {want:?} in:\n{w}");
        }
        assert!(!w.contains("unknown key 'ttl'"), "{w}");
        assert!(!w.contains("unknown key 'log'"), "{w}");

        let c = load(&edit("name: n1", "name: n1\nwatchdog: {mode: 'off'}")).expect("loads");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let c = load(&edit(
            "name: n1",
            "name: n1\nbootstrap: {dcs: {ttl: 10, loop_wiat: 3, postgresql: {data_dir: /x}}}",
        ))
        .expect("loads");
        let w = c.warnings.join("\n");
        for want in [
            "unknown key 'bootstrap.dcs.loop_wiat' (ignored; did you mean 'loop_wait'?)",
            "'bootstrap.dcs.postgresql.data_dir' is ignored: it is a local setting",
        ] {
            assert!(w.contains(want), "missing {want:?} in:\n{w}");
        }
    }

    /// MINIMAL with `line` added under `section` (a top-level key, indented two spaces), or at
    /// the top level (replacing MINIMAL's line of the same key, if any).
    fn with(section: &str, line: &str) -> String {
        if section.is_empty() {
            let key = format!("{}:", line.split(':').next().unwrap_or_default());
            return match MINIMAL.lines().find(|l| l.starts_with(&key)) {
                Some(old) => MINIMAL.replacen(old, line, 1),
                None => format!("{MINIMAL}{line}\n"),
            };
        }
        let head = format!("\n{section}:\n");
        if MINIMAL.contains(&head) {
            MINIMAL.replacen(&head, &format!("{head}  {line}\n"), 1)
        } else {
            format!("{MINIMAL}{section}:\n  {line}\n")
        }
    }

    /// A key that tandem knows but does not carry out refuses the file, naming the key and the
    /// fix; before, each of these was a warning ("not supported by tandem yet (ignored)") or
    /// nothing at all, and the agent ran without what the file asked for.
    #[test]
    fn known_but_unimplemented_keys_are_refused() {
        // (section, line, key path the error names, words of the fix)
        let cases: &[(&str, &str, &str, &str)] = &[
            ("", "watchdog: {mode: required}", "watchdog.mode", "set watchdog.mode: off"),
            ("", "watchdog: {mode: require, device: /dev/watchdog}", "watchdog.mode", "does not drive a watchdog"),
            ("", "citus: {group: 0, database: citus}", "citus", "remove the citus section"),
            ("", "log: {dir: /var/log/patroni}", "log.dir", "remove log.dir"),
            ("", "consul: {host: 'c:8500'}", "consul", "remove the 'consul' section"),
            ("", "etcd: {host: 'b:2379'}", "etcd", "remove the 'etcd' section"),
            ("", "etcd3: {hosts: 'a:2379', srv: example.org}", "etcd3.srv", "list the etcd members in etcd3.hosts"),
            ("", "etcd3: {hosts: 'a:2379', proxy: 'http://p:3128'}", "etcd3.proxy", "remove etcd3.proxy"),
            ("", "etcd3: {hosts: 'a:2379', retry_timeout: 5}", "etcd3.retry_timeout", "remove etcd3.retry_timeout"),
            ("", "restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008', ciphers: 'ECDHE'}", "restapi.ciphers", "remove restapi.ciphers"),
            ("", "restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008', crlfile: /crl.pem}", "restapi.crlfile", "remove restapi.crlfile"),
            ("", "restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008', keyfile_password: hunter2}", "restapi.keyfile_password", "decrypt it"),
            ("", "restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008', server_tokens: minimal}", "restapi.server_tokens", "set it to original"),
            ("", "bootstrap: {users: {admin: {password: x}}}", "bootstrap.users", "remove bootstrap.users"),
            ("", "bootstrap: {pg_hba: ['host all all 0.0.0.0/0 md5']}", "bootstrap.pg_hba", "bootstrap.dcs.postgresql.pg_hba"),
            ("", "bootstrap: {post_bootstrap: /usr/local/bin/setup.sh}", "bootstrap.post_bootstrap", "remove bootstrap.post_bootstrap"),
            ("", "bootstrap: {post_init: /usr/local/bin/setup.sh}", "bootstrap.post_init", "remove bootstrap.post_init"),
            ("", "bootstrap: {dcs: {synchronous_mode: true, primary_stop_timeout: 5}}", "bootstrap.dcs.primary_stop_timeout", "set primary_stop_timeout: 0"),
            ("", "bootstrap: {dcs: {standby_cluster: {host: 10.0.0.9}}}", "bootstrap.dcs.standby_cluster", "remove standby_cluster"),
            ("", "bootstrap: {dcs: {slots: {s1: {type: physical}}}}", "bootstrap.dcs.slots", "remove slots"),
            ("", "bootstrap: {dcs: {ignore_slots: [{name: x}]}}", "bootstrap.dcs.ignore_slots", "remove ignore_slots"),
            ("", "bootstrap: {dcs: {postgresql: {pg_ident: ['m a b']}}}", "bootstrap.dcs.postgresql.pg_ident", "pg_ident.conf"),
            ("", "bootstrap: {dcs: {ttl: abc}}", "bootstrap.dcs.ttl", "expected an integer number of seconds"),
            ("", "bootstrap: {dcs: {member_slots_ttl: soon}}", "bootstrap.dcs.member_slots_ttl", "such as \"30min\""),
            ("", "bootstrap: {dcs: {postgresql: {parameters: {max_connections: abc}}}}", "bootstrap.dcs.postgresql.parameters.max_connections", "expected an integer from 25"),
            ("postgresql", "proxy_address: '10.0.0.1:6432'", "postgresql.proxy_address", "remove postgresql.proxy_address"),
            ("postgresql", "bin_name: {pg_ctl: pg_ctl15}", "postgresql.bin_name", "remove postgresql.bin_name"),
            ("postgresql", "rewind: [{checkpoint: fast}]", "postgresql.rewind", "remove postgresql.rewind"),
            ("postgresql", "parameters_primary: {work_mem: 8MB}", "postgresql.parameters_primary", "per-role"),
            ("postgresql", "parameters_replica: {work_mem: 8MB}", "postgresql.parameters_replica", "per-role"),
            ("postgresql", "parameters_standby_leader: {work_mem: 8MB}", "postgresql.parameters_standby_leader", "per-role"),
            ("postgresql", "pg_hba_primary: ['host all all 0.0.0.0/0 md5']", "postgresql.pg_hba_primary", "per-role"),
            ("postgresql", "pg_hba_replica: ['host all all 0.0.0.0/0 md5']", "postgresql.pg_hba_replica", "per-role"),
            ("postgresql", "pg_hba_standby_leader: ['x']", "postgresql.pg_hba_standby_leader", "per-role"),
            ("postgresql", "pg_ident: ['m a b']", "postgresql.pg_ident", "pg_ident.conf"),
            ("postgresql", "pg_ident_replica: ['m a b']", "postgresql.pg_ident_replica", "pg_ident.conf"),
            ("postgresql", "recovery_conf: {restore_command: 'cp %f %p'}", "postgresql.recovery_conf", "remove postgresql.recovery_conf"),
            ("postgresql", "custom_conf: /etc/pg/custom.conf", "postgresql.custom_conf", "remove postgresql.custom_conf"),
            ("postgresql", "config_base_name: pg", "postgresql.config_base_name", "set it to postgresql"),
            ("postgresql", "pre_promote: /usr/local/bin/fence.sh", "postgresql.pre_promote", "remove postgresql.pre_promote"),
            ("postgresql", "before_stop: /usr/local/bin/stop.sh", "postgresql.before_stop", "remove postgresql.before_stop"),
            ("postgresql", "config_dir: /etc/postgresql", "postgresql.config_dir", "remove postgresql.config_dir"),
            ("postgresql", "create_replica_methods: [wal_e, basebackup]\n  wal_e: {command: x}", "postgresql.create_replica_methods", "not with wal_e"),
        ];
        for (section, line, path, fix) in cases {
            let y = with(section, line);
            let e = err(&y);
            assert!(
                e.starts_with(&format!("node.yml: {path}: ")) && e.contains(fix),
                "{line}:\n{e}"
            );
            assert!(!e.contains("hunter2"), "a password in {e}");
        }
        // A role's TLS settings are carried out; an encrypted key (its passphrase) and a
        // sslmode libpq does not know are refused, without showing the passphrase.
        for (k, v, expect) in [
            ("sslpassword", "hunter2", "remove sslpassword"),
            ("sslmode", "verify_full", "expected one of disable"),
        ] {
            let y = edit(
                "replication: {username: replicator, password: secret-repl}",
                &format!(
                    "replication: {{username: replicator, password: secret-repl, {k}: '{v}'}}"
                ),
            );
            let e = err(&y);
            assert!(
                e.starts_with(&format!(
                    "node.yml: postgresql.authentication.replication.{k}: "
                )) && e.contains(expect)
                    && !e.contains("hunter2"),
                "{k}: {e}"
            );
        }
        let y = edit(
            "replication: {username: replicator, password: secret-repl}",
            "replication: {username: replicator, password: secret-repl, sslmode: verify-full, sslrootcert: /ca.crt, sslcert: /c.crt, sslkey: /c.key, sslcrl: /crl, gssencmode: disable, channel_binding: require}",
        );
        let c = load(&y).expect("a role's TLS settings are accepted");
        let r = &c.postgresql.authentication.replication;
        assert_eq!(r.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(r.sslrootcert.as_deref(), Some("/ca.crt"));
        assert_eq!(
            r.extra.get("channel_binding").map(String::as_str),
            Some("require")
        );
        // Several at once: all are named, one per line.
        let y = with("", "watchdog: {mode: required}\ncitus: {group: 1}");
        let e = err(&y);
        assert!(
            e.starts_with("node.yml: 2 settings that tandem does not carry out")
                && e.contains("\n  watchdog.mode: ")
                && e.contains("\n  citus: "),
            "{e}"
        );
        // Empty values ask for nothing; what tandem does carry out is accepted.
        for (section, line) in [
            ("", "watchdog: {mode: 'off', device: /dev/watchdog}"),
            ("", "watchdog: false"),
            ("", "citus:"),
            ("postgresql", "pg_ident: []"),
            ("postgresql", "config_dir: /data/"),
            ("postgresql", "config_base_name: postgresql"),
            ("postgresql", "create_replica_methods: [basebackup]"),
            ("postgresql", "use_unix_socket: true"),
            ("", "etcd3: {hosts: 'a:2379', use_proxies: true}"),
            ("", "restapi: {listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008', server_tokens: original}"),
            ("", "bootstrap: {dcs: {slots: {}, standby_cluster: null, member_slots_ttl: 30min}}"),
        ] {
            let y = with(section, line);
            load(&y).unwrap_or_else(|e| panic!("{line}: {e:#}"));
        }
        let y = edit(
            "replication: {username: replicator, password: secret-repl}",
            "replication: {username: replicator, password: secret-repl, sslmode: prefer}",
        );
        load(&y).expect("sslmode: prefer is what tandem does");
    }

    /// The command-line tools use only `etcd3`, `ctl` and the names: a node's agent-only setting
    /// does not stop `tandem list`, and a `ctl` setting does not stop the agent; each is a
    /// warning there instead.
    #[test]
    fn refusals_stop_only_whom_they_concern() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yml");
        let agent_only = with("postgresql", "pre_promote: /fence.sh");
        std::fs::write(&path, &agent_only).unwrap();
        let c = Config::load_for_ctl(&path).expect("the CLI loads it");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("postgresql.pre_promote: ")
                    && w.ends_with("(`tandem agent` refuses to start with it)")),
            "{:?}",
            c.warnings
        );
        assert!(Config::load(&path).is_err());

        let ctl_only = format!("{MINIMAL}ctl: {{keyfile: /k.pem, keyfile_password: hunter2}}\n");
        std::fs::write(&path, &ctl_only).unwrap();
        let e = format!("{:#}", Config::load_for_ctl(&path).unwrap_err());
        assert!(
            e.contains("ctl.keyfile_password: ") && !e.contains("hunter2"),
            "{e}"
        );
        let c = Config::load(&path).expect("the agent loads it");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("ctl.keyfile_password: ")),
            "{:?}",
            c.warnings
        );

        let both = with("", "citus: {group: 0}");
        std::fs::write(&path, &both).unwrap();
        assert!(Config::load_for_ctl(&path).is_err());
        assert!(Config::load(&path).is_err());
    }

    /// Issue 16 point 11: the warnings of an invalid `bootstrap.dcs` value were printed twice
    /// (once from the file's check, once more when the agent parsed `bootstrap.dcs` again). The
    /// file's check now refuses it, once, naming the key; the agent never starts with it.
    #[test]
    fn an_invalid_bootstrap_dcs_value_is_reported_once() {
        let e = err(&with("", "bootstrap: {dcs: {ttl: abc, loop_wait: 1}}"));
        assert_eq!(e.matches("ttl").count(), 1, "{e}");
        assert!(
            e.starts_with(
                "node.yml: bootstrap.dcs.ttl: expected an integer number of seconds, got \"abc\""
            ),
            "{e}"
        );
        let e = err(&with("", "bootstrap: {dcs: {ttl: 1}}"));
        assert!(
            e.contains("bootstrap.dcs: ttl=1 is below tandem's minimum of 3 s"),
            "{e}"
        );
    }

    /// Local parameters PostgreSQL would refuse are dropped with a warning (as Patroni does),
    /// instead of stopping the postmaster.
    #[test]
    fn invalid_local_parameters_are_dropped() {
        let y = with(
            "postgresql",
            "parameters: {work_mem: lots, shared_buffers: 256MB, wal_log_hints: maybe, application_name: x}",
        );
        let c = load(&y).expect("loads");
        let mut kept: Vec<&str> = c.postgresql.parameters.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["application_name", "shared_buffers"]);
        let w = c.warnings.join("\n");
        assert!(
            w.contains(
                "postgresql.parameters.work_mem: expected an integer from 64 to 2147483647 kB"
            ) && w.contains("got \"lots\"; parameter dropped"),
            "{w}"
        );
        assert!(
            w.contains("postgresql.parameters.wal_log_hints: expected a boolean"),
            "{w}"
        );
    }

    /// Issue 16 point 11: serde_yaml reports a duplicate key at the start of its mapping; the
    /// message now names the duplicate's own line, and the first one's.
    #[test]
    fn duplicate_key_names_its_own_line() {
        let cases: &[(&str, &str)] = &[
            (
                "name: n1\nscope: s\nfoo: 1\nname: n2\n",
                "node.yml: invalid YAML at line 4, column 1: duplicate key 'name' (first given at line 1)",
            ),
            (
                "name: n1\npostgresql:\n  listen: a:1\n  # comment\n\n  data_dir: /x\n  nested:\n    listen: 1\n  listen: b:2\nscope: s\n",
                "node.yml: invalid YAML at line 9, column 3: duplicate key 'listen' (first given at line 3)",
            ),
            (
                "items:\n  - a: 1\n    b: 2\n    a: 3\n",
                "node.yml: invalid YAML at line 4, column 5: duplicate key 'a' (first given at line 2)",
            ),
            (
                "x:\n  \"k y\": 1\n  'k y': 2\n",
                "node.yml: invalid YAML at line 3, column 3: duplicate key 'k y' (first given at line 2)",
            ),
            (
                "x:\n  5: 1\n  5: 2\n",
                "node.yml: invalid YAML at line 3, column 3: duplicate key '5' (first given at line 2)",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(yaml);
            assert!(e.starts_with(want), "{yaml}\n{e}");
        }
        // A flow mapping keeps serde_yaml's own location.
        let e = err("x: {a: 1, a: 2}\n");
        assert!(e.starts_with("node.yml: invalid YAML at line 1"), "{e}");
    }

    /// Issue 16 point 11: `127.0.0.1:0` was refused as `expected "host:port"`, which it is;
    /// the message now says that port 0 is the problem.
    #[test]
    fn port_zero_is_named() {
        let cases = [
            (
                edit("listen: '127.0.0.1:8008'", "listen: '127.0.0.1:0'"),
                "restapi.listen",
            ),
            (
                edit(
                    "connect_address: '10.0.0.1:8008'",
                    "connect_address: '10.0.0.1:0'",
                ),
                "restapi.connect_address",
            ),
            (
                edit("listen: 127.0.0.1:5432", "listen: 127.0.0.1:0"),
                "postgresql.listen",
            ),
            (
                edit(
                    "connect_address: 10.0.0.1:5432",
                    "connect_address: '10.0.0.1:0'",
                ),
                "postgresql.connect_address",
            ),
            (
                edit("hosts: '127.0.0.1:2379'", "hosts: '127.0.0.1:0'"),
                "etcd3.hosts",
            ),
        ];
        for (y, path) in cases {
            let e = err(&y);
            assert!(
                e.starts_with(&format!("node.yml: {path}: expected \"host:port\""))
                    && e.contains(":0\": port 0 is not allowed"),
                "{e}"
            );
        }
        let e = err(&edit(
            "listen: '127.0.0.1:8008'",
            "listen: '127.0.0.1:99999'",
        ));
        assert!(e.contains("'99999' is not a port number (1-65535)"), "{e}");
        let e = err(&edit("listen: '127.0.0.1:8008'", "listen: '127.0.0.1'"));
        assert!(e.contains("no port given"), "{e}");
    }

    fn yamlish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = prop_oneof![
            Just("name".to_string()),
            Just("scope".to_string()),
            Just("postgresql".to_string()),
            Just("restapi".to_string()),
            Just("etcd3".to_string()),
            Just("bootstrap".to_string()),
            Just("dcs".to_string()),
            Just("watchdog".to_string()),
            Just("mode".to_string()),
            Just("listen".to_string()),
            Just("parameters".to_string()),
            Just("authentication".to_string()),
            Just("127.0.0.1:0".to_string()),
            Just("[::1]:".to_string()),
            "[a-z_]{1,8}",
            "[ -~]{0,6}",
        ];
        let line = (
            0usize..4,
            token.clone(),
            prop_oneof![
                Just(": "),
                Just(":"),
                Just(" - "),
                Just(": {"),
                Just(": ["),
                Just(""),
                Just(": &a "),
                Just(": *a")
            ],
            token,
        )
            .prop_map(|(indent, k, sep, v)| format!("{}{k}{sep}{v}", "  ".repeat(indent)));
        proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
    }

    proptest::proptest! {
        /// Any YAML-ish text, alone or laid over a valid file, gives a configuration or a clear
        /// error naming the file, never a panic.
        #[test]
        fn loader_never_panics(text in yamlish(), tail in yamlish()) {
            for yaml in [text.clone(), format!("{MINIMAL}{text}"), format!("{MINIMAL}postgresql:\n{tail}")] {
                match Config::from_yaml_str(&yaml, &env(&[]), "node.yml") {
                    Ok(c) => proptest::prop_assert!(!c.name.is_empty()),
                    Err(e) => {
                        let e = format!("{e:#}");
                        proptest::prop_assert!(e.starts_with("node.yml: "), "{}", e);
                        proptest::prop_assert!(!e.contains("secret-su") && !e.contains("secret-repl"), "{}", e);
                    }
                }
            }
        }

        /// Any JSON tree (as from YAML or PATRONI_CONFIGURATION) under the known sections.
        #[test]
        fn build_never_panics(section in "(postgresql|restapi|etcd3|bootstrap|watchdog|ctl|tags|log|citus)", value in json_value()) {
            let mut tree = serde_json::from_str::<Value>(&serde_json::to_string(&parse_yaml(MINIMAL, "m").unwrap()).unwrap()).unwrap();
            if let Value::Object(top) = &mut tree {
                top.insert(section.clone(), value.clone());
            }
            for purpose in [Purpose::Agent, Purpose::Ctl] {
                if let Err(e) = build(tree.clone(), &env(&[]), "node.yml", true, purpose) {
                    let e = format!("{e:#}");
                    proptest::prop_assert!(e.starts_with("node.yml: "), "{}", e);
                }
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("listen".to_string()),
            Just("connect_address".to_string()),
            Just("data_dir".to_string()),
            Just("authentication".to_string()),
            Just("superuser".to_string()),
            Just("username".to_string()),
            Just("parameters".to_string()),
            Just("dcs".to_string()),
            Just("mode".to_string()),
            Just("hosts".to_string()),
            Just("sslmode".to_string()),
            Just("create_replica_methods".to_string()),
            Just("initdb".to_string()),
            Just("basebackup".to_string()),
            Just("ttl".to_string()),
            "[a-z_]{1,10}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::String),
            "[a-z0-9.:\\[\\]]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn connect_address_defaults() {
        let y = edit("connect_address: '10.0.0.1:8008'", "connect_address: ")
            .replacen("listen: '127.0.0.1:8008'", "listen: '0.0.0.0:8008'", 1)
            .replacen(
                "  listen: 127.0.0.1:5432\n  connect_address: 10.0.0.1:5432\n",
                "  listen: '*,10.1.1.1:5433'\n",
                1,
            );
        let c = load(&y).expect("loads");
        assert_eq!(c.restapi.connect_address, "127.0.0.1:8008");
        assert_eq!(c.postgresql.connect_address, "127.0.0.1:5433");
        assert_eq!(c.postgresql.listen_port(), 5433);
        assert_eq!(c.postgresql.local_host(), "127.0.0.1");
        assert_eq!(
            c.warnings
                .iter()
                .filter(|w| w.contains("connect_address is not set"))
                .count(),
            2,
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn etcd_forms() {
        // (etcd section YAML, endpoints, extra warning substring or "")
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "etcd3: {hosts: [a:1, 'b:2']}",
                &["http://a:1", "http://b:2"],
                "",
            ),
            (
                "etcd3: {hosts: 'a:1, b:2'}",
                &["http://a:1", "http://b:2"],
                "",
            ),
            ("etcd3: {host: 'a:1'}", &["http://a:1"], ""),
            ("etcd3: {host: a}", &["http://a:2379"], ""),
            ("etcd3: {url: 'https://a:1'}", &["https://a:1"], ""),
            (
                "etcd3: {urls: ['https://a:1/', 'https://b:2']}",
                &["https://a:1", "https://b:2"],
                "",
            ),
            (
                "etcd3: {host: 'a:1', cacert: /ca}",
                &["https://a:1"],
                "using https because etcd3.cacert",
            ),
            (
                "etcd: {host: 'a:1'}",
                &["http://a:1"],
                "tandem always talks to etcd with the v3 API",
            ),
            ("", &["http://127.0.0.1:2379"], "no 'etcd3' section"),
            (
                "etcd3: {}",
                &["http://127.0.0.1:2379"],
                "no host, hosts or url given",
            ),
            ("etcd3: {host: '[::1]:1'}", &["http://[::1]:1"], ""),
        ];
        for (sect, want, warn) in cases {
            let c = load(&edit("etcd3: {hosts: '127.0.0.1:2379'}", sect))
                .unwrap_or_else(|e| panic!("{sect}: {e:#}"));
            assert_eq!(c.etcd3.endpoints(), *want, "{sect}");
            if warn.is_empty() {
                assert!(c.warnings.is_empty(), "{sect}: {:?}", c.warnings);
            } else {
                assert!(
                    c.warnings.iter().any(|w| w.contains(warn)),
                    "{sect}: {:?}",
                    c.warnings
                );
            }
        }
        let c = load(&edit(
            "etcd3: {hosts: '127.0.0.1:2379'}",
            "etcd3: {host: 'a:1', username: u, password: p}",
        ))
        .expect("loads");
        assert_eq!(c.etcd3.username.as_deref(), Some("u"));
        assert_eq!(c.etcd3.password.as_ref().map(Secret::expose), Some("p"));
    }

    #[test]
    fn initdb_forms() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            (
                "[data-checksums, {encoding: UTF8}]",
                Ok(&["--data-checksums", "--encoding=UTF8"]),
            ),
            (
                "{encoding: UTF8, locale: C, data-checksums: true, no-sync-x: false}",
                Ok(&["--data-checksums", "--encoding=UTF8", "--locale=C"]),
            ),
            (
                "['--data-checksums', {wal-segsize: 32}]",
                Ok(&["--data-checksums", "--wal-segsize=32"]),
            ),
            ("[{data-checksums: }]", Ok(&["--data-checksums"])),
            ("[]", Ok(&[])),
            (
                "[pgdata]",
                Err("bootstrap.initdb: option 'pgdata' is not allowed"),
            ),
            ("{pwfile: /x}", Err("option 'pwfile' is not allowed")),
            (
                "[{sync-only: true}]",
                Err("option 'sync-only' is not allowed"),
            ),
            (
                "['encoding UTF8']",
                Err("bootstrap.initdb[0]: expected an option name"),
            ),
            (
                "[[a]]",
                Err("bootstrap.initdb[0]: expected an option name or a `name: value` pair"),
            ),
            (
                "data-checksums",
                Err("bootstrap.initdb: expected a list of options"),
            ),
            (
                "{encoding: [a]}",
                Err("bootstrap.initdb.encoding: expected a single value"),
            ),
        ];
        for (form, want) in cases {
            let y = edit(
                "name: n1",
                &format!("name: n1\nbootstrap:\n  initdb: {form}"),
            );
            match (load(&y), want) {
                (Ok(c), Ok(args)) => assert_eq!(c.bootstrap.initdb_args, *args, "{form}"),
                (Err(e), Err(msg)) => assert!(format!("{e:#}").contains(msg), "{form}: {e:#}"),
                (got, want) => panic!("{form}: got {got:?}, want {want:?}"),
            }
        }
        let y = edit(
            "  data_dir: /data",
            "  data_dir: /data\n  basebackup: [verbose, {max-rate: 100M}, {checkpoint: fast}]",
        );
        assert_eq!(
            load(&y).expect("loads").postgresql.basebackup_args,
            vec!["--verbose", "--max-rate=100M", "--checkpoint=fast"]
        );
    }

    #[test]
    fn env_overrides() {
        let e = env(&[
            ("PATRONI_NAME", "from-env"),
            ("PATRONI_NAMESPACE", "ns"),
            ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:9008"),
            ("PATRONI_RESTAPI_USERNAME", "admin"),
            ("PATRONI_RESTAPI_PASSWORD", "envpw"),
            ("PATRONI_RESTAPI_ALLOWLIST", "10.0.0.0/8, 127.0.0.1"),
            ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "true"),
            ("PATRONI_RESTAPI_HTTP_EXTRA_HEADERS", "X-A: 1, X-B: two"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/env/data"),
            ("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass0"),
            ("PATRONI_SUPERUSER_PASSWORD", "su-env"),
            ("PATRONI_REWIND_USERNAME", "rewinder"),
            ("PATRONI_REPLICATION_SSLMODE", "prefer"),
            ("PATRONI_ETCD3_HOSTS", "['e1:2379', 'e2:2379']"),
            ("PATRONI_ETCD3_PROTOCOL", "https"),
            ("PATRONI_ETCD3_USERNAME", "eu"),
            ("PATRONI_ETCD3_PASSWORD", "ep"),
            ("PATRONI_CTL_INSECURE", "yes"),
            ("PATRONI_CTL_CACERT", "/ca.pem"),
            ("PATRONI_CONFIGURATION", "name: ignored"),
        ]);
        let c = Config::from_yaml_str(MINIMAL, &e, "node.yml").expect("loads");
        assert_eq!(c.name, "from-env");
        assert_eq!(c.base_path(), "/ns/s/");
        assert_eq!(c.restapi.listen, "0.0.0.0:9008");
        assert_eq!(c.restapi.connect_address, "10.0.0.1:8008");
        let auth = c.restapi.authentication.as_ref().expect("auth");
        assert_eq!(
            (auth.username.as_str(), auth.password.expose()),
            ("admin", "envpw")
        );
        assert_eq!(c.restapi.allowlist, vec!["10.0.0.0/8", "127.0.0.1"]);
        assert!(c.restapi.allowlist_include_members);
        assert_eq!(
            c.restapi.http_extra_headers.get("X-B").map(String::as_str),
            Some("two")
        );
        assert_eq!(
            c.restapi.http_extra_headers.get("X-A").map(String::as_str),
            Some("1")
        );
        assert_eq!(c.postgresql.data_dir, PathBuf::from("/env/data"));
        assert_eq!(c.postgresql.pgpass, PathBuf::from("/tmp/pgpass0"));
        let a = &c.postgresql.authentication;
        assert_eq!(a.superuser.username, "postgres");
        assert_eq!(
            a.superuser.password.as_ref().map(Secret::expose),
            Some("su-env")
        );
        assert_eq!(a.replication.sslmode.as_deref(), Some("prefer"));
        assert_eq!(
            a.rewind.as_ref().map(|r| r.username.as_str()),
            Some("rewinder")
        );
        assert_eq!(
            c.etcd3.endpoints(),
            vec!["https://e1:2379", "https://e2:2379"]
        );
        assert_eq!(c.etcd3.username.as_deref(), Some("eu"));
        assert!(c.ctl.insecure);
        assert_eq!(c.ctl.cacert.as_deref(), Some(Path::new("/ca.pem")));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("PATRONI_CONFIGURATION is ignored")),
            "{:?}",
            c.warnings
        );

        // Env values go through the same validation as the file.
        let bad = env(&[("PATRONI_RESTAPI_LISTEN", "8008")]);
        let e = Config::from_yaml_str(MINIMAL, &bad, "node.yml").expect_err("bad env");
        assert!(
            format!("{e:#}").contains("restapi.listen: expected \"host:port\", got \"8008\""),
            "{e:#}"
        );

        // etcd credentials alone do not create an etcd3 section.
        let y = edit("etcd3: {hosts: '127.0.0.1:2379'}", "etcd: {host: 'a:1'}");
        let c = Config::from_yaml_str(&y, &env(&[("PATRONI_ETCD3_USERNAME", "u")]), "node.yml")
            .expect("loads");
        assert_eq!(c.etcd3.endpoints(), vec!["http://a:1"]);
        assert_eq!(c.etcd3.username, None);
    }

    #[test]
    fn from_env_only_and_patroni_configuration() {
        let e = env(&[
            ("PATRONI_NAME", "n"),
            ("PATRONI_SCOPE", "s"),
            ("PATRONI_RESTAPI_LISTEN", "127.0.0.1:8008"),
            ("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1:5432"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/d"),
            ("PATRONI_SUPERUSER_USERNAME", "postgres"),
            ("PATRONI_REPLICATION_USERNAME", "rep"),
            ("PATRONI_ETCD3_HOST", "e:2379"),
        ]);
        let c = Config::from_env(&e).expect("env only");
        assert_eq!((c.name.as_str(), c.scope.as_str()), ("n", "s"));
        assert_eq!(c.etcd3.hosts, vec!["e:2379"]);

        let mut e2 = env(&[
            ("PATRONI_CONFIGURATION", MINIMAL),
            ("PATRONI_NAME", "ignored"),
        ]);
        e2.insert("PATRONI_SCOPE".into(), "ignored".into());
        let c = Config::from_env(&e2).expect("PATRONI_CONFIGURATION");
        assert_eq!((c.name.as_str(), c.scope.as_str()), ("n1", "s"));
    }

    #[test]
    fn tags_publishing() {
        // (tags YAML, published JSON, can_failover, warning substring or "")
        let cases: &[(&str, Value, bool, &str)] = &[
            ("{}", json!({}), true, ""),
            (
                "{nofailover: true, clonefrom: false, noloadbalance: 'yes'}",
                json!({"nofailover": true, "noloadbalance": true}),
                false,
                "",
            ),
            (
                "{failover_priority: 0}",
                json!({"failover_priority": 0}),
                false,
                "",
            ),
            (
                "{failover_priority: 3}",
                json!({"failover_priority": 3}),
                true,
                "",
            ),
            (
                "{nofailover: true, failover_priority: 3}",
                json!({"nofailover": true, "failover_priority": 0}),
                false,
                "nofailover: true conflicts with failover_priority: 3",
            ),
            (
                "{nofailover: false, failover_priority: 0}",
                json!({"failover_priority": 1}),
                true,
                "nofailover wins",
            ),
            (
                "{nosync: true, sync_priority: 2}",
                json!({"nosync": true, "sync_priority": 0}),
                true,
                "nosync: true conflicts",
            ),
            (
                "{replicatefrom: n2, zone: a, rack: 3, flag: false}",
                json!({"replicatefrom": "n2", "zone": "a", "rack": 3, "flag": false}),
                true,
                "",
            ),
        ];
        for (tags, want, can, warn) in cases {
            let c = load(&edit("name: n1", &format!("name: n1\ntags: {tags}")))
                .unwrap_or_else(|e| panic!("{tags}: {e:#}"));
            assert_eq!(Value::Object(c.tags.to_json()), *want, "{tags}");
            assert_eq!(c.tags.can_failover(), *can, "{tags}");
            if warn.is_empty() {
                assert!(c.warnings.is_empty(), "{tags}: {:?}", c.warnings);
            } else {
                assert!(
                    c.warnings.iter().any(|w| w.contains(warn)),
                    "{tags}: {:?}",
                    c.warnings
                );
            }
        }
    }

    #[test]
    fn secret_redaction() {
        let y = edit("name: n1", "name: n1\nrestapi_x: 1")
            .replacen(
                "restapi: {",
                "restapi: {authentication: {username: a, password: rest-secret}, ",
                1,
            )
            .replacen(
                "etcd3: {hosts: '127.0.0.1:2379'}",
                "etcd3: {hosts: 'a:1', username: u, password: etcd-secret}",
                1,
            );
        let c = load(&y).expect("loads");
        let dbg = format!("{c:?} {:?}", c.postgresql.authentication);
        for s in ["secret-su", "secret-repl", "rest-secret", "etcd-secret"] {
            assert!(!dbg.contains(s), "{s} leaked in {dbg}");
        }
        assert!(dbg.contains("********"));
        assert_eq!(format!("{}", Secret::new("x")), "********");
        assert_eq!(Secret::new("x").expose(), "x");
    }

    #[test]
    fn directory_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("10-base.yml"), MINIMAL).expect("write");
        std::fs::write(
            dir.path().join("20-node.yaml"),
            "name: n2\npostgresql:\n  data_dir: /other\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("README.txt"), "not yaml: [").expect("write");
        let c = Config::load(dir.path()).expect("dir loads");
        assert_eq!(c.name, "n2");
        assert_eq!(c.postgresql.data_dir, PathBuf::from("/other"));
        assert_eq!(c.postgresql.listen, "127.0.0.1:5432");
        assert_eq!(c.postgresql.authentication.superuser.username, "postgres");

        std::fs::write(dir.path().join("30-bad.yml"), "name: [\n").expect("write");
        let e = format!("{:#}", Config::load(dir.path()).expect_err("bad yaml"));
        assert!(e.contains("30-bad.yml: invalid YAML at line"), "{e}");

        let empty = tempfile::tempdir().expect("tempdir");
        let e = format!("{:#}", Config::load(empty.path()).expect_err("empty dir"));
        assert!(e.contains("no *.yml or *.yaml file"), "{e}");

        let f = dir.path().join("10-base.yml");
        let c = Config::load(&f).expect("file loads");
        assert_eq!(c.name, "n1");
    }

    #[test]
    fn listen_helpers() {
        type Case<'a> = (&'a str, Option<(&'a [&'a str], u16)>);
        let cases: &[Case] = &[
            ("0.0.0.0:5432", Some((&["0.0.0.0"], 5432))),
            ("a,b:5433", Some((&["a", "b"], 5433))),
            ("[::1]:5432", Some((&["::1"], 5432))),
            ("5432", None),
            ("a:0", None),
            ("a:x", None),
        ];
        for (s, want) in cases {
            let got = split_listen(s);
            let want = want.map(|(h, p)| (h.iter().map(|x| x.to_string()).collect::<Vec<_>>(), p));
            assert_eq!(got, want, "{s}");
        }
        assert_eq!(host_port("[::1]:80").ok(), Some(("::1".to_string(), 80)));
        assert_eq!(host_port(":8008").ok(), Some((String::new(), 8008)));
        assert_eq!(host_port("a,b:1").ok(), None);
        assert_eq!(edit_distance("lisen", "listen"), 1);
    }
}

#[cfg(test)]
mod ctl_tests {
    use super::Config;

    #[test]
    fn a_patronictl_style_file_loads_for_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl.yml");
        std::fs::write(&p, "scope: batman\nnamespace: /service/\netcd3:\n  hosts: 10.0.0.1:2379,10.0.0.2:2379\nctl:\n  insecure: true\n").unwrap();
        let c = Config::load_for_ctl(&p).unwrap();
        assert_eq!(c.base_path(), "/service/batman/");
        assert_eq!(c.etcd3.hosts.len(), 2);
        assert!(c.ctl.insecure);
        // The agent still requires its sections.
        assert!(Config::load(&p).is_err());
    }
}
