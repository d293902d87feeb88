//! The cluster's dynamic configuration: the JSON document stored in the DCS `config` key
//! (spec §7.2), plus tandem's timing rules derived from it.
//!
//! Parsing is lenient: a value of the wrong type never fails the whole document; it produces a
//! warning that names the key path and the default used instead. The document is kept verbatim in
//! [`DynamicConfig::raw`] so that keys tandem does not interpret survive a read-modify-write.
//!
//! Two defaults: a key that is *absent* takes Patroni's default (a document written for Patroni
//! means what Patroni reads in it); a key whose value is *invalid* takes tandem's documented
//! default (`ttl` 4, `loop_wait` 1, `retry_timeout` 2: [`TANDEM_DEFAULT_DCS`], docs/timing.md),
//! which is what a tandem cluster runs with, so a bad write to the `config` key does not move the
//! cluster's timing. Writers refuse such values in the first place ([`DynamicConfig::refusals`]).
//!
//! A setting tandem does not carry out is never silently ignored: [`DynamicConfig::unimplemented`]
//! names each one, and the agent refuses to start with it, `PATCH /config` and `edit-config`
//! refuse to write it.

use serde_json::{Map, Value};
use std::time::Duration;

/// tandem's default dynamic configuration, written to the DCS when a cluster is initialised without
/// a `bootstrap.dcs` section. Short lease (tandem's keepalive runs on its own schedule, see
/// [`check_timing`]), pg_rewind on, slots on.
pub const TANDEM_DEFAULT_DCS: &str = r#"{"ttl":4,"loop_wait":1,"retry_timeout":2,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"use_slots":true,"parameters":{"wal_log_hints":"on"}}}"#;

/// tandem's documented defaults (docs/timing.md), the values of [`TANDEM_DEFAULT_DCS`]: used in
/// place of an invalid value.
pub const TANDEM_TTL: u64 = 4;
pub const TANDEM_LOOP_WAIT: u64 = 1;
pub const TANDEM_RETRY_TIMEOUT: u64 = 2;

/// Patroni's defaults for keys absent from the DCS document.
pub const DEFAULT_TTL: u64 = 30;
pub const DEFAULT_LOOP_WAIT: u64 = 10;
pub const DEFAULT_RETRY_TIMEOUT: u64 = 10;
pub const DEFAULT_MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
pub const DEFAULT_PRIMARY_START_TIMEOUT: u64 = 300;
/// `member_slots_ttl`: how long the slot of a member that left is kept (Patroni: `30min`).
pub const DEFAULT_MEMBER_SLOTS_TTL: u64 = 1800;

/// Smallest lease tandem accepts, in seconds. An etcd leader election takes about 1-2 s; the
/// leader's lease must outlive one election plus one keepalive interval.
pub const MIN_TTL: u64 = 3;
/// Smallest pause between HA cycles, in seconds.
pub const MIN_LOOP_WAIT: u64 = 1;
/// Smallest DCS/PostgreSQL retry budget, in seconds.
pub const MIN_RETRY_TIMEOUT: u64 = 1;

/// The typed view of the dynamic configuration.
///
/// `ttl`, `loop_wait` and `retry_timeout` hold the *effective* values (after the minimums of
/// [`check_timing`] were applied); `raw` holds the document exactly as given.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicConfig {
    /// Leader lease, seconds.
    pub ttl: u64,
    /// Pause between HA cycles, seconds.
    pub loop_wait: u64,
    /// Budget for retrying DCS and PostgreSQL operations, seconds.
    pub retry_timeout: u64,
    /// Bytes a replica may lag behind the last known primary position and still be promoted.
    pub maximum_lag_on_failover: u64,
    /// Seconds to wait for a crashed primary to come back before failing over
    /// (legacy name `master_start_timeout` accepted).
    pub primary_start_timeout: u64,
    pub check_timeline: bool,
    pub pause: bool,
    pub failsafe_mode: bool,
    /// `synchronous_mode: on` (priority mode, spec §4). Also true for `quorum`, which sets
    /// `synchronous_quorum` as well (quorum commit, spec §4.5).
    pub synchronous_mode: bool,
    /// `synchronous_mode: quorum`.
    pub synchronous_quorum: bool,
    pub synchronous_mode_strict: bool,
    /// The document does not say whether synchronous replication is on: it is not an object, or
    /// `synchronous_mode` / `synchronous_mode_strict` hold values that do not parse. Readers
    /// that act on synchronous replication leave it as it is (`crate::sync`), rather than take
    /// the default (off) and acknowledge commits no standby has.
    pub synchronous_unknown: bool,
    /// `synchronous_node_count`, default 1.
    pub synchronous_node_count: u64,
    /// `maximum_lag_on_syncnode` in bytes; negative (default -1): no limit.
    pub maximum_lag_on_syncnode: i64,
    /// `primary_stop_timeout` (legacy `master_stop_timeout`), seconds; only used in synchronous
    /// mode, where tandem refuses a value above 0 (not implemented).
    pub primary_stop_timeout: u64,
    /// `member_slots_ttl` in seconds, default 1800 (Patroni's `30min`); 0 drops the slot of a
    /// member that left at once. Given as seconds or as a duration with a unit (`"30min"`).
    pub member_slots_ttl: u64,
    /// `postgresql.use_pg_rewind`, default false.
    pub use_pg_rewind: bool,
    /// `postgresql.use_slots`, default true.
    pub use_slots: bool,
    /// `postgresql.parameters`, without the values PostgreSQL would refuse (each dropped one has
    /// a warning; see [`crate::pgparams`]) and without null values.
    pub parameters: Map<String, Value>,
    /// `postgresql.pg_hba`.
    pub pg_hba: Vec<String>,
    /// The whole document as given, so it can be written back unchanged.
    pub raw: Value,
}

impl DynamicConfig {
    /// Settings this document asks for that tandem does not carry out yet: one error each, naming
    /// the key and the fix. A user who asks for synchronous replication must not believe they
    /// have it, so such a document is refused, never silently run asynchronously; the same holds
    /// for every other setting below. Settings that only matter in synchronous mode
    /// (`synchronous_node_count`, `maximum_lag_on_syncnode`, `primary_stop_timeout`) are
    /// accepted: Patroni ignores them too without it, and synchronous mode itself is refused.
    /// Keys given an empty value (`slots: {}`, `standby_cluster:`) ask for nothing.
    pub fn unimplemented(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.synchronous_mode && self.primary_stop_timeout > 0 {
            out.push("primary_stop_timeout: tandem does not kill a primary whose shutdown takes long yet; set primary_stop_timeout: 0".to_string());
        }
        let Value::Object(top) = &self.raw else {
            return out;
        };
        let set = |m: &Map<String, Value>, key: &str| m.get(key).filter(|v| !is_empty(v)).is_some();
        if set(top, "standby_cluster") {
            out.push("standby_cluster: tandem does not run standby clusters yet (this cluster would run as an ordinary primary cluster); remove standby_cluster".to_string());
        }
        for key in ["slots", "permanent_slots", "permanent_replication_slots"] {
            if set(top, key) {
                out.push(format!("{key}: tandem does not create permanent replication slots yet (and drops inactive slots it does not manage); remove {key} and create the slots yourself only where no agent manages slots"));
            }
        }
        if set(top, "ignore_slots") {
            out.push("ignore_slots: tandem does not implement ignore_slots yet (it drops every inactive physical slot that is not a member's); remove ignore_slots".to_string());
        }
        for (key, fix) in [
            (
                "primary_race_backoff",
                "tandem does not implement the leader race back-off yet; set primary_race_backoff: 0",
            ),
            (
                "max_timelines_history",
                "tandem keeps the whole timeline history; set max_timelines_history: 0",
            ),
        ] {
            if let Some(v) = top.get(key).filter(|v| !v.is_null()) {
                if parse_uint(v) != Some(0) {
                    out.push(format!("{key}: {fix}"));
                }
            }
        }
        if let Some(Value::Object(pg)) = top.get("postgresql") {
            for key in [
                "parameters_primary",
                "parameters_replica",
                "parameters_standby_leader",
                "pg_hba_primary",
                "pg_hba_replica",
                "pg_hba_standby_leader",
            ] {
                if set(pg, key) {
                    let base = key.split('_').next().unwrap_or_default();
                    let base = if base == "pg" { "pg_hba" } else { base };
                    out.push(format!("postgresql.{key}: tandem does not apply per-role settings yet; put what every node needs in postgresql.{base} and remove postgresql.{key}"));
                }
            }
            for key in [
                "pg_ident",
                "pg_ident_primary",
                "pg_ident_replica",
                "pg_ident_standby_leader",
            ] {
                if set(pg, key) {
                    out.push(format!("postgresql.{key}: tandem does not write pg_ident.conf yet; remove postgresql.{key} (and any map= option that needs it)"));
                }
            }
            if set(pg, "recovery_conf") {
                out.push("postgresql.recovery_conf: tandem does not apply extra recovery settings yet; remove postgresql.recovery_conf (restore_command and friends can go in postgresql.parameters)".to_string());
            }
            for key in [
                "pg_ctl_timeout",
                "rewind",
                "callbacks",
                "basebackup",
                "remove_data_directory_on_rewind_failure",
                "remove_data_directory_on_diverged_timelines",
            ] {
                if set(pg, key) {
                    out.push(format!("postgresql.{key}: tandem reads it from each node's own configuration file only; move it there and remove it from the dynamic configuration"));
                }
            }
            if let Some(methods) = pg.get("create_replica_methods").filter(|v| !is_empty(v)) {
                let only_basebackup = match methods {
                    Value::Array(items) => items.iter().all(|m| m.as_str() == Some("basebackup")),
                    Value::String(s) => s == "basebackup",
                    _ => false,
                };
                if !only_basebackup {
                    out.push("postgresql.create_replica_methods: tandem creates replicas with pg_basebackup only; set create_replica_methods: [basebackup] or remove it".to_string());
                }
            }
        }
        out
    }

    /// The refusals of `new` that `old` did not have already: what a change introduces (a change
    /// to one key is not refused for a problem it did not make).
    pub fn new_refusals(old: &Value, new: &Value) -> Vec<String> {
        let before = DynamicConfig::refusals(old);
        DynamicConfig::refusals(new)
            .into_iter()
            .filter(|r| !before.contains(r))
            .collect()
    }

    /// Every reason to refuse `doc` as the cluster's dynamic configuration: invalid values (named
    /// by key, with what was expected) and settings tandem does not implement.
    pub fn refusals(doc: &Value) -> Vec<String> {
        if !doc.is_object() {
            return vec!["the dynamic configuration must be a JSON object".to_string()];
        }
        let (cfg, mut out) = DynamicConfig::from_json(doc);
        out.extend(cfg.unimplemented());
        out
    }

    /// [`DynamicConfig::refusals`] of a document found at `prefix` (e.g. `bootstrap.dcs` of a
    /// local file): every key path starts with `prefix`.
    pub fn refusals_at(doc: &Value, prefix: &str) -> Vec<String> {
        if !doc.is_object() {
            return vec![format!("{prefix}: expected a mapping of dynamic settings")];
        }
        let (cfg, mut out) = DynamicConfig::from_json_at(doc, prefix);
        out.extend(
            cfg.unimplemented()
                .into_iter()
                .map(|e| format!("{prefix}.{e}")),
        );
        out
    }
}

/// A value that asks for nothing: null, `false`, an empty string, list or mapping.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: DEFAULT_TTL,
            loop_wait: DEFAULT_LOOP_WAIT,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            maximum_lag_on_failover: DEFAULT_MAXIMUM_LAG_ON_FAILOVER,
            primary_start_timeout: DEFAULT_PRIMARY_START_TIMEOUT,
            check_timeline: false,
            pause: false,
            failsafe_mode: false,
            synchronous_mode: false,
            synchronous_quorum: false,
            synchronous_mode_strict: false,
            synchronous_unknown: false,
            synchronous_node_count: 1,
            maximum_lag_on_syncnode: -1,
            primary_stop_timeout: 0,
            member_slots_ttl: DEFAULT_MEMBER_SLOTS_TTL,
            use_pg_rewind: false,
            use_slots: true,
            parameters: Map::new(),
            pg_hba: Vec::new(),
            raw: Value::Object(Map::new()),
        }
    }
}

/// Collects warnings while reading one document.
struct Reader<'a> {
    prefix: &'a str,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.prefix, key)
        }
    }

    fn warn(&mut self, key: &str, expected: &str, got: &Value, default: &str) {
        let path = self.path(key);
        self.warnings.push(format!(
            "{path}: expected {expected}, got {}; using {default}",
            short(got)
        ));
    }

    fn uint(&mut self, obj: &Map<String, Value>, key: &str, what: &str, default: u64) -> u64 {
        self.uint_or(obj, key, what, default, default)
    }

    /// `absent` when the key is missing or null, `invalid` (with a warning) when its value is
    /// not a non-negative integer.
    fn uint_or(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        what: &str,
        absent: u64,
        invalid: u64,
    ) -> u64 {
        match obj.get(key) {
            None | Some(Value::Null) => absent,
            Some(v) => match parse_uint(v) {
                Some(n) => n,
                None => {
                    self.warn(
                        key,
                        &format!("an integer number of {what}"),
                        v,
                        &invalid.to_string(),
                    );
                    invalid
                }
            },
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, key: &str, default: bool) -> bool {
        match obj.get(key) {
            None | Some(Value::Null) => default,
            Some(v) => match parse_bool(v) {
                Some(b) => b,
                None => {
                    self.warn(key, "true or false", v, &default.to_string());
                    default
                }
            },
        }
    }
}

/// A JSON value rendered for a warning, cut short if long.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A non-negative integer given as a JSON number (integral) or a numeric string ("30").
pub fn parse_uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(u)
            } else {
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => {
                        Some(f as u64)
                    }
                    _ => None,
                }
            }
        }
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

/// A duration in seconds: an integer (JSON number or numeric string, seconds) or a string with
/// one of PostgreSQL's time units, as Patroni reads `member_slots_ttl`: `"30min"`, `"1h"`,
/// `"90s"`, `"1d"`, `"500ms"` (rounded to the nearest second). Units are case-sensitive.
pub fn parse_duration_secs(v: &Value) -> Option<u64> {
    if let Some(n) = parse_uint(v) {
        return Some(n);
    }
    let Value::String(s) = v else { return None };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let ms = n.checked_mul(ms_per_unit)?;
    Some(ms / 1000 + u64::from(ms % 1000 >= 500))
}

/// A signed integer given as a JSON number or a string of digits (e.g. `-1`).
fn parse_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean given as JSON true/false, 0/1, or one of the strings Patroni accepts
/// (true/false, on/off, yes/no, 1/0; case-insensitive).
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "y" | "1" => Some(true),
            "false" | "off" | "no" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

impl DynamicConfig {
    /// Parse the DCS `config` document. Wrong types produce a warning naming the key path
    /// (`config.ttl: ...`) and fall back to the default. Never panics.
    pub fn from_json(v: &Value) -> (DynamicConfig, Vec<String>) {
        Self::from_json_at(v, "config")
    }

    /// Like [`DynamicConfig::from_json`], with warnings' key paths starting with `prefix`
    /// (e.g. `"bootstrap.dcs"` when checking a local YAML file).
    pub fn from_json_at(v: &Value, prefix: &str) -> (DynamicConfig, Vec<String>) {
        let mut r = Reader {
            prefix,
            warnings: Vec::new(),
        };
        let mut cfg = DynamicConfig {
            raw: v.clone(),
            ..DynamicConfig::default()
        };
        let empty = Map::new();
        let obj = match v {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                cfg.synchronous_unknown = true;
                let what = if prefix.is_empty() {
                    "the dynamic configuration".to_string()
                } else {
                    prefix.to_string()
                };
                r.warnings.push(format!(
                    "{what}: expected a JSON object, got {}; using defaults",
                    short(other)
                ));
                &empty
            }
        };

        let ttl = r.uint_or(obj, "ttl", "seconds", DEFAULT_TTL, TANDEM_TTL);
        let loop_wait = r.uint_or(
            obj,
            "loop_wait",
            "seconds",
            DEFAULT_LOOP_WAIT,
            TANDEM_LOOP_WAIT,
        );
        let retry_timeout = r.uint_or(
            obj,
            "retry_timeout",
            "seconds",
            DEFAULT_RETRY_TIMEOUT,
            TANDEM_RETRY_TIMEOUT,
        );
        let (timing, tw) = check_timing(ttl, loop_wait, retry_timeout);
        for w in tw {
            r.warnings.push(format!(
                "{}: {w}",
                if prefix.is_empty() { "config" } else { prefix }
            ));
        }
        cfg.ttl = timing.ttl.as_secs();
        cfg.loop_wait = timing.loop_wait.as_secs();
        cfg.retry_timeout = timing.retry_timeout.as_secs();

        cfg.maximum_lag_on_failover = r.uint(
            obj,
            "maximum_lag_on_failover",
            "bytes",
            DEFAULT_MAXIMUM_LAG_ON_FAILOVER,
        );
        cfg.primary_start_timeout = if obj
            .get("primary_start_timeout")
            .is_some_and(|v| !v.is_null())
        {
            r.uint(
                obj,
                "primary_start_timeout",
                "seconds",
                DEFAULT_PRIMARY_START_TIMEOUT,
            )
        } else {
            r.uint(
                obj,
                "master_start_timeout",
                "seconds",
                DEFAULT_PRIMARY_START_TIMEOUT,
            )
        };
        cfg.check_timeline = r.boolean(obj, "check_timeline", false);
        cfg.pause = r.boolean(obj, "pause", false);
        cfg.failsafe_mode = r.boolean(obj, "failsafe_mode", false);
        (cfg.synchronous_mode, cfg.synchronous_quorum) = match obj.get("synchronous_mode") {
            None | Some(Value::Null) => (false, false),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("quorum") => (true, true),
            Some(v) => match parse_bool(v) {
                Some(b) => (b, false),
                None => {
                    r.warn("synchronous_mode", "true, false or \"quorum\"", v, "false");
                    cfg.synchronous_unknown = true;
                    (false, false)
                }
            },
        };
        cfg.synchronous_unknown |= obj
            .get("synchronous_mode_strict")
            .is_some_and(|v| !v.is_null() && parse_bool(v).is_none());
        cfg.synchronous_mode_strict = r.boolean(obj, "synchronous_mode_strict", false);
        cfg.synchronous_node_count = r.uint(obj, "synchronous_node_count", "nodes", 1);
        if cfg.synchronous_node_count == 0 {
            let path = r.path("synchronous_node_count");
            r.warnings
                .push(format!("{path}: must be at least 1; using 1"));
            cfg.synchronous_node_count = 1;
        }
        cfg.maximum_lag_on_syncnode = match obj.get("maximum_lag_on_syncnode") {
            None | Some(Value::Null) => -1,
            Some(v) => match parse_int(v) {
                Some(n) => n,
                None => {
                    r.warn(
                        "maximum_lag_on_syncnode",
                        "bytes (an integer; -1: no limit)",
                        v,
                        "-1",
                    );
                    -1
                }
            },
        };
        cfg.primary_stop_timeout = if obj.contains_key("primary_stop_timeout") {
            r.uint(obj, "primary_stop_timeout", "seconds", 0)
        } else {
            r.uint(obj, "master_stop_timeout", "seconds", 0)
        };
        cfg.member_slots_ttl = match obj.get("member_slots_ttl") {
            None | Some(Value::Null) => DEFAULT_MEMBER_SLOTS_TTL,
            Some(v) => parse_duration_secs(v).unwrap_or_else(|| {
                r.warn(
                    "member_slots_ttl",
                    "seconds or a duration such as \"30min\" (units ms, s, min, h, d)",
                    v,
                    &DEFAULT_MEMBER_SLOTS_TTL.to_string(),
                );
                DEFAULT_MEMBER_SLOTS_TTL
            }),
        };

        match obj.get("postgresql") {
            None | Some(Value::Null) => {}
            Some(Value::Object(pg)) => {
                let pg_prefix = r.path("postgresql");
                let mut pr = Reader {
                    prefix: &pg_prefix,
                    warnings: Vec::new(),
                };
                cfg.use_pg_rewind = pr.boolean(pg, "use_pg_rewind", false);
                cfg.use_slots = pr.boolean(pg, "use_slots", true);
                match pg.get("parameters") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(p)) => {
                        for (name, value) in p {
                            if value.is_null() {
                                continue;
                            }
                            match crate::pgparams::check(name, value) {
                                Ok(()) => {
                                    cfg.parameters.insert(name.clone(), value.clone());
                                }
                                Err(expected) => {
                                    let path = pr.path(&format!("parameters.{name}"));
                                    pr.warnings.push(format!(
                                        "{path}: expected {expected}, got {}; parameter dropped (PostgreSQL would refuse to start with it; the default applies)",
                                        short(value)
                                    ));
                                }
                            }
                        }
                    }
                    Some(other) => pr.warn(
                        "parameters",
                        "a mapping of parameter names to values",
                        other,
                        "no parameters",
                    ),
                }
                match pg.get("pg_hba") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(lines)) => {
                        for (i, line) in lines.iter().enumerate() {
                            match line {
                                Value::String(s) => cfg.pg_hba.push(s.clone()),
                                other => {
                                    let path = pr.path(&format!("pg_hba[{i}]"));
                                    pr.warnings.push(format!(
                                        "{path}: expected a pg_hba.conf line (string), got {}; line skipped",
                                        short(other)
                                    ));
                                }
                            }
                        }
                    }
                    Some(other) => {
                        pr.warn("pg_hba", "a list of pg_hba.conf lines", other, "no lines")
                    }
                }
                r.warnings.append(&mut pr.warnings);
            }
            Some(other) => r.warn("postgresql", "a mapping", other, "defaults"),
        }

        (cfg, r.warnings)
    }

    /// tandem's timing derived from `ttl`, `loop_wait` and `retry_timeout` (see [`check_timing`]).
    pub fn timing(&self) -> Timing {
        check_timing(self.ttl, self.loop_wait, self.retry_timeout).0
    }
}

/// tandem's timing, derived by [`check_timing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Lease TTL granted to etcd.
    pub ttl: Duration,
    /// Pause between HA cycles (cycles also run on DCS events).
    pub loop_wait: Duration,
    /// Overall budget for retrying one DCS/PostgreSQL operation.
    pub retry_timeout: Duration,
    /// How often the lease keepalive task renews the lease.
    pub keepalive_interval: Duration,
    /// The leader demotes when the time left on its lease (measured from the *send* time of the
    /// last successful keepalive) falls below this.
    pub demote_margin: Duration,
    /// Timeout of one etcd request.
    pub request_timeout: Duration,
}

/// tandem's timing rules. The lease keepalive runs as its own task on its own short schedule, apart
/// from the HA loop, so Patroni's `ttl >= 20` floor and `loop_wait + 2*retry_timeout <= ttl` rule do
/// not apply. Rules:
///
/// * minimums: `ttl >= 3 s` (an etcd leader election takes ~1-2 s; the lease must outlive it plus
///   one keepalive interval), `loop_wait >= 1 s`, `retry_timeout >= 1 s`; lower values are raised
///   with a warning saying why. No maximums.
/// * `keepalive_interval = clamp(ttl/4, 0.25 s, 2 s)`: at least three renewals fit in a lease even
///   when one is lost; never more often than 4/s or less often than every 2 s.
/// * `demote_margin = max(keepalive_interval, min(ttl/4, 5 s))`: the time the leader keeps for
///   itself to stop PostgreSQL (immediate shutdown) before its lease can expire in etcd. It scales
///   with the lease up to 5 s; a longer margin would only make a long lease demote earlier for no
///   benefit. The lease really expires in etcd later still (etcd starts its count when it *receives*
///   the keepalive, and a replica must then see the deletion, win the race and promote).
/// * `request_timeout = min(retry_timeout, (ttl - keepalive_interval - demote_margin) / 2)`: after
///   the last successful keepalive, the next one is sent within `keepalive_interval`; if it hangs
///   (dead endpoint, etcd election) it is abandoned after `request_timeout` and retried on another
///   endpoint, and both attempts fit before the demotion point. Invariant:
///   `keepalive_interval + 2 * request_timeout + demote_margin <= ttl`.
///
/// With tandem's defaults (ttl 4, loop_wait 1, retry_timeout 2): keepalive 1 s, margin 1 s,
/// request timeout 1 s. With Patroni's (30/10/10): keepalive 2 s, margin 5 s, request timeout 10 s.
pub fn check_timing(ttl: u64, loop_wait: u64, retry_timeout: u64) -> (Timing, Vec<String>) {
    let mut warnings = Vec::new();
    let ttl = if ttl < MIN_TTL {
        warnings.push(format!(
            "ttl={ttl} is below tandem's minimum of {MIN_TTL} s (an etcd leader election takes about \
             1-2 s and the leader lease must outlive it plus one keepalive interval); using {MIN_TTL}"
        ));
        MIN_TTL
    } else {
        ttl
    };
    let loop_wait = if loop_wait < MIN_LOOP_WAIT {
        warnings.push(format!(
            "loop_wait={loop_wait} is below the minimum of {MIN_LOOP_WAIT} s (the HA loop needs a pause \
             between cycles); using {MIN_LOOP_WAIT}"
        ));
        MIN_LOOP_WAIT
    } else {
        loop_wait
    };
    let retry_timeout = if retry_timeout < MIN_RETRY_TIMEOUT {
        warnings.push(format!(
            "retry_timeout={retry_timeout} is below the minimum of {MIN_RETRY_TIMEOUT} s (a DCS or \
             PostgreSQL request needs time to complete); using {MIN_RETRY_TIMEOUT}"
        ));
        MIN_RETRY_TIMEOUT
    } else {
        retry_timeout
    };

    let ttl_d = Duration::from_secs(ttl);
    let quarter = ttl_d / 4;
    let keepalive_interval = quarter.clamp(Duration::from_millis(250), Duration::from_secs(2));
    let demote_margin = keepalive_interval.max(quarter.min(Duration::from_secs(5)));
    // ttl >= 3 s and both terms are at most ttl/4 (keepalive_interval's 0.25 s floor is below
    // 3 s / 4), so this never underflows; saturating_sub keeps that true regardless.
    let window = ttl_d
        .saturating_sub(keepalive_interval)
        .saturating_sub(demote_margin);
    let retry_d = Duration::from_secs(retry_timeout);
    let request_timeout = retry_d.min(window / 2);

    (
        Timing {
            ttl: ttl_d,
            loop_wait: Duration::from_secs(loop_wait),
            retry_timeout: retry_d,
            keepalive_interval,
            demote_margin,
            request_timeout,
        },
        warnings,
    )
}

/// Apply a PATCH /config body to the stored document: `null` deletes the key, objects are merged
/// recursively, any other value replaces. A patch that is not an object replaces the whole target;
/// an object patched onto a non-object turns it into an object. Nulls inside newly added objects
/// are dropped.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_obj) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_obj {
            if v.is_null() {
                t.remove(k);
            } else {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                merge_patch(slot, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_when_empty_or_null() {
        for v in [json!({}), Value::Null] {
            let (c, w) = DynamicConfig::from_json(&v);
            assert!(w.is_empty(), "{w:?}");
            assert_eq!((c.ttl, c.loop_wait, c.retry_timeout), (30, 10, 10));
            assert_eq!(c.maximum_lag_on_failover, 1_048_576);
            assert_eq!(c.primary_start_timeout, 300);
            assert!(c.use_slots && !c.use_pg_rewind && !c.pause && !c.synchronous_mode);
            assert_eq!(c.raw, v);
        }
    }

    #[test]
    fn not_an_object() {
        let (c, w) = DynamicConfig::from_json(&json!([1, 2]));
        assert_eq!(c.ttl, 30);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("config: expected a JSON object"), "{w:?}");
        assert_eq!(c.raw, json!([1, 2]));
    }

    #[test]
    fn integer_fields_table() {
        // (input value, expected ttl, warning substring or "")
        let cases: &[(Value, u64, &str)] = &[
            (json!(40), 40, ""),
            (json!("40"), 40, ""),
            (json!(" 40 "), 40, ""),
            (json!(40.0), 40, ""),
            // An invalid value takes tandem's documented default (4), not Patroni's (30).
            (
                json!("abc"),
                4,
                "config.ttl: expected an integer number of seconds, got \"abc\"; using 4",
            ),
            (
                json!(-5),
                4,
                "config.ttl: expected an integer number of seconds, got -5; using 4",
            ),
            (json!(2.5), 4, "got 2.5; using 4"),
            (json!(true), 4, "got true; using 4"),
            (json!(1e30), 4, "got 1e+30; using 4"),
            (json!({"a": 1}), 4, "got {\"a\":1}"),
            (json!(1), 3, "ttl=1 is below tandem's minimum of 3 s"),
            (Value::Null, 30, ""),
        ];
        for (input, want, warn) in cases {
            let (c, w) = DynamicConfig::from_json(&json!({ "ttl": input }));
            assert_eq!(c.ttl, *want, "input {input}");
            if warn.is_empty() {
                assert!(w.is_empty(), "input {input}: {w:?}");
            } else {
                assert!(w.iter().any(|x| x.contains(warn)), "input {input}: {w:?}");
            }
        }
    }

    #[test]
    fn other_fields_table() {
        let (c, w) = DynamicConfig::from_json(&json!({
            "loop_wait": "5", "retry_timeout": 7, "maximum_lag_on_failover": "123",
            "master_start_timeout": 12, "check_timeline": "on", "pause": true,
            "failsafe_mode": "yes", "synchronous_mode": "true", "synchronous_mode_strict": 1,
            "synchronous_node_count": 2,
            "postgresql": {"use_pg_rewind": "true", "use_slots": false,
                "parameters": {"max_connections": 200}, "pg_hba": ["host all all 0.0.0.0/0 md5"]},
            "slots": {"x": {"type": "physical"}}
        }));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((c.loop_wait, c.retry_timeout), (5, 7));
        assert_eq!(c.maximum_lag_on_failover, 123);
        assert_eq!(c.primary_start_timeout, 12);
        assert!(c.check_timeline && c.pause && c.failsafe_mode);
        assert!(c.synchronous_mode && c.synchronous_mode_strict);
        assert_eq!(c.synchronous_node_count, 2);
        assert!(c.use_pg_rewind && !c.use_slots);
        assert_eq!(c.parameters.get("max_connections"), Some(&json!(200)));
        assert_eq!(c.pg_hba, vec!["host all all 0.0.0.0/0 md5".to_string()]);
        assert_eq!(c.raw["slots"]["x"]["type"], json!("physical"));
    }

    #[test]
    fn primary_start_timeout_beats_legacy() {
        let (c, _) = DynamicConfig::from_json(
            &json!({"master_start_timeout": 1, "primary_start_timeout": 2}),
        );
        assert_eq!(c.primary_start_timeout, 2);
    }

    #[test]
    fn bad_values_warn_with_path() {
        let cases: &[(Value, &str)] = &[
            (
                json!({"pause": "maybe"}),
                "config.pause: expected true or false, got \"maybe\"; using false",
            ),
            (
                json!({"synchronous_mode": 7}),
                "config.synchronous_mode: expected true, false or \"quorum\"",
            ),
            (
                json!({"postgresql": 5}),
                "config.postgresql: expected a mapping",
            ),
            (
                json!({"postgresql": {"use_slots": "x"}}),
                "config.postgresql.use_slots: expected true or false",
            ),
            (
                json!({"postgresql": {"parameters": []}}),
                "config.postgresql.parameters: expected a mapping",
            ),
            (
                json!({"postgresql": {"pg_hba": "x"}}),
                "config.postgresql.pg_hba: expected a list",
            ),
            (
                json!({"postgresql": {"pg_hba": ["ok", 3]}}),
                "config.postgresql.pg_hba[1]: expected a pg_hba.conf line",
            ),
            (
                json!({"maximum_lag_on_failover": "1MB"}),
                "config.maximum_lag_on_failover: expected an integer number of bytes",
            ),
            (
                json!({"synchronous_node_count": 0}),
                "config.synchronous_node_count: must be at least 1",
            ),
        ];
        for (input, want) in cases {
            let (_, w) = DynamicConfig::from_json(input);
            assert!(w.iter().any(|x| x.contains(want)), "input {input}: {w:?}");
        }
        let (c, _) = DynamicConfig::from_json(&json!({"postgresql": {"pg_hba": ["ok", 3]}}));
        assert_eq!(c.pg_hba, vec!["ok".to_string()]);
        let (c, _) = DynamicConfig::from_json(&json!({"synchronous_mode": "quorum"}));
        assert!(c.synchronous_mode);
    }

    #[test]
    fn prefix_is_used() {
        let (_, w) = DynamicConfig::from_json_at(&json!({"ttl": "x"}), "bootstrap.dcs");
        assert!(w[0].starts_with("bootstrap.dcs.ttl: "), "{w:?}");
    }

    #[test]
    fn tandem_default_dcs() {
        let v: Value = serde_json::from_str(TANDEM_DEFAULT_DCS).expect("valid JSON");
        let (c, w) = DynamicConfig::from_json(&v);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((c.ttl, c.loop_wait, c.retry_timeout), (4, 1, 2));
        assert!(c.use_pg_rewind && c.use_slots);
        assert_eq!(c.parameters.get("wal_log_hints"), Some(&json!("on")));
        let t = c.timing();
        assert_eq!(
            (t.keepalive_interval, t.demote_margin, t.request_timeout),
            (ms(1000), ms(1000), ms(1000))
        );
    }

    #[test]
    fn timing_table() {
        // (ttl, loop_wait, retry) -> (ttl, loop_wait, retry, keepalive, margin, request) ms, warnings
        type Case = ((u64, u64, u64), (u64, u64, u64, u64, u64, u64), usize);
        let cases: &[Case] = &[
            ((4, 1, 2), (4000, 1000, 2000, 1000, 1000, 1000), 0),
            ((30, 10, 10), (30000, 10000, 10000, 2000, 5000, 10000), 0),
            ((10, 10, 10), (10000, 10000, 10000, 2000, 2500, 2750), 0),
            ((3, 1, 1), (3000, 1000, 1000, 750, 750, 750), 0),
            ((1, 0, 0), (3000, 1000, 1000, 750, 750, 750), 3),
            ((0, 1, 1), (3000, 1000, 1000, 750, 750, 750), 1),
            ((6, 1, 5), (6000, 1000, 5000, 1500, 1500, 1500), 0),
            ((100, 5, 3), (100000, 5000, 3000, 2000, 5000, 3000), 0),
            (
                (u64::MAX, u64::MAX, u64::MAX),
                (u64::MAX, u64::MAX, u64::MAX, 2000, 5000, u64::MAX),
                0,
            ),
        ];
        for &((ttl, lw, rt), (ettl, elw, ert, ka, dm, rq), nwarn) in cases {
            let (t, w) = check_timing(ttl, lw, rt);
            assert_eq!(w.len(), nwarn, "{ttl}/{lw}/{rt}: {w:?}");
            let secs = |x: u64| {
                if x == u64::MAX {
                    Duration::from_secs(u64::MAX)
                } else {
                    ms(x)
                }
            };
            assert_eq!(t.ttl, secs(ettl), "ttl {ttl}");
            assert_eq!(t.loop_wait, secs(elw), "loop_wait {ttl}");
            assert_eq!(t.retry_timeout, secs(ert), "retry {ttl}");
            assert_eq!(t.keepalive_interval, ms(ka), "keepalive {ttl}");
            assert_eq!(t.demote_margin, ms(dm), "margin {ttl}");
            if rq != u64::MAX {
                assert_eq!(t.request_timeout, ms(rq), "request {ttl}");
            }
        }
    }

    #[test]
    fn timing_invariant_holds() {
        for ttl in 0..200u64 {
            for rt in [0u64, 1, 2, 5, 10, 30, 1000] {
                let (t, _) = check_timing(ttl, 1, rt);
                assert!(t.ttl >= Duration::from_secs(MIN_TTL));
                assert!(
                    t.keepalive_interval + 2 * t.request_timeout + t.demote_margin <= t.ttl,
                    "ttl {ttl} rt {rt}"
                );
                assert!(t.request_timeout <= t.retry_timeout);
                assert!(
                    t.request_timeout >= ms(500),
                    "ttl {ttl} rt {rt}: {:?}",
                    t.request_timeout
                );
                assert!(t.demote_margin >= t.keepalive_interval);
                assert!(t.keepalive_interval >= ms(250) && t.keepalive_interval <= ms(2000));
            }
        }
    }

    #[test]
    fn timing_warning_says_why() {
        let (_, w) = check_timing(2, 1, 1);
        assert!(w[0].contains("etcd leader election"), "{w:?}");
        let (_, w) = DynamicConfig::from_json(&json!({"ttl": 2}));
        assert!(w[0].starts_with("config: ttl=2 is below"), "{w:?}");
    }

    #[test]
    fn merge_patch_table() {
        let cases: Vec<(Value, Value, Value)> = vec![
            (json!({"a": 1}), json!({"a": 2}), json!({"a": 2})),
            (json!({"a": 1, "b": 2}), json!({"a": null}), json!({"b": 2})),
            (json!({"a": 1}), json!({"zz": null}), json!({"a": 1})),
            (
                json!({"postgresql": {"parameters": {"x": 1, "y": 2}, "use_slots": true}}),
                json!({"postgresql": {"parameters": {"x": null, "z": "3"}}}),
                json!({"postgresql": {"parameters": {"y": 2, "z": "3"}, "use_slots": true}}),
            ),
            (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
            (
                json!({"a": 1}),
                json!({"a": {"b": 1}}),
                json!({"a": {"b": 1}}),
            ),
            (json!({"a": {"b": 1}}), json!({"a": 5}), json!({"a": 5})),
            (
                json!({}),
                json!({"a": {"b": null, "c": 1}}),
                json!({"a": {"c": 1}}),
            ),
            (json!({"a": 1}), json!("x"), json!("x")),
            (json!(null), json!({"a": 1}), json!({"a": 1})),
            (json!({"a": 1}), json!({}), json!({"a": 1})),
        ];
        for (mut target, patch, want) in cases {
            let before = target.clone();
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "{before} + {patch}");
        }
    }

    /// A key tandem accepts does what it says or is refused: primary_stop_timeout is not
    /// implemented yet, so asking for it in synchronous mode is an error; and an invalid value
    /// is refused naming the key instead of falling back to a default.
    #[test]
    fn refusals_name_the_key_and_the_fix() {
        assert!(DynamicConfig::refusals(&json!({"ttl": 10, "loop_wait": 2})).is_empty());
        assert!(DynamicConfig::refusals(&json!({"synchronous_mode": true})).is_empty());
        assert!(DynamicConfig::refusals(
            &json!({"synchronous_mode": "on", "synchronous_mode_strict": true})
        )
        .is_empty());
        assert!(DynamicConfig::refusals(&json!({"synchronous_mode": "quorum"})).is_empty());
        let r =
            DynamicConfig::refusals(&json!({"synchronous_mode": true, "primary_stop_timeout": 30}));
        assert!(
            r.len() == 1 && r[0].contains("set primary_stop_timeout: 0"),
            "{r:?}"
        );
        assert!(DynamicConfig::refusals(&json!({"primary_stop_timeout": 30})).is_empty());
        let (c, w) = DynamicConfig::from_json(&json!({"maximum_lag_on_syncnode": 1048576}));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.maximum_lag_on_syncnode, 1048576);
        let (c, _) = DynamicConfig::from_json(&json!({"master_stop_timeout": 5}));
        assert_eq!(c.primary_stop_timeout, 5);
        assert!(DynamicConfig::refusals(&json!({"synchronous_mode": "off"})).is_empty());
        for bad in [json!("abc"), json!(-5), json!(true), json!(1e30)] {
            let r = DynamicConfig::refusals(&json!({ "ttl": bad }));
            assert!(r.iter().any(|e| e.contains("ttl")), "{bad}: {r:?}");
        }
        assert!(!DynamicConfig::refusals(&json!([1])).is_empty());
        // Only what a change introduces is refused.
        let old = json!({"ttl": "abc"});
        assert!(
            DynamicConfig::new_refusals(&old, &json!({"ttl": "abc", "loop_wait": 2})).is_empty()
        );
        assert_eq!(
            DynamicConfig::new_refusals(&old, &json!({"ttl": "abc", "primary_race_backoff": 5}))
                .len(),
            1
        );
    }

    /// Issue 16 point 11: an invalid `ttl`, `loop_wait` or `retry_timeout` falls back to tandem's
    /// documented default (docs/timing.md: 4, 1, 2), one warning each; an absent one to
    /// Patroni's (30, 10, 10), as Patroni reads a document without it.
    #[test]
    fn invalid_timing_falls_back_to_tandems_defaults_once() {
        let (c, w) =
            DynamicConfig::from_json(&json!({"ttl": "abc", "loop_wait": -1, "retry_timeout": [2]}));
        assert_eq!((c.ttl, c.loop_wait, c.retry_timeout), (4, 1, 2));
        assert_eq!(w.len(), 3, "one warning per key: {w:?}");
        assert_eq!(w.iter().filter(|x| x.contains("config.ttl")).count(), 1);
        let v: Value = serde_json::from_str(TANDEM_DEFAULT_DCS).unwrap();
        assert_eq!(
            (
                v["ttl"].as_u64(),
                v["loop_wait"].as_u64(),
                v["retry_timeout"].as_u64()
            ),
            (
                Some(TANDEM_TTL),
                Some(TANDEM_LOOP_WAIT),
                Some(TANDEM_RETRY_TIMEOUT)
            )
        );
        let (c, w) = DynamicConfig::from_json(&json!({"loop_wait": 2}));
        assert!(w.is_empty());
        assert_eq!(
            (c.ttl, c.retry_timeout),
            (DEFAULT_TTL, DEFAULT_RETRY_TIMEOUT)
        );
    }

    /// Every setting tandem does not carry out is refused, naming the key and the fix; an empty
    /// value asks for nothing; settings tandem carries out are accepted.
    #[test]
    fn unimplemented_settings_are_refused() {
        let cases: &[(Value, &str)] = &[
            (json!({"standby_cluster": {"host": "10.0.0.9", "port": 5432}}), "standby_cluster: tandem does not run standby clusters"),
            (json!({"slots": {"s1": {"type": "physical"}}}), "slots: tandem does not create permanent replication slots"),
            (json!({"permanent_slots": {"s1": null}}), "permanent_slots: "),
            (json!({"permanent_replication_slots": {"s1": null}}), "permanent_replication_slots: "),
            (json!({"ignore_slots": [{"name": "x"}]}), "ignore_slots: "),
            (json!({"primary_race_backoff": 5}), "set primary_race_backoff: 0"),
            (json!({"primary_race_backoff": "x"}), "primary_race_backoff: "),
            (json!({"max_timelines_history": 10}), "set max_timelines_history: 0"),
            (json!({"postgresql": {"parameters_primary": {"work_mem": "8MB"}}}), "postgresql.parameters_primary: tandem does not apply per-role settings yet; put what every node needs in postgresql.parameters"),
            (json!({"postgresql": {"parameters_replica": {"a": 1}}}), "postgresql.parameters_replica: "),
            (json!({"postgresql": {"parameters_standby_leader": {"a": 1}}}), "postgresql.parameters_standby_leader: "),
            (json!({"postgresql": {"pg_hba_primary": ["x"]}}), "in postgresql.pg_hba and remove postgresql.pg_hba_primary"),
            (json!({"postgresql": {"pg_hba_replica": ["x"]}}), "postgresql.pg_hba_replica: "),
            (json!({"postgresql": {"pg_hba_standby_leader": ["x"]}}), "postgresql.pg_hba_standby_leader: "),
            (json!({"postgresql": {"pg_ident": ["m u u"]}}), "postgresql.pg_ident: tandem does not write pg_ident.conf"),
            (json!({"postgresql": {"pg_ident_replica": ["m u u"]}}), "postgresql.pg_ident_replica: "),
            (json!({"postgresql": {"recovery_conf": {"restore_command": "cp"}}}), "postgresql.recovery_conf: "),
            (json!({"postgresql": {"pg_ctl_timeout": 30}}), "postgresql.pg_ctl_timeout: tandem reads it from each node's own configuration file"),
            (json!({"postgresql": {"rewind": {"x": 1}}}), "postgresql.rewind: "),
            (json!({"postgresql": {"create_replica_methods": ["wal_g", "basebackup"]}}), "postgresql.create_replica_methods: tandem creates replicas with pg_basebackup only"),
        ];
        for (doc, want) in cases {
            let (c, _) = DynamicConfig::from_json(doc);
            let u = c.unimplemented();
            assert_eq!(u.len(), 1, "{doc}: {u:?}");
            assert!(
                u[0].starts_with(want) || u[0].contains(want),
                "{doc}: {u:?}"
            );
            let r = DynamicConfig::refusals(doc);
            assert!(r.contains(&u[0]), "{doc}: {r:?}");
        }
        // Empty values, zeros and what tandem does carry out.
        for doc in [
            json!({"standby_cluster": null, "slots": {}, "permanent_slots": null, "ignore_slots": [],
                   "primary_race_backoff": 0, "max_timelines_history": "0"}),
            json!({"postgresql": {"parameters_primary": {}, "pg_ident": [], "recovery_conf": null,
                   "create_replica_methods": ["basebackup"], "use_pg_rewind": true, "use_slots": true,
                   "parameters": {"max_connections": 200}, "pg_hba": ["host all all 0.0.0.0/0 md5"]}}),
            json!({"check_timeline": true, "failsafe_mode": true, "pause": true,
                   "maximum_lag_on_failover": 1, "maximum_lag_on_syncnode": 5,
                   "synchronous_node_count": 2, "primary_stop_timeout": 3, "member_slots_ttl": "1h"}),
        ] {
            assert!(
                DynamicConfig::refusals(&doc).is_empty(),
                "{doc}: {:?}",
                DynamicConfig::refusals(&doc)
            );
        }
        // Under a prefix (a local file's bootstrap.dcs), every path carries it.
        let r =
            DynamicConfig::refusals_at(&json!({"slots": {"a": {}}, "ttl": "x"}), "bootstrap.dcs");
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r.iter().all(|e| e.starts_with("bootstrap.dcs.")), "{r:?}");
    }

    #[test]
    fn member_slots_ttl_forms() {
        let cases: &[(Value, Option<u64>)] = &[
            (Value::Null, Some(1800)),
            (json!(0), Some(0)),
            (json!(600), Some(600)),
            (json!("600"), Some(600)),
            (json!("30min"), Some(1800)),
            (json!("30 min"), Some(1800)),
            (json!("2h"), Some(7200)),
            (json!("1d"), Some(86_400)),
            (json!("90s"), Some(90)),
            (json!("1500ms"), Some(2)),
            (json!("30MIN"), None),
            (json!("abc"), None),
            (json!("-5min"), None),
            (json!(-5), None),
            (json!(true), None),
            (json!("99999999999999999999d"), None),
        ];
        for (v, want) in cases {
            let (c, w) = DynamicConfig::from_json(&json!({ "member_slots_ttl": v }));
            match want {
                Some(secs) => {
                    assert_eq!(c.member_slots_ttl, *secs, "{v}");
                    assert!(w.is_empty(), "{v}: {w:?}");
                }
                None => {
                    assert_eq!(c.member_slots_ttl, 1800, "{v}");
                    let r = DynamicConfig::refusals(&json!({ "member_slots_ttl": v }));
                    assert!(
                        r.len() == 1
                            && r[0].starts_with(
                                "config.member_slots_ttl: expected seconds or a duration"
                            ),
                        "{v}: {r:?}"
                    );
                }
            }
        }
    }

    /// Issue 16 point 11: `max_connections: "abc"` in the dynamic configuration reached the
    /// postmaster, and the replica ended in "start failed". A value PostgreSQL would refuse is
    /// dropped with a warning naming the parameter, the value and the expected type (as Patroni
    /// does), and `PATCH /config` / `edit-config` refuse it.
    #[test]
    fn invalid_parameter_values_are_dropped_and_refused() {
        let doc = json!({"postgresql": {"parameters": {
            "max_connections": "abc", "shared_buffers": "256MB", "wal_level": "minimal",
            "work_mem": "4MB", "wal_log_hints": "maybe", "application_name": "x", "nothing": null,
            "checkpoint_timeout": {"a": 1}
        }}});
        let (c, w) = DynamicConfig::from_json(&doc);
        let mut kept: Vec<&str> = c.parameters.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["application_name", "shared_buffers", "work_mem"]);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(
            w.iter().any(|x| x.starts_with(
                "config.postgresql.parameters.max_connections: expected an integer from 25 to 262143"
            ) && x.contains("got \"abc\"; parameter dropped")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|x| x.contains("parameters.wal_level: expected one of replica")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|x| x.contains("parameters.checkpoint_timeout: expected a single value")),
            "{w:?}"
        );
        // The raw document is untouched, so a read-modify-write keeps what the user wrote.
        assert_eq!(c.raw, doc);
        let r = DynamicConfig::refusals(
            &json!({"postgresql": {"parameters": {"max_connections": "abc"}}}),
        );
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(DynamicConfig::refusals(
            &json!({"postgresql": {"parameters": {"max_connections": 500}}})
        )
        .is_empty());
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("ttl".to_string()),
            Just("loop_wait".to_string()),
            Just("retry_timeout".to_string()),
            Just("postgresql".to_string()),
            Just("parameters".to_string()),
            Just("max_connections".to_string()),
            Just("shared_buffers".to_string()),
            Just("wal_level".to_string()),
            Just("slots".to_string()),
            Just("standby_cluster".to_string()),
            Just("member_slots_ttl".to_string()),
            Just("synchronous_mode".to_string()),
            Just("create_replica_methods".to_string()),
            Just("pg_hba".to_string()),
            Just("primary_race_backoff".to_string()),
            "[a-z_]{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,16}".prop_map(Value::String),
            "[0-9]{1,25}(\\.[0-9]{0,3})?( ?(kB|MB|GB|TB|B|ms|us|s|min|h|d|x))?"
                .prop_map(Value::String),
            "(0x|0)[0-9a-fA-F]{0,20}".prop_map(Value::String),
            "(on|off|of|o|t|tr|true|yes|no|n|1|0|replica|minimal|basebackup)"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON gives a value or clear refusals, never a panic; the effective values keep
        /// their invariants whatever the input.
        #[test]
        fn from_json_and_refusals_never_panic(doc in any_json()) {
            let (c, warnings) = DynamicConfig::from_json(&doc);
            proptest::prop_assert!(c.ttl >= MIN_TTL && c.loop_wait >= MIN_LOOP_WAIT);
            proptest::prop_assert!(c.retry_timeout >= MIN_RETRY_TIMEOUT && c.synchronous_node_count >= 1);
            proptest::prop_assert_eq!(&c.raw, &doc);
            for (name, value) in &c.parameters {
                proptest::prop_assert!(crate::pgparams::check(name, value).is_ok(), "{} = {}", name, value);
            }
            for w in &warnings {
                proptest::prop_assert!(w.starts_with("config"), "{}", w);
            }
            let refusals = DynamicConfig::refusals(&doc);
            if doc.is_object() {
                // Every warning but quorum mode's is a refusal, and every unimplemented setting.
                for w in warnings.iter().filter(|w| !w.contains("quorum mode")) {
                    proptest::prop_assert!(refusals.contains(w), "{}", w);
                }
                for u in c.unimplemented() {
                    proptest::prop_assert!(refusals.contains(&u), "{}", u);
                }
            } else {
                proptest::prop_assert_eq!(refusals.len(), 1);
            }
            let _ = DynamicConfig::refusals_at(&doc, "bootstrap.dcs");
            let _ = DynamicConfig::new_refusals(&Value::Null, &doc);
            let _ = c.timing();
        }

        /// Parameter values of every shape: checking never panics.
        #[test]
        fn parameter_check_never_panics(name in "[a-z_]{1,30}", value in any_json()) {
            let _ = crate::pgparams::check(&name, &value);
            for p in crate::pgparams::TABLE {
                let _ = crate::pgparams::check(p.name, &value);
                if let Value::String(s) = &value {
                    let _ = crate::pgparams::parse_int(s, crate::pgparams::Unit::Blocks8k);
                    let _ = crate::pgparams::parse_real(s, crate::pgparams::Unit::Ms);
                    let _ = crate::pgparams::parse_bool(s);
                }
            }
        }
    }
}
