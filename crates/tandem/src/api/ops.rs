//! The state-changing endpoints (spec §5.4): dynamic configuration, switchover and failover,
//! restart, reload, reinitialize, failsafe. Request validation is pure (and unit-tested); the
//! handlers around it read and write the DCS, probe members, or ask the agent through
//! [`Control`].

use super::{Body, Reply};
use crate::control::{Control, Request, RestartConditions};
use crate::dcs::Dcs;
use crate::peer::PeerClient;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use std::time::Duration;
use tandem_core::cluster::{ClusterView, FailoverValue, InvalidValue};
use tandem_core::dynamic::{merge_patch, parse_bool, parse_uint};
use tracing::{info, warn};

/// How long a member's `/patroni` may take to answer the feasibility probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// DELETE /switchover's answer when it removed a `failover` value that does not parse.
pub const UNPARSABLE_FAILOVER_REMOVED: &str = "the failover key holds an unparsable value; removed";
/// How many times a request is written over a `failover` key that keeps changing under it.
const WRITE_TRIES: usize = 3;
/// How often the switchover handler re-reads the DCS while it waits for the new leader.
const POLL_EVERY: Duration = Duration::from_millis(250);

fn text(code: u16, msg: impl Into<String>) -> Reply {
    Reply {
        code,
        body: Body::Text(msg.into()),
        headers: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies.

/// A parsed request body: a JSON object, possibly empty.
pub type Object = Map<String, Value>;

/// Decodes a request body. `required`: an absent or empty body is an error (Patroni's rule for
/// PATCH/PUT /config, POST /switchover, /failover and /failsafe).
pub fn parse_body(bytes: &[u8], required: bool) -> Result<Object, Reply> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if required {
            Err(text(400, "request body is empty: send a JSON object"))
        } else {
            Ok(Object::new())
        };
    }
    let text_body = std::str::from_utf8(bytes)
        .map_err(|_| text(400, "request body is not UTF-8: send a JSON object"))?;
    match serde_json::from_str::<Value>(text_body) {
        Ok(Value::Object(o)) if o.is_empty() && required => Err(text(
            400,
            "request body is an empty JSON object: say what to change",
        )),
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(text(
            400,
            format!(
                "request body must be a JSON object, not {}",
                json_kind(&other)
            ),
        )),
        Err(e) => Err(text(400, format!("request body is not valid JSON: {e}"))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamic configuration.

/// What to tell an operator whose `config` key holds a value that does not parse, and how to
/// repair it (shared by GET/PATCH /config, `show-config` and `edit-config`).
pub fn invalid_config_message(bad: &InvalidValue) -> String {
    format!(
        "the config key holds {}: repair it with `tandem edit-config --replace <file>` \
         or PUT /config with the whole configuration",
        bad.problem
    )
}

/// PATCH /config's pure part: `patch` merged into `current` (RFC 7386: `null` removes), or 400
/// naming each setting whose new value is refused.
pub fn patched_config(current: &Value, patch: Object) -> Result<Value, Reply> {
    let mut data = current.clone();
    merge_patch(&mut data, &Value::Object(patch));
    let refused = tandem_core::dynamic::DynamicConfig::new_refusals(current, &data);
    if !refused.is_empty() {
        return Err(text(400, refused.join("; ")));
    }
    Ok(data)
}

/// An optional string field: absent, null and `""` are `None`; other non-strings are an error.
fn opt_string(body: &Object, key: &str) -> Result<Option<String>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(text(
            400,
            format!("'{key}' must be a string, not {}", json_kind(other)),
        )),
    }
}

/// An optional boolean field (`true`, `"on"`, `1`, ... as Patroni's parse_bool).
fn opt_bool(body: &Object, key: &str) -> Result<bool, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => parse_bool(v)
            .ok_or_else(|| text(400, format!("'{key}' must be true or false, not {v}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Schedules.

/// Parses a scheduled time (ISO 8601 with a time zone) and checks it is not in the past:
/// 400 without a time zone, 422 when unparsable or past (Patroni's codes and messages).
pub fn parse_schedule(
    value: &Value,
    action: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<FixedOffset>, Reply> {
    let unparsable = || {
        text(
            422,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        )
    };
    let Value::String(s) = value else {
        return Err(unparsable());
    };
    let trimmed = s.trim();
    // `Z` for UTC, which not every pattern below accepts.
    let zulu;
    let s = match trimmed.strip_suffix(['Z', 'z']) {
        Some(rest) => {
            zulu = format!("{rest}+00:00");
            zulu.as_str()
        }
        None => trimmed,
    };
    const WITH_ZONE: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
    ];
    const WITHOUT_ZONE: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    let parsed = DateTime::parse_from_rfc3339(s).ok().or_else(|| {
        WITH_ZONE
            .iter()
            .find_map(|f| DateTime::parse_from_str(s, f).ok())
    });
    let Some(at) = parsed else {
        let naive = WITHOUT_ZONE
            .iter()
            .any(|f| NaiveDateTime::parse_from_str(s, f).is_ok())
            || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
        return Err(if naive {
            text(
                400,
                format!("Timezone information is mandatory for the scheduled {action}"),
            )
        } else {
            unparsable()
        });
    };
    if at < now {
        return Err(text(422, format!("Cannot schedule {action} in the past")));
    }
    Ok(at)
}

/// Patroni's ISO form: `2024-01-01T10:00:00+00:00` (microseconds only when present).
pub fn iso(at: &DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

// ---------------------------------------------------------------------------------------------
// Restart.

#[derive(Clone, Debug, PartialEq)]
pub enum RestartPlan {
    Now(RestartConditions),
    At {
        schedule: String,
        conditions: RestartConditions,
    },
}

/// `X.Y` (X ≥ 10) or `X.Y.Z`, as Patroni accepts them.
pub fn check_postgres_version(v: &str) -> Result<(), String> {
    let parts: Result<Vec<u32>, _> = v.split('.').map(str::parse::<u32>).collect();
    let Ok(parts) = parts else {
        return Err(format!("Invalid PostgreSQL version: {v}"));
    };
    if parts.len() < 2 || parts.len() > 3 || (parts.len() == 2 && parts[0] < 10) {
        return Err(format!(
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {v}"
        ));
    }
    Ok(())
}

/// Seconds from `60`, `"60"`, `"60s"`, `"2min"`, `"1h"`, `"1500ms"` (rounded down); `None` when
/// unparsable.
pub fn parse_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num.parse().ok()?;
            let mult = match unit.trim() {
                "" | "s" => 1.0,
                "ms" => 0.001,
                "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return None,
            };
            let secs = n * mult;
            secs.is_finite().then_some(secs as i64)
        }
        _ => None,
    }
}

/// Validates a POST /restart body (spec §5.4).
pub fn plan_restart(body: &Object, paused: bool, now: DateTime<Utc>) -> Result<RestartPlan, Reply> {
    if paused && body.contains_key("schedule") {
        return Err(text(500, "Can't schedule restart in the paused state"));
    }
    let mut c = RestartConditions::default();
    let mut schedule = None;
    for (k, v) in body {
        match k.as_str() {
            "schedule" => schedule = Some(iso(&parse_schedule(v, "restart", now)?)),
            "role" => match v.as_str() {
                Some(r @ ("primary" | "standby_leader" | "replica")) => c.role = Some(r.into()),
                _ => {
                    return Err(text(
                        400,
                        "PostgreSQL role should be either primary, standby_leader, or replica",
                    ))
                }
            },
            "postgres_version" => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => return Err(text(400, format!("Invalid PostgreSQL version: {other}"))),
                };
                check_postgres_version(&s).map_err(|e| text(400, e))?;
                c.postgres_version = Some(s);
            }
            "timeout" => match parse_seconds(v) {
                Some(t) if t > 0 => c.timeout = Some(t as u64),
                _ => return Err(text(400, "Timeout should be a positive number of seconds")),
            },
            "restart_pending" => c.restart_pending = opt_bool(body, k)?,
            other => {
                return Err(text(
                    400,
                    format!("Unknown filter for the scheduled restart: {other}"),
                ))
            }
        }
    }
    Ok(match schedule {
        Some(schedule) => RestartPlan::At {
            schedule,
            conditions: c,
        },
        None => RestartPlan::Now(c),
    })
}

// ---------------------------------------------------------------------------------------------
// Reinitialize.

/// A POST /reinitialize body's options (both default to false).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReinitializeFlags {
    pub force: bool,
    pub from_leader: bool,
}

/// Validates a POST /reinitialize body: `force` and `from_leader` as booleans (400 otherwise);
/// other keys are ignored, as Patroni ignores them.
pub fn reinitialize_flags(body: &Object) -> Result<ReinitializeFlags, Reply> {
    Ok(ReinitializeFlags {
        force: opt_bool(body, "force")?,
        from_leader: opt_bool(body, "from_leader")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Switchover and failover.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Switchover,
    Failover,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Action::Switchover => "Switchover",
            Action::Failover => "Failover",
        }
    }
    /// `switched` / `failed`, as in `Successfully switched over to "X"`.
    fn past(self) -> &'static str {
        match self {
            Action::Switchover => "switched",
            Action::Failover => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SwitchoverPlan {
    pub action: Action,
    pub leader: Option<String>,
    pub candidate: Option<String>,
    pub scheduled_at: Option<String>,
}

impl SwitchoverPlan {
    /// The DCS `failover` value: `{"leader","member","scheduled_at"}`, compact.
    pub fn failover_value(&self) -> String {
        serde_json::to_string(&FailoverValue {
            leader: self.leader.clone(),
            member: self.candidate.clone(),
            scheduled_at: self.scheduled_at.clone(),
        })
        .unwrap_or_else(|_| "{}".into())
    }
}

/// Steps 1–4 of Patroni's switchover/failover processing (spec §5.4).
pub fn plan_switchover(
    body: &Object,
    mut action: Action,
    view: &ClusterView,
    now: DateTime<Utc>,
) -> Result<SwitchoverPlan, Reply> {
    let leader = opt_string(body, "leader")?;
    let candidate = match opt_string(body, "candidate")? {
        Some(c) => Some(c),
        None => opt_string(body, "member")?,
    };
    if action == Action::Failover && candidate.is_none() {
        return Err(text(
            400,
            "Failover could be performed only to a specific candidate",
        ));
    }
    if action == Action::Switchover && leader.is_none() {
        return Err(text(
            400,
            "Switchover could be performed only from a specific leader",
        ));
    }
    let paused = view.paused();
    let mut scheduled_at = None;
    if let Some(v) = body
        .get("scheduled_at")
        .filter(|v| !v.is_null() && *v != "")
    {
        if action == Action::Failover {
            return Err(text(400, "Failover can't be scheduled"));
        }
        if paused {
            return Err(text(400, "Can't schedule switchover in the paused state"));
        }
        scheduled_at = Some(iso(&parse_schedule(v, action.name(), now)?));
    }
    if paused && candidate.is_none() {
        return Err(text(
            400,
            "Switchover is possible only to a specific candidate in a paused state",
        ));
    }
    if action == Action::Failover && leader.is_some() {
        action = Action::Switchover;
    }
    if leader == candidate {
        return Err(text(400, "Switchover target and source are the same"));
    }
    Ok(SwitchoverPlan {
        action,
        leader,
        candidate,
        scheduled_at,
    })
}

/// Step 5's pure part: which members must be probed (name, api_url), or the 412 message.
pub fn candidates_to_probe(
    view: &ClusterView,
    plan: &SwitchoverPlan,
) -> Result<Vec<(String, String)>, String> {
    use crate::listing::{sync_mode, sync_standbys, SyncMode};
    let action = plan.action.name();
    let current = view.leader_name();
    if let Some(l) = &plan.leader {
        if current != Some(l.as_str()) {
            return Err("leader name does not match".into());
        }
    }
    let mode = sync_mode(view);
    let syncs = sync_standbys(view);
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<(String, String)> {
        view.members
            .values()
            .filter(|m| f(&m.name))
            .map(|m| (m.name.clone(), m.value.api_url.clone()))
            .collect()
    };
    let members = if let Some(c) = &plan.candidate {
        if plan.action == Action::Switchover && mode == SyncMode::On && !syncs.contains(c) {
            return Err("candidate name does not match with sync_standby".into());
        }
        let m = pick(&|n| n == c);
        if m.is_empty() {
            return Err("candidate does not exists".into());
        }
        m
    } else if mode == SyncMode::On {
        let m = pick(&|n| syncs.iter().any(|s| s == n));
        if m.is_empty() {
            return Err(format!(
                "{action} is not possible: can not find sync_standby"
            ));
        }
        m
    } else {
        let m: Vec<_> = pick(&|n| Some(n) != current)
            .into_iter()
            .filter(|(_, url)| !url.is_empty())
            .collect();
        if m.is_empty() {
            return Err(format!(
                "{action} is not possible: cluster does not have members except leader"
            ));
        }
        m
    };
    Ok(members)
}

/// Why a probed member cannot take over (`None`: it can), from its `/patroni` document.
pub fn failover_limitation(doc: Option<&Value>) -> Option<&'static str> {
    let Some(doc) = doc else {
        return Some("not reachable");
    };
    let tags = doc.get("tags");
    if tags.and_then(|t| t.get("nofailover")).and_then(parse_bool) == Some(true) {
        return Some("not allowed to promote");
    }
    if doc.get("watchdog_failed").and_then(parse_bool) == Some(true) {
        return Some("not watchdog capable");
    }
    None
}

/// What one poll of the DCS says about a requested switchover: `None` while it is under way.
pub fn poll_outcome(
    view: &ClusterView,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    action: Action,
) -> Option<Reply> {
    if let Some(l) = view.leader_name() {
        if Some(l) != old_leader {
            return Some(match candidate {
                Some(c) if c != l => text(
                    200,
                    format!(
                        "{} over to \"{l}\" instead of \"{c}\"",
                        capitalize(action.past())
                    ),
                ),
                _ => text(
                    200,
                    format!("Successfully {} over to \"{l}\"", action.past()),
                ),
            });
        }
    }
    if view.failover_request().is_none() {
        return Some(text(503, format!("{} failed", action.title())));
    }
    None
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `loop_wait` from the dynamic configuration (default 10).
fn loop_wait(view: &ClusterView) -> u64 {
    view.config
        .as_ref()
        .and_then(|c| c.value.get("loop_wait"))
        .and_then(parse_uint)
        .unwrap_or(tandem_core::dynamic::DEFAULT_LOOP_WAIT)
}

// ---------------------------------------------------------------------------------------------
// The handlers.

/// What the state-changing endpoints need: the DCS, the agent, a client to probe members.
#[derive(Clone, Default)]
pub struct Ops {
    pub dcs: Option<Dcs>,
    pub control: Option<Control>,
    pub peer: Option<PeerClient>,
}

fn no_dcs() -> Reply {
    text(503, "this node has no DCS connection")
}

fn dcs_error(e: anyhow::Error) -> Reply {
    warn!("REST API: {e:#}");
    text(503, format!("cannot read the DCS: {e:#}"))
}

impl Ops {
    async fn read(&self) -> Result<(Dcs, ClusterView), Reply> {
        let dcs = self.dcs.clone().ok_or_else(no_dcs)?;
        let (view, _) = dcs.read_cluster().await.map_err(dcs_error)?;
        Ok((dcs, view))
    }

    async fn ask(&self, req: Request, wait: Duration) -> Reply {
        match &self.control {
            Some(c) => {
                let r = c.request(req, wait).await;
                text(r.code, r.message)
            }
            None => text(503, "the agent is not running"),
        }
    }

    /// PATCH /config.
    pub async fn patch_config(&self, patch: Object) -> Reply {
        let (dcs, view) = match self.read().await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let Some(config) = view.config else {
            return match view.invalid_config() {
                // Nothing sensible to merge into: only a whole replacement repairs it.
                Some(bad) => text(409, invalid_config_message(bad)),
                None => text(
                    503,
                    "the config key does not exist in the DCS: is the cluster bootstrapped?",
                ),
            };
        };
        let data = match patched_config(&config.value, patch) {
            Ok(d) => d,
            Err(r) => return r,
        };
        if data != config.value {
            let value = serde_json::to_string(&data).unwrap_or_default();
            match dcs.cas("config", &value, config.mod_revision).await {
                Ok(true) => info!("REST API: dynamic configuration changed"),
                Ok(false) => {
                    return text(
                        409,
                        "the configuration was changed concurrently: read it again and retry",
                    )
                }
                Err(e) => return text(409, format!("cannot write the config key: {e:#}")),
            }
        }
        Reply::json(200, data)
    }

    /// PUT /config.
    pub async fn put_config(&self, body: Object) -> Reply {
        let (dcs, view) = match self.read().await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let new = Value::Object(body);
        let old = view
            .config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or(Value::Null);
        let refused = tandem_core::dynamic::DynamicConfig::new_refusals(&old, &new);
        if !refused.is_empty() {
            return text(400, refused.join("; "));
        }
        if view.config.as_ref().map(|c| &c.value) != Some(&new) {
            let value = serde_json::to_string(&new).unwrap_or_default();
            if let Err(e) = dcs.put("config", &value, None).await {
                return text(502, format!("cannot write the config key: {e:#}"));
            }
            match view.invalid_config() {
                Some(bad) => info!(
                    "REST API: dynamic configuration replaced (the config key held {})",
                    bad.problem
                ),
                None => info!("REST API: dynamic configuration replaced"),
            }
        }
        Reply::json(200, new)
    }

    /// POST /switchover and POST /failover.
    pub async fn switchover(&self, body: Object, action: Action) -> Reply {
        // Wrong types are refused before anything is read.
        for key in ["leader", "candidate", "member", "scheduled_at"] {
            if let Err(r) = opt_string(&body, key) {
                return r;
            }
        }
        let (dcs, view) = match self.read().await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let plan = match plan_switchover(&body, action, &view, Utc::now()) {
            Ok(p) => p,
            Err(r) => return r,
        };
        info!(
            "REST API: received {} request with leader={:?} candidate={:?} scheduled_at={:?}",
            plan.action.name(),
            plan.leader,
            plan.candidate,
            plan.scheduled_at
        );
        // Checked now for a scheduled request too, as Patroni does: a wrong leader or an unknown
        // candidate is refused at once instead of failing at the due time.
        let probe = match candidates_to_probe(&view, &plan) {
            Ok(p) => p,
            Err(msg) => return text(412, msg),
        };
        if !self.any_good_candidate(&probe).await {
            return text(
                412,
                format!(
                    "{} is not possible: no good candidates have been found",
                    plan.action.name()
                ),
            );
        }
        if !self
            .write_request(&dcs, &view, &plan.failover_value())
            .await
        {
            return text(503, "failed to write failover key into DCS");
        }
        if plan.scheduled_at.is_some() {
            return text(202, format!("{} scheduled", plan.action.title()));
        }
        let old_leader = view.leader_name().map(str::to_string);
        let secs = 2 * loop_wait(&view).max(10);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_EVERY).await;
            if let Ok((view, _)) = dcs.read_cluster().await {
                if let Some(r) = poll_outcome(
                    &view,
                    old_leader.as_deref(),
                    plan.candidate.as_deref(),
                    plan.action,
                ) {
                    return r;
                }
            }
        }
        text(
            503,
            format!(
                "{} status unknown after {secs} seconds; operation may still be in progress",
                plan.action.title()
            ),
        )
    }

    /// Writes a request into the `failover` key with a compare on the key as `view` read it.
    /// When the compare fails, the key is read again: the write is retried (at most
    /// [`WRITE_TRIES`] times) only while the key holds no request (`{}`, absent, or a value that
    /// does not parse, e.g. just cleared by the leader); a concurrent valid request is never
    /// overwritten.
    async fn write_request(&self, dcs: &Dcs, view: &ClusterView, value: &str) -> bool {
        let mut read = (view.failover.clone(), view.invalid_failover().cloned());
        for _ in 0..WRITE_TRIES {
            let written = match &read {
                (Some(f), _) => dcs.cas("failover", value, f.mod_revision).await,
                (None, Some(bad)) => {
                    warn!(
                        "REST API: the failover key holds {}: treated as absent and replaced",
                        bad.problem
                    );
                    dcs.cas("failover", value, bad.mod_revision).await
                }
                (None, None) => dcs.create("failover", value).await,
            };
            match written {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    warn!("REST API: cannot write the failover key: {e:#}");
                    return false;
                }
            }
            let Ok((now, _)) = dcs.read_cluster().await else {
                return false;
            };
            if now.failover_request().is_some() {
                return false;
            }
            read = (now.failover.clone(), now.invalid_failover().cloned());
        }
        false
    }

    async fn any_good_candidate(&self, members: &[(String, String)]) -> bool {
        let Some(peer) = &self.peer else {
            return false;
        };
        let probes = members.iter().map(|(_, url)| async move {
            if url.is_empty() {
                return None;
            }
            peer.get_json(url, PROBE_TIMEOUT).await.ok()
        });
        let docs = futures_util::future::join_all(probes).await;
        docs.iter()
            .any(|d| failover_limitation(d.as_ref()).is_none())
    }

    /// DELETE /switchover.
    pub async fn delete_switchover(&self) -> Reply {
        let mut answer = text(404, "no switchover is scheduled");
        // A second read when the key changed between the read and the compare (the leader may
        // have just cleared it).
        for _ in 0..2 {
            let (dcs, view) = match self.read().await {
                Ok(x) => x,
                Err(r) => return r,
            };
            let (mod_revision, done) = match (&view.failover, view.invalid_failover()) {
                (_, Some(bad)) => {
                    warn!(
                        "REST API: the failover key holds {}: removing it",
                        bad.problem
                    );
                    (bad.mod_revision, UNPARSABLE_FAILOVER_REMOVED)
                }
                (Some(f), _) if f.value.scheduled_at.is_some() => {
                    (f.mod_revision, "scheduled switchover deleted")
                }
                _ => return text(404, "no switchover is scheduled"),
            };
            answer = match dcs.cas("failover", "{}", mod_revision).await {
                Ok(true) => return text(200, done),
                Ok(false) => text(
                    409,
                    "cannot delete the scheduled switchover: the failover key changed meanwhile; retry",
                ),
                Err(e) => return text(503, format!("cannot write the failover key: {e:#}")),
            };
        }
        answer
    }

    /// POST /restart.
    pub async fn restart(&self, body: Object, paused: bool) -> Reply {
        let plan = match plan_restart(&body, paused, Utc::now()) {
            Ok(p) => p,
            Err(r) => return r,
        };
        match plan {
            RestartPlan::Now(c) => {
                // PostgreSQL may take long to start: Patroni's handler waits for it too.
                let wait = Duration::from_secs(c.timeout.unwrap_or(300) + 60);
                self.ask(Request::Restart(c), wait).await
            }
            RestartPlan::At {
                schedule,
                conditions,
            } => {
                self.ask(
                    Request::ScheduleRestart {
                        schedule,
                        conditions,
                    },
                    Duration::from_secs(10),
                )
                .await
            }
        }
    }

    /// DELETE /restart.
    pub async fn delete_restart(&self) -> Reply {
        self.ask(Request::CancelScheduledRestart, Duration::from_secs(10))
            .await
    }

    /// POST /reload.
    pub async fn reload(&self) -> Reply {
        self.ask(Request::Reload, Duration::from_secs(30)).await
    }

    /// POST /reinitialize.
    pub async fn reinitialize(&self, body: Object) -> Reply {
        let ReinitializeFlags { force, from_leader } = match reinitialize_flags(&body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        self.ask(
            Request::Reinitialize { force, from_leader },
            Duration::from_secs(30),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tandem_core::cluster::{LeaderKey, Member, MemberValue, Versioned};

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn err(r: Result<impl std::fmt::Debug, Reply>) -> (u16, String) {
        match r.unwrap_err() {
            Reply {
                code,
                body: Body::Text(t),
                ..
            } => (code, t),
            other => panic!("{other:?}"),
        }
    }

    fn view(config: Value) -> ClusterView {
        let member = |name: &str, tags: Value| {
            (
                name.to_string(),
                Member {
                    name: name.into(),
                    value: MemberValue {
                        api_url: format!("http://127.0.0.1:1/{name}"),
                        tags: tags.as_object().cloned().unwrap_or_default(),
                        ..Default::default()
                    },
                    lease: 1,
                },
            )
        };
        ClusterView {
            config: Some(Versioned {
                value: config,
                mod_revision: 3,
            }),
            leader: Some(LeaderKey {
                name: "pg0".into(),
                lease: 1,
                mod_revision: 1,
            }),
            members: [
                member("pg0", json!({})),
                member("pg1", json!({})),
                member("pg2", json!({"nofailover": true})),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"", false).unwrap(), Object::new());
        assert_eq!(parse_body(b"{}", false).unwrap(), Object::new());
        assert_eq!(err(parse_body(b"", true)).0, 400);
        assert_eq!(err(parse_body(b" {} ", true)).0, 400);
        let (code, msg) = err(parse_body(b"{\"a\":", false));
        assert_eq!(code, 400);
        assert!(msg.contains("not valid JSON"), "{msg}");
        let (code, msg) = err(parse_body(b"[1]", false));
        assert_eq!(
            (code, msg.as_str()),
            (400, "request body must be a JSON object, not an array")
        );
        assert_eq!(err(parse_body(b"\xff\xfe", false)).0, 400);
        assert_eq!(parse_body(b"{\"a\":1}", true).unwrap()["a"], 1);
    }

    #[test]
    fn schedules() {
        let p = |s: &str| parse_schedule(&json!(s), "restart", now());
        assert_eq!(
            iso(&p("2030-01-01T10:00:00+00:00").unwrap()),
            "2030-01-01T10:00:00+00:00"
        );
        assert_eq!(
            iso(&p("2030-01-01T10:00Z").unwrap()),
            "2030-01-01T10:00:00+00:00"
        );
        assert_eq!(
            iso(&p("2030-01-01 12:00:00.5+02").unwrap()),
            "2030-01-01T12:00:00.500+02:00"
        );
        assert_eq!(
            iso(&p("2030-01-01T10:00:00+0100").unwrap()),
            "2030-01-01T10:00:00+01:00"
        );
        assert_eq!(
            err(p("2030-01-01T10:00")),
            (
                400,
                "Timezone information is mandatory for the scheduled restart".into()
            )
        );
        assert_eq!(err(p("2030-01-01")).0, 400);
        assert_eq!(
            err(p("2020-01-01T10:00:00+00:00")),
            (422, "Cannot schedule restart in the past".into())
        );
        assert_eq!(err(p("tomorrow")).0, 422);
        assert_eq!(err(parse_schedule(&json!(5), "restart", now())).0, 422);
    }

    #[test]
    fn restart_bodies() {
        let plan = |v: Value| plan_restart(&obj(v), false, now());
        assert_eq!(
            plan(json!({})).unwrap(),
            RestartPlan::Now(RestartConditions::default())
        );
        assert_eq!(
            plan(json!({"role": "replica", "postgres_version": "15.4", "timeout": "2min", "restart_pending": true}))
                .unwrap(),
            RestartPlan::Now(RestartConditions {
                role: Some("replica".into()),
                postgres_version: Some("15.4".into()),
                timeout: Some(120),
                restart_pending: true,
            })
        );
        assert_eq!(
            plan(json!({"schedule": "2030-01-02T00:00:00+00:00"})).unwrap(),
            RestartPlan::At {
                schedule: "2030-01-02T00:00:00+00:00".into(),
                conditions: RestartConditions::default()
            }
        );
        assert_eq!(
            err(plan(json!({"role": "master"}))),
            (
                400,
                "PostgreSQL role should be either primary, standby_leader, or replica".into()
            )
        );
        assert_eq!(err(plan(json!({"role": 1}))).0, 400);
        assert_eq!(
            err(plan(json!({"postgres_version": "9.6"}))),
            (
                400,
                "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6".into()
            )
        );
        assert_eq!(
            err(plan(json!({"postgres_version": "a.b"}))).1,
            "Invalid PostgreSQL version: a.b"
        );
        assert_eq!(err(plan(json!({"postgres_version": [1]}))).0, 400);
        for t in [
            json!(0),
            json!(-5),
            json!("x"),
            json!(null),
            json!("5 parsecs"),
        ] {
            assert_eq!(
                err(plan(json!({ "timeout": t }))),
                (400, "Timeout should be a positive number of seconds".into())
            );
        }
        assert_eq!(
            err(plan(json!({"bogus": 1}))),
            (
                400,
                "Unknown filter for the scheduled restart: bogus".into()
            )
        );
        assert_eq!(err(plan(json!({"restart_pending": "maybe"}))).0, 400);
        assert_eq!(err(plan(json!({"schedule": "2030-01-01T10:00"}))).0, 400);
        assert_eq!(err(plan(json!({"schedule": "2000-01-01T10:00Z"}))).0, 422);
        assert_eq!(
            err(plan_restart(
                &obj(json!({"schedule": "2030-01-02T00:00:00Z"})),
                true,
                now()
            )),
            (500, "Can't schedule restart in the paused state".into())
        );
        // A paused cluster still restarts now.
        assert!(plan_restart(&Object::new(), true, now()).is_ok());
    }

    #[test]
    fn switchover_requests() {
        let v = view(json!({}));
        let plan = |b: Value, a: Action| plan_switchover(&obj(b), a, &v, now());
        assert_eq!(
            err(plan(json!({"leader": "pg0"}), Action::Failover)),
            (
                400,
                "Failover could be performed only to a specific candidate".into()
            )
        );
        assert_eq!(
            err(plan(json!({"candidate": "pg1"}), Action::Switchover)),
            (
                400,
                "Switchover could be performed only from a specific leader".into()
            )
        );
        assert_eq!(
            err(plan(
                json!({"candidate": "pg1", "scheduled_at": "2030-01-02T00:00Z"}),
                Action::Failover
            )),
            (400, "Failover can't be scheduled".into())
        );
        assert_eq!(
            err(plan(
                json!({"leader": "pg0", "candidate": "pg0"}),
                Action::Switchover
            )),
            (400, "Switchover target and source are the same".into())
        );
        assert_eq!(err(plan(json!({"leader": 5}), Action::Switchover)).0, 400);
        assert_eq!(
            err(plan(
                json!({"leader": "pg0", "scheduled_at": "2030-01-01T10:00"}),
                Action::Switchover
            ))
            .0,
            400
        );
        let p = plan(
            json!({"leader": "pg0", "member": "pg1", "scheduled_at": "2030-01-02T00:00Z"}),
            Action::Switchover,
        )
        .unwrap();
        assert_eq!(p.candidate.as_deref(), Some("pg1"));
        assert_eq!(
            p.failover_value(),
            r#"{"leader":"pg0","member":"pg1","scheduled_at":"2030-01-02T00:00:00+00:00"}"#
        );
        // A failover naming the leader is a switchover.
        let p = plan(
            json!({"leader": "pg0", "candidate": "pg1"}),
            Action::Failover,
        )
        .unwrap();
        assert_eq!(p.action, Action::Switchover);

        let paused = view(json!({"pause": true}));
        let plan = |b: Value| plan_switchover(&obj(b), Action::Switchover, &paused, now());
        assert_eq!(
            err(plan(json!({"leader": "pg0"}))),
            (
                400,
                "Switchover is possible only to a specific candidate in a paused state".into()
            )
        );
        assert_eq!(
            err(plan(
                json!({"leader": "pg0", "candidate": "pg1", "scheduled_at": "2030-01-02T00:00Z"})
            )),
            (400, "Can't schedule switchover in the paused state".into())
        );
        assert!(plan(json!({"leader": "pg0", "candidate": "pg1"})).is_ok());
    }

    #[test]
    fn feasibility() {
        let v = view(json!({}));
        let plan = |leader: Option<&str>, candidate: Option<&str>| SwitchoverPlan {
            action: Action::Switchover,
            leader: leader.map(str::to_string),
            candidate: candidate.map(str::to_string),
            scheduled_at: None,
        };
        assert_eq!(
            candidates_to_probe(&v, &plan(Some("pg1"), None)).unwrap_err(),
            "leader name does not match"
        );
        assert_eq!(
            candidates_to_probe(&v, &plan(Some("pg0"), Some("pg9"))).unwrap_err(),
            "candidate does not exists"
        );
        let names = |r: Result<Vec<(String, String)>, String>| {
            r.unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        };
        assert_eq!(
            names(candidates_to_probe(&v, &plan(Some("pg0"), Some("pg1")))),
            ["pg1"]
        );
        assert_eq!(
            names(candidates_to_probe(&v, &plan(Some("pg0"), None))),
            ["pg1", "pg2"]
        );
        let mut sync = view(json!({"synchronous_mode": true}));
        assert_eq!(
            candidates_to_probe(&sync, &plan(Some("pg0"), Some("pg1"))).unwrap_err(),
            "candidate name does not match with sync_standby"
        );
        assert_eq!(
            candidates_to_probe(&sync, &plan(Some("pg0"), None)).unwrap_err(),
            "switchover is not possible: can not find sync_standby"
        );
        sync.sync = Some(Versioned {
            value: json!({"leader": "pg0", "sync_standby": "pg1"}),
            mod_revision: 1,
        });
        assert_eq!(
            names(candidates_to_probe(&sync, &plan(Some("pg0"), None))),
            ["pg1"]
        );
        let mut alone = view(json!({}));
        alone.members.retain(|n, _| n == "pg0");
        assert_eq!(
            candidates_to_probe(&alone, &plan(Some("pg0"), None)).unwrap_err(),
            "switchover is not possible: cluster does not have members except leader"
        );

        assert_eq!(failover_limitation(None), Some("not reachable"));
        assert_eq!(
            failover_limitation(Some(&json!({"tags": {"nofailover": true}}))),
            Some("not allowed to promote")
        );
        assert_eq!(
            failover_limitation(Some(&json!({"watchdog_failed": true}))),
            Some("not watchdog capable")
        );
        assert_eq!(failover_limitation(Some(&json!({"role": "replica"}))), None);
    }

    #[test]
    fn polling() {
        let mut v = view(json!({}));
        v.failover = Some(Versioned {
            value: FailoverValue {
                leader: Some("pg0".into()),
                member: Some("pg1".into()),
                scheduled_at: None,
            },
            mod_revision: 5,
        });
        let outcome = |v: &ClusterView, c: Option<&str>, a| {
            poll_outcome(v, Some("pg0"), c, a).map(|r| match r.body {
                Body::Text(t) => (r.code, t),
                _ => panic!(),
            })
        };
        assert_eq!(outcome(&v, Some("pg1"), Action::Switchover), None);
        v.leader = None;
        assert_eq!(outcome(&v, Some("pg1"), Action::Switchover), None);
        v.leader = Some(LeaderKey {
            name: "pg1".into(),
            lease: 2,
            mod_revision: 9,
        });
        assert_eq!(
            outcome(&v, Some("pg1"), Action::Switchover),
            Some((200, "Successfully switched over to \"pg1\"".into()))
        );
        assert_eq!(
            outcome(&v, Some("pg1"), Action::Failover),
            Some((200, "Successfully failed over to \"pg1\"".into()))
        );
        assert_eq!(
            outcome(&v, Some("pg2"), Action::Switchover),
            Some((200, "Switched over to \"pg1\" instead of \"pg2\"".into()))
        );
        v.leader = Some(LeaderKey {
            name: "pg0".into(),
            lease: 1,
            mod_revision: 1,
        });
        v.failover = Some(Versioned {
            value: FailoverValue::default(),
            mod_revision: 6,
        });
        assert_eq!(
            outcome(&v, Some("pg1"), Action::Switchover),
            Some((503, "Switchover failed".into()))
        );
    }

    #[test]
    fn versions_and_seconds() {
        assert!(check_postgres_version("15.4").is_ok());
        assert!(check_postgres_version("9.6.24").is_ok());
        assert!(check_postgres_version("10").is_err());
        assert!(check_postgres_version("1.2.3.4").is_err());
        assert_eq!(parse_seconds(&json!(30)), Some(30));
        assert_eq!(parse_seconds(&json!("30")), Some(30));
        assert_eq!(parse_seconds(&json!("1h")), Some(3600));
        assert_eq!(parse_seconds(&json!("1500ms")), Some(1));
        assert_eq!(parse_seconds(&json!("x")), None);
        assert_eq!(parse_seconds(&json!(true)), None);
    }
}

/// Strategies for the property tests of the request parsers (here and in `api.rs`): JSON of
/// every shape, biased towards the keys and values the parsers look at.
#[cfg(test)]
pub(crate) mod arbitrary {
    use super::Object;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Keys the request parsers read, and odd ones.
    pub fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "leader", "candidate", "member", "scheduled_at", "schedule", "role",
                "postgres_version", "timeout", "restart_pending", "force", "from_leader", "name",
                "api_url", "ttl", "loop_wait", "retry_timeout", "pause", "postgresql",
                "parameters", "synchronous_mode", "failsafe_mode", "maximum_lag_on_failover",
                "use_pg_rewind", "max_connections", "tags", "nofailover", "watchdog_failed",
            ])
            .prop_map(str::to_string),
            1 => ".{0,6}",
        ]
    }

    /// Strings the parsers give meaning to: member names, times, durations, versions, booleans.
    pub fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "", "pg0", "pg1", "pg2", "pg9", "now", "on", "off", "true", "yes", "1", "0",
                "-5", "1e400", "NaN", "60", "60s", "2min", "1h", "1500ms", "5 parsecs", "15.4",
                "9.6", "10", "1.2.3.4", "primary", "replica", "standby_leader", "master",
                "2030-01-02T00:00:00Z", "2030-01-02T00:00", "2001-01-01T00:00:00+00:00",
            ])
            .prop_map(str::to_string),
            time(),
            // Timestamps, well and badly formed.
            "[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{0,12})?)?)?(Z|z|[+-][0-9]{1,2}(:?[0-9]{1,2})?)?",
            // Numbers with units.
            "-?[0-9]{0,20}(\\.[0-9]{0,4})?(e[0-9]{1,3})? ?(s|ms|min|h|d|kB|MB|GB|TB|x)?",
            ".{0,12}",
        ]
    }

    /// Times around the tests' "now" (2030-01-01), in the shapes people write them.
    pub fn time() -> impl Strategy<Value = String> {
        (
            2029..2040i32,
            1..=12u32,
            1..=28u32,
            0..24u32,
            0..60u32,
            prop::option::of(0..60u32),
            prop::option::of(0..1_000_000u32),
            prop::sample::select(vec!["T", " "]),
            prop::sample::select(vec!["Z", "z", "+00:00", "+02", "-0530", "+14:00", ""]),
        )
            .prop_map(|(y, mo, d, h, mi, sec, frac, sep, zone)| {
                let mut t = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}");
                if let Some(sec) = sec {
                    t.push_str(&format!(":{sec:02}"));
                    if let Some(f) = frac {
                        t.push_str(&format!(".{f}"));
                    }
                }
                t + zone
            })
    }

    pub fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::from),
        ]
    }

    pub fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A request body: a JSON object.
    pub fn body() -> impl Strategy<Value = Object> {
        prop::collection::btree_map(key(), value(), 0..6).prop_map(|m| m.into_iter().collect())
    }

    /// A body with `fields` set (each maybe) to values from `field`, over a random body: so that
    /// well-formed requests are common, not only refusals.
    pub fn body_with(
        fields: &'static [&'static str],
        field: impl Strategy<Value = Value> + 'static,
    ) -> impl Strategy<Value = Object> {
        let set = prop::collection::vec(prop::option::weighted(0.7, field), fields.len());
        (body(), set).prop_map(move |(mut b, set)| {
            for (k, v) in fields.iter().zip(set) {
                match v {
                    Some(v) => b.insert(k.to_string(), v),
                    None => b.remove(*k),
                };
            }
            b
        })
    }

    /// Member names (of the test views: pg0 leads, pg1 and pg2 replicate), and other values.
    pub fn name() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => prop::sample::select(vec!["pg0", "pg1", "pg2", "pg9", ""]).prop_map(Value::from),
            1 => text().prop_map(Value::from),
            1 => leaf(),
        ]
    }
}

/// Property tests: whatever a client sends, each parser gives a value or a clear refusal (a
/// 4xx/5xx with a message), never a panic; and what it accepts is consistent.
#[cfg(test)]
mod properties {
    use super::arbitrary::{body, body_with, name, text, time, value};
    use super::*;
    use proptest::prelude::*;
    use tandem_core::cluster::{LeaderKey, Member, MemberValue, Versioned};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A refusal's code is one of `codes` and it explains itself.
    fn clear(r: &Reply, codes: &[u16]) -> Result<(), TestCaseError> {
        prop_assert!(codes.contains(&r.code), "code {} for {r:?}", r.code);
        match &r.body {
            Body::Text(t) => prop_assert!(!t.trim().is_empty(), "empty message"),
            other => prop_assert!(false, "not a text answer: {other:?}"),
        }
        Ok(())
    }

    fn view(config: Value, sync: Option<Value>) -> ClusterView {
        let members = ["pg0", "pg1", "pg2"].map(|n| {
            (
                n.to_string(),
                Member {
                    name: n.into(),
                    value: MemberValue {
                        api_url: format!("http://127.0.0.1:1/{n}"),
                        ..Default::default()
                    },
                    lease: 1,
                },
            )
        });
        ClusterView {
            config: Some(Versioned {
                value: config,
                mod_revision: 3,
            }),
            leader: Some(LeaderKey {
                name: "pg0".into(),
                lease: 1,
                mod_revision: 1,
            }),
            members: members.into_iter().collect(),
            sync: sync.map(|v| Versioned {
                value: v,
                mod_revision: 4,
            }),
            ..Default::default()
        }
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_object_or_a_400(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            required in any::<bool>(),
        ) {
            match parse_body(&bytes, required) {
                Ok(o) => prop_assert!(!required || !o.is_empty()),
                Err(r) => clear(&r, &[400])?,
            }
        }

        #[test]
        fn an_object_round_trips_and_its_truncations_do_not_panic(
            b in body(),
            cut in any::<prop::sample::Index>(),
        ) {
            let text = serde_json::to_string(&Value::Object(b)).unwrap();
            // (Compared with serde_json's own reading: its float parsing may differ in the last
            // digit from what was printed.)
            let read = serde_json::from_str::<Value>(&text).unwrap();
            prop_assert_eq!(parse_body(text.as_bytes(), false).ok(), read.as_object().cloned());
            let bytes = &text.as_bytes()[..cut.index(text.len() + 1)];
            if let Err(r) = parse_body(bytes, true) {
                clear(&r, &[400])?;
            }
        }

        #[test]
        fn switchover_bodies_give_a_consistent_plan_or_a_clear_refusal(
            b in prop_oneof![
                body(),
                body_with(&["leader", "candidate", "member"], name()),
                body_with(&["leader", "candidate", "scheduled_at"], prop_oneof![
                    name(),
                    time().prop_map(Value::from),
                ]),
            ],
            failover in any::<bool>(),
            paused in any::<bool>(),
            sync in any::<bool>(),
        ) {
            let action = if failover { Action::Failover } else { Action::Switchover };
            let v = view(
                serde_json::json!({"pause": paused, "synchronous_mode": sync}),
                sync.then(|| serde_json::json!({"leader": "pg0", "sync_standby": "pg1"})),
            );
            match plan_switchover(&b, action, &v, now()) {
                Ok(plan) => {
                    prop_assert!(plan.leader.is_some() || plan.candidate.is_some());
                    prop_assert!(plan.leader != plan.candidate);
                    if let Some(at) = &plan.scheduled_at {
                        prop_assert_eq!(plan.action, Action::Switchover);
                        let again = parse_schedule(&Value::from(at.clone()), "switchover", now());
                        let again = again.map(|t| iso(&t)).ok();
                        prop_assert_eq!(again.as_ref(), Some(at));
                    }
                    // What is written to the DCS reads back as the same request.
                    let stored = FailoverValue::parse(&plan.failover_value()).unwrap();
                    prop_assert_eq!(&stored.leader, &plan.leader);
                    prop_assert_eq!(&stored.member, &plan.candidate);
                    prop_assert_eq!(&stored.scheduled_at, &plan.scheduled_at);
                    match candidates_to_probe(&v, &plan) {
                        Ok(m) => prop_assert!(!m.is_empty()),
                        Err(msg) => prop_assert!(!msg.is_empty()),
                    }
                }
                Err(r) => clear(&r, &[400, 422])?,
            }
        }

        #[test]
        fn restart_bodies_give_a_plan_or_a_clear_refusal(
            b in prop_oneof![
                body(),
                body_with(
                    &["schedule", "role", "postgres_version", "timeout", "restart_pending"],
                    text().prop_map(Value::from),
                ),
                body_with(&["schedule"], time().prop_map(Value::from)),
            ],
            paused in any::<bool>(),
        ) {
            match plan_restart(&b, paused, now()) {
                Ok(RestartPlan::Now(c)) => {
                    prop_assert!(c.timeout.is_none_or(|t| t > 0));
                }
                Ok(RestartPlan::At { schedule, conditions }) => {
                    prop_assert!(!paused);
                    let again = parse_schedule(&Value::from(schedule.clone()), "restart", now());
                    prop_assert_eq!(again.map(|t| iso(&t)).ok(), Some(schedule));
                    if let Some(v) = &conditions.postgres_version {
                        prop_assert!(check_postgres_version(v).is_ok());
                    }
                }
                Err(r) => clear(&r, &[400, 422, 500])?,
            }
        }

        #[test]
        fn schedules_parse_to_a_future_time_that_round_trips(v in prop_oneof![
            text().prop_map(Value::from),
            time().prop_map(Value::from),
            value(),
        ]) {
            match parse_schedule(&v, "restart", now()) {
                Ok(at) => {
                    prop_assert!(at >= now());
                    let again = parse_schedule(&Value::from(iso(&at)), "restart", now());
                    prop_assert_eq!(again.ok(), Some(at));
                }
                Err(r) => clear(&r, &[400, 422])?,
            }
        }

        #[test]
        fn seconds_and_versions_never_panic(v in value(), s in text(), n in 0u32..1_000_000) {
            let _ = parse_seconds(&v);
            let _ = check_postgres_version(&s);
            prop_assert_eq!(parse_seconds(&Value::from(n.to_string())), Some(i64::from(n)));
            prop_assert_eq!(parse_seconds(&Value::from(format!("{n}min"))), Some(60 * i64::from(n)));
            let version = format!("{}.{}", 10 + n % 90, n);
            prop_assert!(check_postgres_version(&version).is_ok(), "{}", version);
        }

        #[test]
        fn config_patches_merge_or_name_what_is_refused(
            current in body(),
            patch in body(),
        ) {
            let current = Value::Object(current);
            match patched_config(&current, patch.clone()) {
                Ok(merged) => {
                    prop_assert!(merged.is_object());
                    // Every non-null top-level setting of the patch is in the result.
                    for (k, v) in &patch {
                        if !v.is_null() && !v.is_object() {
                            prop_assert_eq!(merged.get(k), Some(v));
                        }
                    }
                }
                Err(r) => clear(&r, &[400])?,
            }
        }

        #[test]
        fn reinitialize_and_failover_documents_never_panic(b in body(), doc in value()) {
            match reinitialize_flags(&b) {
                Ok(f) => {
                    let stated = |k: &str| b.get(k).and_then(parse_bool).unwrap_or(false);
                    prop_assert_eq!(f, ReinitializeFlags {
                        force: stated("force"),
                        from_leader: stated("from_leader"),
                    });
                }
                Err(r) => clear(&r, &[400])?,
            }
            let _ = failover_limitation(Some(&doc));
        }

        #[test]
        fn stored_failover_values_parse_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..64), s in text()) {
            if let Ok(t) = std::str::from_utf8(&bytes) {
                if let Err(e) = FailoverValue::parse(t) {
                    prop_assert!(!e.is_empty());
                }
            }
            if let Err(e) = FailoverValue::parse(&s) {
                prop_assert!(!e.is_empty());
            }
        }
    }
}
