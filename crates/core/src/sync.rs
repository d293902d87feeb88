//! Synchronous replication in priority mode (spec §4): which standbys the primary names in
//! `synchronous_standby_names` (SSN), and the `/sync` key, which names the standbys that hold
//! every acknowledged commit and so may take over.
//!
//! The one invariant everything here keeps: **`/sync` never names a standby that may lack an
//! acknowledged commit.** A standby is added to SSN first and to `/sync` only once PostgreSQL
//! reports it synchronous and it has reached the primary's flush position of the moment SSN
//! changed (so commits acknowledged before it became synchronous are on it too); it is removed
//! from `/sync` first and from SSN after. A replica may race for the leader key only if `/sync`
//! names it (`crate::ha`), so a failover never loses an acknowledged commit.

use crate::cluster::{ClusterView, Member};
use crate::dynamic::DynamicConfig;
use crate::ha::Action;
use serde_json::{json, Value};

/// The SSN entry of strict mode when no standby can be named: no standby has this name, so
/// commits wait (Patroni's value; a member may not be called this).
pub const PLACEHOLDER: &str = "__patroni_strict_sync_replica_placeholder__";

/// The `/sync` key: `{"leader": name, "quorum": 0, "sync_standby": "a,b" | null}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    pub leader: Option<String>,
    /// Sorted, no duplicates.
    pub standbys: Vec<String>,
    pub quorum: u64,
}

impl SyncState {
    pub fn new(leader: &str, mut standbys: Vec<String>) -> SyncState {
        standbys.sort();
        standbys.dedup();
        SyncState {
            leader: Some(leader.to_string()),
            standbys,
            quorum: 0,
        }
    }

    /// Reads a stored value; `Err` says what is wrong with it.
    pub fn parse(v: &Value) -> Result<SyncState, String> {
        let Value::Object(o) = v else {
            return Err(format!(
                "/sync holds {}, not a JSON object",
                crate::cluster::json_kind(v)
            ));
        };
        let leader = match o.get("leader") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(format!(
                    "/sync.leader is {}, not a name",
                    crate::cluster::json_kind(other)
                ))
            }
        };
        let mut standbys: Vec<String> = match o.get("sync_standby") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(other) => {
                return Err(format!(
                    "/sync.sync_standby is {}, not a list of names",
                    crate::cluster::json_kind(other)
                ))
            }
        };
        standbys.sort();
        standbys.dedup();
        let quorum = o.get("quorum").and_then(Value::as_u64).unwrap_or(0);
        Ok(SyncState {
            leader,
            standbys,
            quorum,
        })
    }

    /// Patroni's stored form (compact, keys sorted).
    pub fn to_json(&self) -> String {
        let standbys = if self.standbys.is_empty() {
            Value::Null
        } else {
            Value::String(self.standbys.join(","))
        };
        json!({"leader": self.leader, "quorum": self.quorum, "sync_standby": standbys}).to_string()
    }

    /// The leader or one of the standbys (names compare case-insensitively, as PostgreSQL
    /// compares `application_name` with SSN entries).
    pub fn names(&self, name: &str) -> bool {
        self.leader
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(name))
            || self.is_standby(name)
    }

    pub fn is_standby(&self, name: &str) -> bool {
        self.standbys.iter().any(|s| s.eq_ignore_ascii_case(name))
    }
}

/// Synchronous replication restricts failover (spec §4.6) when the mode is on and `/sync` names
/// a leader: only the members `/sync` names may then take over.
/// With the `config` key absent or unreadable, the mode is unknown: a `/sync` naming a leader
/// keeps restricting failover (a damaged configuration must not open the door to a standby that
/// lacks acknowledged commits).
pub fn active(cluster: &ClusterView) -> Option<SyncState> {
    let cfg = cluster.dynamic();
    if !cfg.synchronous_mode && !mode_unknown(cluster) {
        return None;
    }
    // A /sync that does not parse fails closed: it may have named standbys, so nobody is known
    // to hold every acknowledged commit (an explicit failover still may go ahead). The primary
    // rewrites it on its next cycle.
    let garbled = SyncState {
        leader: Some(String::new()),
        standbys: vec![],
        quorum: 0,
    };
    if cluster.invalid.contains_key("sync") {
        return Some(garbled);
    }
    match SyncState::parse(&cluster.sync.as_ref()?.value) {
        Ok(s) => s.leader.is_some().then_some(s),
        Err(_) => Some(garbled),
    }
}

/// Whether synchronous replication is on cannot be read: `config` is absent, unreadable, or
/// holds values for it that do not parse.
fn mode_unknown(cluster: &ClusterView) -> bool {
    cluster.config.is_none() || cluster.dynamic().synchronous_unknown
}

/// One walsender of the primary (`pg_stat_replication`).
#[derive(Clone, Debug, PartialEq)]
pub struct StandbyRow {
    /// `application_name`: tandem and Patroni set it to the member name.
    pub name: String,
    /// `streaming`, `catchup`, ...
    pub state: String,
    /// `sync`, `potential`, `async`, `quorum`.
    pub sync_state: String,
    /// The position that counts for `synchronous_commit` (write, flush or replay LSN).
    pub lsn: u64,
}

/// What the primary observes about synchronous replication, each cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncObs {
    pub standbys: Vec<StandbyRow>,
    /// `synchronous_standby_names` in effect (`SHOW`).
    pub ssn: String,
    /// The value tandem has set (`None`: tandem does not manage it; the user's parameter applies).
    pub managed: Option<String>,
    /// The primary's flush position right after tandem last changed SSN: a standby reaches it
    /// before `/sync` names it.
    pub ssn_changed_lsn: u64,
}

/// Quotes a name for SSN as Patroni does: plain identifiers as they are, anything else (and the
/// keywords `first`/`any`) in double quotes.
pub fn quote(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !matches!(name.to_ascii_lowercase().as_str(), "first" | "any");
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// SSN naming `names` (sorted), `num` of which must confirm each commit: one name alone,
/// several as `N (a,b)` (PostgreSQL's priority form: the first `N` connected in list order).
pub fn ssn_value(names: &[String], num: usize) -> String {
    let mut sorted: Vec<String> = names.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = num.clamp(1, sorted.len().max(1));
    match sorted.len() {
        0 => String::new(),
        1 => quote(&sorted[0]),
        _ => format!(
            "{n} ({})",
            sorted
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn tag_int(m: &Member, key: &str) -> Option<i64> {
    match m.value.tags.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Spec §4.2: the standbys to name, best first, at most `synchronous_node_count`. A candidate
/// streams from me, is a running member not tagged `nosync`, has `sync_priority` > 0 (by
/// default 1) and lags no more than `maximum_lag_on_syncnode` behind the most advanced standby
/// (or me, when it is the only one). Preference: higher `sync_priority`, then already in `/sync`, then
/// further ahead; `nofailover` members last.
pub fn candidates(
    me: &str,
    my_lsn: u64,
    cluster: &ClusterView,
    cfg: &DynamicConfig,
    current: &SyncState,
    rows: &[StandbyRow],
) -> Vec<String> {
    let streaming: Vec<&StandbyRow> = rows.iter().filter(|r| r.state == "streaming").collect();
    let reference = if streaming.len() > 1 {
        streaming.iter().map(|r| r.lsn).max().unwrap_or(0)
    } else {
        my_lsn
    };
    let mut picked: Vec<(bool, i64, bool, u64, String)> = streaming
        .iter()
        .filter(|r| !r.name.eq_ignore_ascii_case(me))
        .filter_map(|r| {
            let m = cluster
                .members
                .values()
                .find(|m| m.name.eq_ignore_ascii_case(&r.name))?;
            if m.value.state != "running" || m.value.tag_bool("nosync") {
                return None;
            }
            let priority = tag_int(m, "sync_priority").unwrap_or(1);
            if priority <= 0 {
                return None;
            }
            // Patroni: 0 or less is off.
            if cfg.maximum_lag_on_syncnode > 0
                && reference.saturating_sub(r.lsn) > cfg.maximum_lag_on_syncnode as u64
            {
                return None;
            }
            Some((
                m.value.failover_priority() <= 0,
                -priority,
                !current.is_standby(&m.name),
                u64::MAX - r.lsn,
                m.name.clone(),
            ))
        })
        .collect();
    picked.sort();
    picked.dedup_by(|a, b| a.4 == b.4);
    let count = cfg.synchronous_node_count.max(1) as usize;
    if cfg.synchronous_quorum {
        // Quorum mode: every eligible standby votes; `nofailover` ones only to reach the count.
        let (eligible, nofailover): (Vec<_>, Vec<_>) = picked.into_iter().partition(|p| !p.0);
        let missing = count.saturating_sub(eligible.len());
        return eligible
            .into_iter()
            .chain(nofailover.into_iter().take(missing))
            .map(|p| p.4)
            .collect();
    }
    picked.into_iter().take(count).map(|p| p.4).collect()
}

/// Quorum mode's SSN: `ANY n (a,b)` (names sorted, quoted as in priority mode).
pub fn ssn_any(names: &[String], num: usize) -> String {
    let mut sorted: Vec<String> = names.to_vec();
    sorted.sort();
    sorted.dedup();
    format!(
        "ANY {num} ({})",
        sorted
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// The names and the number of an SSN value the core writes (`a`, `N (a,b)`, `ANY N (a,b)`;
/// empty: none). The strict placeholder is not a name.
pub fn parse_ssn(value: &str) -> (Vec<String>, usize) {
    let v = value.trim();
    let (num, list) = match (v.find('('), v.rfind(')')) {
        (Some(a), Some(b)) if a < b => {
            let head = v[..a].trim();
            let head = head
                .strip_prefix("ANY")
                .or_else(|| head.strip_prefix("FIRST"))
                .unwrap_or(head)
                .trim();
            (head.parse::<usize>().unwrap_or(1), &v[a + 1..b])
        }
        _ => (1, v),
    };
    let names: Vec<String> = list
        .split(',')
        .map(|n| n.trim().trim_matches('"').replace("\"\"", "\""))
        .filter(|n| !n.is_empty() && n != PLACEHOLDER)
        .collect();
    let num = if names.is_empty() {
        0
    } else {
        num.min(names.len())
    };
    (names, num)
}

/// Quorum mode (spec §4.5), one step per cycle. The state: SSN = `ANY ns (S)` on the primary, and
/// `/sync` = voters `V` with `quorum` q, read by a replica that wants to take over: it must see
/// q + 1 voters (itself included) not ahead of it. Two rules keep every acknowledged commit on
/// any such set of voters:
///
/// - coverage: a commit acknowledged under `ANY ns (S)` is on ns members of S, so when
///   |V ∪ S| ≤ q + ns, any q + 1 voters include one of them. `/sync` is changed to cover a new
///   SSN before the SSN changes, and only ever lowered to what covers the SSN in effect;
/// - catch-up: a voter joins `V` only once it has reached the primary's flush position of the
///   moment the SSN in effect took effect, so it holds everything acknowledged before.
fn quorum_duties(
    me: &str,
    cfg: &DynamicConfig,
    obs: &SyncObs,
    current: &SyncState,
    picks: &[String],
    revision: Option<i64>,
) -> Option<(Vec<Action>, String)> {
    let count = cfg.synchronous_node_count.max(1) as usize;
    let ns_t = count.min(picks.len());
    let wanted = if !picks.is_empty() {
        ssn_any(picks, ns_t)
    } else if cfg.synchronous_mode_strict {
        ssn_any(&[PLACEHOLDER.to_string()], 1)
    } else {
        String::new()
    };
    let union = |v: &[String], s: &[String]| {
        let mut all: Vec<String> = v.iter().chain(s.iter()).map(|n| n.to_lowercase()).collect();
        all.sort();
        all.dedup();
        all.len()
    };
    if obs.managed.as_deref() != Some(wanted.as_str()) || obs.ssn != wanted {
        // First /sync must cover the wanted SSN, and keep covering the one in effect and the
        // one last written (a reload may not have applied it yet).
        let mut next = current.clone();
        let settings = [
            Some(wanted.as_str()),
            Some(obs.ssn.as_str()),
            obs.managed.as_deref(),
        ];
        for value in settings.into_iter().flatten() {
            let (s, n) = parse_ssn(value);
            if n == 0 && value.contains(PLACEHOLDER) {
                continue; // acknowledges nothing
            }
            if n == 0 {
                // Commits acknowledged by the primary alone: nobody may take over.
                next.standbys.clear();
                next.quorum = 0;
                break;
            }
            let need = union(&next.standbys, &s).saturating_sub(n) as u64;
            next.quorum = next.quorum.max(need);
        }
        let mut actions = vec![];
        if next != *current {
            actions.push(Action::WriteSync {
                state: next.clone(),
                revision,
            });
        }
        actions.push(Action::SetSsn {
            value: Some(wanted.clone()),
        });
        let why = if actions.len() > 1 {
            format!(
                "quorum commit: /sync to voters [{}] quorum {} first, then synchronous_standby_names = '{wanted}'",
                next.standbys.join(","),
                next.quorum
            )
        } else {
            format!("quorum commit: synchronous_standby_names = '{wanted}'")
        };
        return Some((actions, why));
    }
    // The SSN in effect is the wanted one: voters are its members that caught up.
    let voters: Vec<String> = picks
        .iter()
        .filter(|p| {
            obs.standbys.iter().any(|r| {
                r.name.eq_ignore_ascii_case(p)
                    && r.state == "streaming"
                    && matches!(r.sync_state.as_str(), "quorum" | "sync")
                    && r.lsn >= obs.ssn_changed_lsn
            })
        })
        .cloned()
        .collect();
    let mut next = SyncState::new(me, voters);
    next.quorum = if picks.is_empty() {
        0
    } else {
        (picks.len() - ns_t) as u64
    };
    if picks.is_empty() && cfg.synchronous_mode_strict {
        // Commits wait: the voters keep what they hold.
        return None;
    }
    if next == *current {
        return None;
    }
    Some((
        vec![Action::WriteSync {
            state: next.clone(),
            revision,
        }],
        format!(
            "quorum commit: /sync voters [{}] quorum {}",
            next.standbys.join(","),
            next.quorum
        ),
    ))
}

/// A primary's duties under synchronous replication, one step per cycle (or none): the actions,
/// in order, and why. `None`: nothing to change.
pub fn primary_duties(
    me: &str,
    my_lsn: u64,
    cluster: &ClusterView,
    obs: &SyncObs,
) -> Option<(Vec<Action>, String)> {
    let cfg = cluster.dynamic();
    let revision = sync_revision(cluster);
    if mode_unknown(cluster) {
        // Absent or unreadable: the mode is unknown. Nothing changes until it can be read (the
        // agent recreates a deleted one; `edit-config --replace` repairs a damaged one).
        return None;
    }
    if !cfg.synchronous_mode {
        let mut actions = vec![];
        if let Some(rev) = revision {
            actions.push(Action::DeleteSync { revision: rev });
        }
        if obs.managed.is_some() {
            actions.push(Action::SetSsn { value: None });
        }
        return (!actions.is_empty()).then(|| {
            (
                actions,
                "synchronous mode is off: removing /sync and handing synchronous_standby_names back to the configuration".to_string(),
            )
        });
    }
    let current = cluster
        .sync
        .as_ref()
        .and_then(|s| SyncState::parse(&s.value).ok());
    let current = match current {
        Some(c) if c.leader.as_deref() == Some(me) => c,
        _ => return Some((
            vec![Action::WriteSync {
                state: SyncState::new(me, vec![]),
                revision,
            }],
            "synchronous mode: writing /sync with me as the leader and no synchronous standby yet"
                .to_string(),
        )),
    };
    let picks = candidates(me, my_lsn, cluster, &cfg, &current, &obs.standbys);
    if cfg.synchronous_quorum {
        return quorum_duties(me, &cfg, obs, &current, &picks, revision);
    }
    let wanted = if !picks.is_empty() {
        ssn_value(&picks, picks.len())
    } else if cfg.synchronous_mode_strict {
        if current.standbys.is_empty() {
            PLACEHOLDER.to_string()
        } else {
            ssn_value(&current.standbys, current.standbys.len())
        }
    } else {
        String::new()
    };
    let is_sync = |name: &str| {
        obs.standbys.iter().any(|r| {
            r.name.eq_ignore_ascii_case(name) && r.state == "streaming" && r.sync_state == "sync"
        })
    };
    let set_ssn = obs.managed.as_deref() != Some(wanted.as_str()) || obs.ssn != wanted;
    // Strict mode with nobody to name keeps /sync: the standbys it names still hold every
    // acknowledged commit, since commits now wait.
    let keep_all = picks.is_empty() && cfg.synchronous_mode_strict;
    let keep: Vec<String> = current
        .standbys
        .iter()
        .filter(|s| keep_all || (picks.contains(s) && is_sync(s)))
        .cloned()
        .collect();
    if keep != current.standbys {
        let gone: Vec<&String> = current
            .standbys
            .iter()
            .filter(|s| !keep.contains(s))
            .collect();
        let mut actions = vec![Action::WriteSync {
            state: SyncState::new(me, keep),
            revision,
        }];
        if set_ssn {
            actions.push(Action::SetSsn {
                value: Some(wanted.clone()),
            });
        }
        return Some((
            actions,
            format!(
                "synchronous replication: {} no longer synchronous: removing from /sync first{}",
                join(&gone),
                if set_ssn {
                    format!(", then synchronous_standby_names = '{wanted}'")
                } else {
                    String::new()
                }
            ),
        ));
    }
    if set_ssn {
        return Some((
            vec![Action::SetSsn {
                value: Some(wanted.clone()),
            }],
            if wanted == PLACEHOLDER {
                "synchronous mode strict: no standby to name, commits wait until one is back"
                    .to_string()
            } else {
                format!("synchronous replication: synchronous_standby_names = '{wanted}'")
            },
        ));
    }
    let confirmed: Vec<String> = picks
        .iter()
        .filter(|p| !current.is_standby(p))
        .filter(|p| {
            obs.standbys.iter().any(|r| {
                r.name.eq_ignore_ascii_case(p)
                    && r.state == "streaming"
                    && r.sync_state == "sync"
                    && r.lsn >= obs.ssn_changed_lsn
            })
        })
        .cloned()
        .collect();
    if confirmed.is_empty() {
        return None;
    }
    let mut all = current.standbys.clone();
    all.extend(confirmed.iter().cloned());
    Some((
        vec![Action::WriteSync {
            state: SyncState::new(me, all),
            revision,
        }],
        format!(
            "synchronous replication: {} confirmed synchronous: naming it in /sync",
            join(&confirmed.iter().collect::<Vec<_>>())
        ),
    ))
}

/// Spec §4.4, before a promotion in synchronous mode: `/sync` names me with no standby (nobody
/// else is known to hold my commits yet), written first with a compare on its revision (a failed
/// compare postpones the promotion); then SSN: strict mode names the former `/sync` members
/// (commits wait for one of them, or for a new standby once confirmed), otherwise none.
/// Synchronous mode off: SSN goes back to the configuration's if tandem still manages it
/// (`managed`: left from an earlier term as primary), so no commit waits on a stale name.
pub fn before_promotion(me: &str, cluster: &ClusterView, managed: bool) -> Vec<Action> {
    let cfg = cluster.dynamic();
    // An unreadable configuration with /sync in place: as synchronous mode (not strict).
    let unknown_but_sync = mode_unknown(cluster) && active(cluster).is_some();
    if !cfg.synchronous_mode && !unknown_but_sync {
        return if managed {
            vec![Action::SetSsn { value: None }]
        } else {
            vec![]
        };
    }
    let revision = sync_revision(cluster);
    let old = cluster
        .sync
        .as_ref()
        .and_then(|s| SyncState::parse(&s.value).ok())
        .unwrap_or_default();
    let ssn = if cfg.synchronous_mode_strict {
        let names: Vec<String> = old
            .leader
            .iter()
            .chain(old.standbys.iter())
            .filter(|n| !n.eq_ignore_ascii_case(me))
            .cloned()
            .collect();
        match (names.is_empty(), cfg.synchronous_quorum) {
            (true, false) => PLACEHOLDER.to_string(),
            (true, true) => ssn_any(&[PLACEHOLDER.to_string()], 1),
            (false, false) => ssn_value(&names, cfg.synchronous_node_count as usize),
            (false, true) => ssn_any(
                &names,
                (cfg.synchronous_node_count.max(1) as usize).min(names.len()),
            ),
        }
    } else {
        String::new()
    };
    vec![
        Action::WriteSync {
            state: SyncState::new(me, vec![]),
            revision,
        },
        Action::SetSsn { value: Some(ssn) },
    ]
}

/// `/sync`'s mod revision, also when its value does not parse (so the primary can replace it).
fn sync_revision(cluster: &ClusterView) -> Option<i64> {
    cluster
        .sync
        .as_ref()
        .map(|s| s.mod_revision)
        .or_else(|| cluster.invalid.get("sync").map(|b| b.mod_revision))
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
