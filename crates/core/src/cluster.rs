//! The values tandem and Patroni keep in etcd under `/<namespace>/<scope>/` (spec §1), and the
//! cluster view built from them. Parsing is lenient: a malformed value is reported and ignored,
//! never trusted and never a crash.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `members/<name>`: what each node publishes about itself (JSON, compact).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberValue {
    #[serde(default)]
    pub conn_url: String,
    #[serde(default)]
    pub api_url: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xlog_location: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receive_lsn: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replay_lsn: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replication_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeline: Option<u64>,
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub tags: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pending_restart: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checkpoint_after_promote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pause: Option<bool>,
    /// Fields we do not model (written by newer Patroni versions) are kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MemberValue {
    /// Role with Patroni's legacy `master` folded into `primary`.
    pub fn role(&self) -> &str {
        if self.role == "master" {
            "primary"
        } else {
            &self.role
        }
    }
    pub fn is_primary(&self) -> bool {
        matches!(self.role(), "primary" | "standby_leader")
    }
    /// Host and port from `conn_url` (`postgres://host:port/db`).
    pub fn conn_host_port(&self) -> Option<(String, u16)> {
        let rest = self
            .conn_url
            .strip_prefix("postgres://")
            .or_else(|| self.conn_url.strip_prefix("postgresql://"))?;
        let hostport = rest.split('/').next()?;
        let hostport = hostport.rsplit('@').next()?;
        if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once("]:")?;
            return Some((h.to_string(), p.parse().ok()?));
        }
        match hostport.rsplit_once(':') {
            Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
            None => Some((hostport.to_string(), 5432)),
        }
    }
    pub fn tag_bool(&self, key: &str) -> bool {
        match self.tags.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
            }
            _ => false,
        }
    }
    /// Patroni's failover priority: 0 when `nofailover`, else the tag, default 1.
    pub fn failover_priority(&self) -> i64 {
        if self.tag_bool("nofailover") {
            return 0;
        }
        self.tags
            .get("failover_priority")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    }
    /// WAL position as Patroni compares them: primary → flush position; standby → max(receive, replay).
    pub fn wal_position(&self) -> u64 {
        let r = self
            .receive_lsn
            .unwrap_or(0)
            .max(self.replay_lsn.unwrap_or(0));
        r.max(self.xlog_location.unwrap_or(0))
    }
}

/// `status`: the leader's last known WAL position and its slots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusValue {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub optime: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slots: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retain_slots: Option<Vec<String>>,
}

/// `failover`: a requested switchover or failover. The candidate field is named `member`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverValue {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scheduled_at: Option<String>,
}

impl FailoverValue {
    /// Parses a stored value: JSON `{"leader","member","scheduled_at"}`, empty (no request), or
    /// the legacy `leader:candidate` text. `Err` says what is wrong (a JSON value of another shape,
    /// or text with control characters, which no member name has: binary garbage).
    pub fn parse(text: &str) -> Result<FailoverValue, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(FailoverValue::default());
        }
        match serde_json::from_str::<Value>(trimmed) {
            Ok(v @ Value::Object(_)) => {
                return serde_json::from_value::<FailoverValue>(v)
                    .map_err(|e| format!("an invalid failover request ({e})"))
            }
            Ok(other) => return Err(format!("{}, not a JSON object", json_kind(&other))),
            Err(e) if trimmed.starts_with('{') => return Err(format!("invalid JSON ({e})")),
            Err(_) => {}
        }
        if trimmed.chars().any(char::is_control) {
            return Err(
                "a failover request that is neither JSON nor the legacy 'leader:candidate' text"
                    .to_string(),
            );
        }
        // legacy "leader:candidate" form
        let (l, m) = trimmed.split_once(':').unwrap_or(("", trimmed));
        Ok(FailoverValue {
            leader: (!l.is_empty()).then(|| l.to_string()),
            member: (!m.is_empty()).then(|| m.to_string()),
            scheduled_at: None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.leader.is_none() && self.member.is_none() && self.scheduled_at.is_none()
    }
}

/// "a JSON array", "a number", ... for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "JSON null",
        Value::Bool(_) => "a JSON boolean",
        Value::Number(_) => "a JSON number",
        Value::String(_) => "a JSON string",
        Value::Array(_) => "a JSON array",
        Value::Object(_) => "a JSON object",
    }
}

/// One `history` entry: `[timeline, switch_lsn, reason, timestamp, new_leader]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub timeline: u64,
    pub lsn: u64,
    pub reason: String,
    pub timestamp: Option<String>,
    pub new_leader: Option<String>,
}

impl HistoryEntry {
    pub fn to_json(&self) -> Value {
        let mut v = vec![
            Value::from(self.timeline),
            Value::from(self.lsn),
            Value::from(self.reason.clone()),
        ];
        if let Some(ts) = &self.timestamp {
            v.push(Value::from(ts.clone()));
            if let Some(l) = &self.new_leader {
                v.push(Value::from(l.clone()));
            }
        }
        Value::Array(v)
    }
    fn from_json(v: &Value) -> Option<HistoryEntry> {
        let a = v.as_array()?;
        Some(HistoryEntry {
            timeline: a.first()?.as_u64()?,
            lsn: a.get(1)?.as_u64()?,
            reason: a
                .get(2)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            timestamp: a.get(3).and_then(Value::as_str).map(str::to_string),
            new_leader: a.get(4).and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// The `leader` key: a bare member name, bound to the holder's lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderKey {
    pub name: String,
    pub lease: i64,
    pub mod_revision: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub value: MemberValue,
    pub lease: i64,
}

/// A value with the etcd mod revision it was read at (for compare-and-set writes).
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// A key whose value was ignored because it does not parse: kept in the view so that a writer can
/// replace it with a compare on its mod revision (never clobbering a concurrent valid write), and
/// so that readers can say what is wrong instead of "absent".
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidValue {
    pub mod_revision: i64,
    /// What is wrong with it, e.g. `invalid JSON (expected value at line 1 column 1)`,
    /// `a JSON array, not an object`, `not UTF-8`.
    pub problem: String,
}

/// One raw key under the cluster prefix, as read from etcd.
#[derive(Clone, Debug)]
pub struct RawKey {
    /// The key relative to `/<namespace>/<scope>/`, e.g. `members/pg1`.
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// Everything under one cluster's prefix, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// `None`: no key; `Some("")`: a bootstrap is in progress; else the system identifier.
    pub initialize: Option<String>,
    pub config: Option<Versioned<Value>>,
    pub leader: Option<LeaderKey>,
    pub members: BTreeMap<String, Member>,
    pub status: Option<StatusValue>,
    pub history: Option<Versioned<Vec<HistoryEntry>>>,
    pub failover: Option<Versioned<FailoverValue>>,
    pub sync: Option<Versioned<Value>>,
    /// `failsafe` (spec §1): `{member: api_url}` written by the leader while `failsafe_mode` is
    /// on. `None` when absent or not a JSON object of strings.
    pub failsafe: Option<BTreeMap<String, String>>,
    /// Keys (relative, e.g. `failover`, `config`, `members/pg1`) that exist but whose values were
    /// ignored as malformed. A key here is absent from the typed fields above.
    pub invalid: BTreeMap<String, InvalidValue>,
}

impl ClusterView {
    /// Decodes the raw keys; each malformed value yields a warning, is skipped, and is listed in
    /// [`ClusterView::invalid`].
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a RawKey>) -> (ClusterView, Vec<String>) {
        let mut view = ClusterView::default();
        let mut warnings = Vec::new();
        let mut legacy_optime = None;
        for raw in keys {
            let decoded = match std::str::from_utf8(&raw.value) {
                Ok(text) => view.decode(raw, text, &mut legacy_optime),
                Err(_) => Err("a value that is not UTF-8".to_string()),
            };
            if let Err(problem) = decoded {
                warnings.push(format!(
                    "key '{}' holds {problem}: ignored; fix or delete it",
                    raw.key
                ));
                view.invalid.insert(
                    raw.key.clone(),
                    InvalidValue {
                        mod_revision: raw.mod_revision,
                        problem,
                    },
                );
            }
        }
        if view.status.is_none() {
            if let Some(o) = legacy_optime {
                view.status = Some(StatusValue {
                    optime: Some(o),
                    ..Default::default()
                });
            }
        }
        (view, warnings)
    }

    /// Decodes one key into the view; `Err` says what is wrong with its value.
    fn decode(
        &mut self,
        raw: &RawKey,
        text: &str,
        legacy_optime: &mut Option<u64>,
    ) -> Result<(), String> {
        let json = |text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON ({e})"))
        };
        let typed = |what: &str, e: serde_json::Error| format!("invalid {what} ({e})");
        match raw.key.as_str() {
            "initialize" => self.initialize = Some(text.to_string()),
            "leader" => {
                if !text.is_empty() {
                    self.leader = Some(LeaderKey {
                        name: text.to_string(),
                        lease: raw.lease,
                        mod_revision: raw.mod_revision,
                    })
                }
            }
            "config" => match json(text)? {
                v @ Value::Object(_) => {
                    self.config = Some(Versioned {
                        value: v,
                        mod_revision: raw.mod_revision,
                    })
                }
                other => return Err(format!("{}, not a JSON object", json_kind(&other))),
            },
            "status" => {
                self.status = Some(
                    serde_json::from_str::<StatusValue>(text).map_err(|e| typed("status", e))?,
                )
            }
            "optime/leader" => *legacy_optime = text.trim().parse::<u64>().ok(),
            "history" => match json(text)? {
                Value::Array(items) => {
                    let entries = items.iter().filter_map(HistoryEntry::from_json).collect();
                    self.history = Some(Versioned {
                        value: entries,
                        mod_revision: raw.mod_revision,
                    });
                }
                other => return Err(format!("{}, not a JSON array", json_kind(&other))),
            },
            "failover" => {
                self.failover = Some(Versioned {
                    value: FailoverValue::parse(text)?,
                    mod_revision: raw.mod_revision,
                })
            }
            "failsafe" => {
                // Patroni writes `{}` when the mode is off, so only a non-object is odd.
                self.failsafe = Some(
                    serde_json::from_str::<BTreeMap<String, String>>(text)
                        .map_err(|e| typed("failsafe member list", e))?,
                )
            }
            "sync" => {
                self.sync = Some(Versioned {
                    value: json(text)?,
                    mod_revision: raw.mod_revision,
                })
            }
            k => {
                if let Some(name) = k.strip_prefix("members/") {
                    if name.is_empty() || name.contains('/') {
                        return Ok(());
                    }
                    let value = serde_json::from_str::<MemberValue>(text)
                        .map_err(|e| typed("member data", e))?;
                    self.members.insert(
                        name.to_string(),
                        Member {
                            name: name.to_string(),
                            value,
                            lease: raw.lease,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// The `failover` key when it exists but holds a value that does not parse (Patroni treats
    /// such a value as absent; a writer replaces it with a compare on this mod revision).
    pub fn invalid_failover(&self) -> Option<&InvalidValue> {
        self.invalid.get("failover")
    }

    /// The `config` key when it exists but holds invalid JSON or a non-object.
    pub fn invalid_config(&self) -> Option<&InvalidValue> {
        self.invalid.get("config")
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }
    pub fn leader_member(&self) -> Option<&Member> {
        self.leader.as_ref().and_then(|l| self.members.get(&l.name))
    }
    /// Cluster timeline: last history entry's timeline + 1; no history → 1.
    pub fn timeline(&self) -> u64 {
        match &self.history {
            Some(h) => h.value.last().map(|e| e.timeline + 1).unwrap_or(1),
            None => 1,
        }
    }
    /// The last known primary WAL position.
    pub fn last_leader_lsn(&self) -> Option<u64> {
        self.status.as_ref().and_then(|s| s.optime)
    }
    /// The dynamic configuration, typed by the one parser every reader uses
    /// (`DynamicConfig::from_json`); defaults when the `config` key is absent.
    pub fn dynamic(&self) -> crate::dynamic::DynamicConfig {
        self.config
            .as_ref()
            .map(|c| crate::dynamic::DynamicConfig::from_json(&c.value).0)
            .unwrap_or_default()
    }

    /// Maintenance mode, as the agent's own configuration reads it (`pause: on`, `"true"`, `yes`
    /// and `true` all pause).
    pub fn paused(&self) -> bool {
        self.config.is_some() && self.dynamic().pause
    }
    pub fn failover_request(&self) -> Option<&FailoverValue> {
        self.failover
            .as_ref()
            .map(|f| &f.value)
            .filter(|f| !f.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pause` read by the same parser as every other reader: a string "on" (what
    /// `edit-config -s pause=on` used to store) pauses the cluster, as the agent's own
    /// configuration read it; before, `paused()` said no and `decide` failed over while paused.
    #[test]
    fn paused_agrees_with_the_dynamic_configuration() {
        for (v, want) in [
            (serde_json::json!(true), true),
            (serde_json::json!("on"), true),
            (serde_json::json!("true"), true),
            (serde_json::json!("yes"), true),
            (serde_json::json!("off"), false),
            (serde_json::json!(false), false),
        ] {
            let (view, _) = ClusterView::from_keys(&[raw(
                "config",
                &serde_json::json!({ "pause": v }).to_string(),
            )]);
            assert_eq!(view.paused(), want, "{v}");
            assert_eq!(view.dynamic().pause, want, "{v}");
        }
        assert!(!ClusterView::default().paused());
    }

    fn raw(key: &str, value: &str) -> RawKey {
        RawKey {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: 7,
            lease: 42,
        }
    }

    #[test]
    fn decodes_patroni_snapshot() {
        let keys = vec![
            raw("config", r#"{"ttl":30,"loop_wait":10}"#),
            raw("initialize", "7277694203142172922"),
            raw("leader", "pg0"),
            raw(
                "members/pg0",
                r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"master","version":"4.1.4","xlog_location":67395656,"timeline":2}"#,
            ),
            raw(
                "members/pg1",
                r#"{"conn_url":"postgres://[::1]:5433/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":67395656,"replay_lsn":67395656,"receive_lsn":67395656,"replication_state":"streaming","timeline":2,"newfield":1}"#,
            ),
            raw(
                "status",
                r#"{"optime":67395656,"slots":{"pg0":67395656,"pg1":67395656},"retain_slots":["pg0","pg1"]}"#,
            ),
            raw(
                "history",
                r#"[[1,25623960,"no recovery target specified","2024-01-01T10:00:00+00:00","pg0"]]"#,
            ),
            raw("failover", "{}"),
        ];
        let (v, w) = ClusterView::from_keys(&keys);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(v.leader_name(), Some("pg0"));
        assert_eq!(v.leader.as_ref().unwrap().lease, 42);
        assert!(v.members["pg0"].value.is_primary());
        assert_eq!(
            v.members["pg1"].value.conn_host_port(),
            Some(("::1".into(), 5433))
        );
        assert_eq!(
            v.members["pg1"].value.extra.get("newfield"),
            Some(&Value::from(1))
        );
        assert_eq!(v.timeline(), 2);
        assert_eq!(v.last_leader_lsn(), Some(67395656));
        assert!(v.failover_request().is_none());
        assert!(!v.paused());
    }

    #[test]
    fn malformed_values_are_reported_not_trusted() {
        let keys = vec![
            raw("members/x", "{not json"),
            raw("config", "[1]"),
            raw("history", "{}"),
            raw("status", "\"s\""),
        ];
        let (v, w) = ClusterView::from_keys(&keys);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(
            v.members.is_empty() && v.config.is_none() && v.history.is_none() && v.status.is_none()
        );
        assert!(w[0].contains("members/x"));
        assert_eq!(
            v.invalid.keys().collect::<Vec<_>>(),
            ["config", "history", "members/x", "status"]
        );
        assert_eq!(
            v.invalid_config().map(|i| i.problem.as_str()),
            Some("a JSON array, not a JSON object")
        );
        assert_eq!(v.invalid["config"].mod_revision, 7);
    }

    /// Issue 16 point 5: a binary or malformed `failover` value is treated as absent, but the view
    /// keeps its mod revision so that a switchover can replace it (before, the value vanished from
    /// the view and every write of the key failed its "create if absent" compare).
    #[test]
    fn unparsable_failover_is_absent_but_known() {
        for (value, problem) in [
            (&b"\x00\xff\x13binary"[..], "not UTF-8"),
            (b"\x01\x02garbage", "neither JSON nor the legacy"),
            (b"{\"leader\":", "invalid JSON"),
            (b"{\"leader\":5}", "invalid failover request"),
            (b"[1,2]", "a JSON array, not a JSON object"),
        ] {
            let raw = RawKey {
                key: "failover".into(),
                value: value.to_vec(),
                mod_revision: 9,
                lease: 0,
            };
            let (v, w) = ClusterView::from_keys(&[raw]);
            assert!(v.failover.is_none() && v.failover_request().is_none());
            let bad = v.invalid_failover().expect("recorded as invalid");
            assert_eq!(bad.mod_revision, 9);
            assert!(bad.problem.contains(problem), "{value:?}: {}", bad.problem);
            assert_eq!(w.len(), 1);
            assert!(w[0].starts_with("key 'failover' holds "), "{w:?}");
        }
        // The valid forms are not invalid.
        for value in ["", "{}", "pg0:pg1", r#"{"member":"pg1"}"#] {
            let (v, w) = ClusterView::from_keys(&[raw("failover", value)]);
            assert!(w.is_empty() && v.invalid.is_empty(), "{value}: {w:?}");
            assert!(v.failover.is_some());
        }
    }

    #[test]
    fn member_value_round_trips_compactly() {
        let m = MemberValue {
            conn_url: "postgres://h:1/postgres".into(),
            api_url: "http://h:2/patroni".into(),
            state: "running".into(),
            role: "primary".into(),
            version: "4.1.4".into(),
            xlog_location: Some(5),
            timeline: Some(1),
            ..Default::default()
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"conn_url":"postgres://h:1/postgres","api_url":"http://h:2/patroni","state":"running","role":"primary","version":"4.1.4","xlog_location":5,"timeline":1}"#
        );
    }

    #[test]
    fn legacy_failover_and_optime() {
        let (v, _) = ClusterView::from_keys(&vec![
            raw("failover", "pg0:pg1"),
            raw("optime/leader", "123"),
        ]);
        let f = v.failover_request().unwrap();
        assert_eq!(
            (f.leader.as_deref(), f.member.as_deref()),
            (Some("pg0"), Some("pg1"))
        );
        assert_eq!(v.last_leader_lsn(), Some(123));
    }
}
