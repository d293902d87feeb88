//! The operator's verbs, named and behaving as `patronictl`'s (spec §6.2): they read the DCS for
//! the cluster's state and ask members' REST APIs to act (the DCS directly where patronictl does).
//!
//! Every question has a default and `--force` skips it; without a terminal on stdin a question
//! is an error that says to add `--force`. Failures end with an error that says what to do.

use crate::api::ops::{
    check_postgres_version, invalid_config_message, iso, parse_schedule, Object,
    UNPARSABLE_FAILOVER_REMOVED,
};
use crate::config::Config;
use crate::dcs::Dcs;
use crate::listing::{self, ListFormat};
use crate::peer::PeerClient;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, FixedOffset, Local, TimeZone, Utc};
use serde_json::{json, Map, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use tandem_core::cluster::{ClusterView, FailoverValue, Member, Versioned};
use tandem_core::dynamic::{merge_patch, parse_uint};
use tokio::time::Instant;

/// Time allowed for one REST request that returns at once.
const SHORT: Duration = Duration::from_secs(10);
/// Time allowed for a switchover/failover request (the member waits up to 2*max(10, loop_wait)).
const SWITCHOVER_WAIT: Duration = Duration::from_secs(180);
/// Time allowed for an immediate restart (the member waits for PostgreSQL to start).
const RESTART_WAIT: Duration = Duration::from_secs(420);

/// The role filter of `-r/--role` (spec §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleFilter {
    Leader,
    Primary,
    StandbyLeader,
    Replica,
    Standby,
    Any,
}

impl std::str::FromStr for RoleFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<RoleFilter, String> {
        Ok(match s {
            "leader" => RoleFilter::Leader,
            "primary" | "master" => RoleFilter::Primary,
            "standby-leader" | "standby_leader" => RoleFilter::StandbyLeader,
            "replica" => RoleFilter::Replica,
            "standby" => RoleFilter::Standby,
            "any" => RoleFilter::Any,
            other => {
                return Err(format!(
                    "unknown role '{other}': use leader, primary, standby-leader, replica, standby or any"
                ))
            }
        })
    }
}

/// A connected CLI: the configuration, the cluster's DCS prefix and a REST client.
pub struct Ctl {
    pub cfg: Config,
    pub scope: String,
    pub dcs: Dcs,
    pub http: PeerClient,
}

impl Ctl {
    /// Connects to etcd for cluster `scope` (the configuration's when `None`). `insecure` skips
    /// REST certificate checks (`-k`).
    pub async fn connect(cfg: &Config, scope: Option<&str>, insecure: bool) -> Result<Ctl> {
        let mut cfg = cfg.clone();
        if let Some(s) = scope {
            cfg.scope = s.to_string();
        }
        if insecure {
            cfg.ctl.insecure = true;
        }
        if cfg.scope.is_empty() {
            bail!("which cluster? name it on the command line (e.g. `tandem -d etcd3://host:2379 list CLUSTER`) or set `scope` in the configuration file");
        }
        let dcs = Dcs::connect(&cfg.etcd3, &cfg.base_path(), Duration::from_secs(5)).await?;
        let http = cli_client(&cfg)?;
        Ok(Ctl {
            scope: cfg.scope.clone(),
            cfg,
            dcs,
            http,
        })
    }

    pub async fn cluster(&self) -> Result<ClusterView> {
        let (view, _) = self.dcs.read_cluster().await.with_context(|| {
            format!(
                "cannot read cluster '{}' from etcd ({}): is etcd running, and etcd3.hosts right?",
                self.scope,
                self.cfg.etcd3.hosts.join(",")
            )
        })?;
        Ok(view)
    }

    /// `METHOD <member's REST API>/<endpoint>` with an optional JSON body; returns the status
    /// code and the body text.
    pub async fn call(
        &self,
        member: &Member,
        method: reqwest::Method,
        endpoint: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(u16, String)> {
        let url = endpoint_url(&member.value.api_url, endpoint).ok_or_else(|| {
            anyhow!(
                "member {} publishes no usable REST API address ({:?})",
                member.name,
                member.value.api_url
            )
        })?;
        let mut rb = self.http.request(method.clone(), &url).timeout(timeout);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|e| {
            let mut msg = format!("{method} {url}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            if url.starts_with("https:") && e.is_connect() {
                msg.push_str(
                    " (check ctl.cacert, ctl.certfile/keyfile, or set ctl.insecure: true)",
                );
            }
            anyhow!(msg)
        })?;
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((code, text))
    }
}

/// The CLI's REST client: verifies certificates against `ctl.cacert`, else `restapi.cafile`,
/// else the etcd CA (`etcd3.cacert`), and presents `ctl.certfile`/`keyfile`.
pub fn cli_client(cfg: &Config) -> Result<PeerClient> {
    let mut ctl = cfg.ctl.clone();
    if ctl.cacert.is_none() && cfg.restapi.cafile.is_none() {
        ctl.cacert = cfg.etcd3.cacert.clone();
    }
    PeerClient::new(&ctl, &cfg.restapi, crate::peer::Caller::Cli)
}

/// `http://h:p/patroni` → `http://h:p/<endpoint>`.
pub fn endpoint_url(api_url: &str, endpoint: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}/{endpoint}"))
}

// ---------------------------------------------------------------------------------------------
// Questions.

/// How the CLI asks: on a terminal, or not at all.
pub struct Asker {
    pub force: bool,
}

impl Asker {
    fn tty() -> bool {
        std::io::stdin().is_terminal()
    }

    fn read_line(question: &str) -> Result<String> {
        print!("{question}");
        std::io::stdout().flush().ok();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the answer from stdin")?;
        Ok(line.trim().to_string())
    }

    fn no_terminal(what: &str) -> anyhow::Error {
        anyhow!("{what} needs an answer, but stdin is not a terminal: run it in a terminal, or pass the option and --force")
    }

    /// Asks a question with a default answer (`--force` takes the default).
    pub fn prompt(&self, question: &str, default: &str) -> Result<String> {
        if self.force {
            return Ok(default.to_string());
        }
        if !Self::tty() {
            return Err(Self::no_terminal(question.trim_end_matches([' ', ':'])));
        }
        let shown = if default.is_empty() {
            format!("{question}: ")
        } else {
            format!("{question} [{default}]: ")
        };
        let a = Self::read_line(&shown)?;
        Ok(if a.is_empty() { default.to_string() } else { a })
    }

    /// Asks yes/no (default no); `--force` says yes.
    pub fn confirm(&self, question: &str) -> Result<bool> {
        if self.force {
            return Ok(true);
        }
        if !Self::tty() {
            return Err(anyhow!(
                "'{question}' needs a confirmation, but stdin is not a terminal: run it in a terminal or add --force"
            ));
        }
        let a = Self::read_line(&format!("{question} [y/N]: "))?;
        Ok(matches!(a.to_ascii_lowercase().as_str(), "y" | "yes"))
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (patronictl's progress timestamps).
pub fn timestamp() -> String {
    Local::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// A `--scheduled` value: `now` (or empty) → `None`; a time without zone is local time.
pub fn parse_scheduled(text: &str, action: &str) -> Result<Option<DateTime<FixedOffset>>> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let err = |r: crate::api::Reply| match r.body {
        crate::api::Body::Text(m) => anyhow!("{m}"),
        _ => anyhow!("cannot parse the scheduled time '{t}'"),
    };
    match parse_schedule(&json!(t), action, Utc::now()) {
        Ok(at) => Ok(Some(at)),
        Err(r) if r.code == 400 => {
            // No time zone: local time, as patronictl does.
            for f in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ] {
                if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, f) {
                    if let Some(local) = Local.from_local_datetime(&naive).earliest() {
                        let at = local.fixed_offset();
                        return match parse_schedule(&json!(iso(&at)), action, Utc::now()) {
                            Ok(at) => Ok(Some(at)),
                            Err(r) => Err(err(r)),
                        };
                    }
                }
            }
            Err(err(r))
        }
        Err(r) => Err(err(r)),
    }
}

// ---------------------------------------------------------------------------------------------
// Members.

fn is_leader(view: &ClusterView, m: &Member) -> bool {
    view.leader_name() == Some(m.name.as_str())
}

/// Members matching a role filter, sorted by name.
pub fn members_by_role(view: &ClusterView, role: RoleFilter) -> Vec<&Member> {
    let standby = listing::is_standby_cluster(view);
    view.members
        .values()
        .filter(|m| {
            let leader = is_leader(view, m);
            match role {
                RoleFilter::Any => true,
                RoleFilter::Leader => leader,
                RoleFilter::Primary => leader && !standby,
                RoleFilter::StandbyLeader => leader && standby,
                RoleFilter::Replica => !leader && !standby,
                RoleFilter::Standby => !leader && standby,
            }
        })
        .collect()
}

/// The leader first, then the others (for requests any member can serve).
fn leader_first(view: &ClusterView) -> Vec<&Member> {
    let mut all: Vec<&Member> = view.members.values().collect();
    all.sort_by_key(|m| !is_leader(view, m));
    all
}

/// patronictl's member selection for restart/reload/reinit/flush: names given → those (that
/// match the role); none → every member of the role, or (reinit) a question.
fn select_members<'a>(
    view: &'a ClusterView,
    cluster: &str,
    names: &[String],
    role: RoleFilter,
    action: &str,
    ask: &Asker,
    ask_when_none: bool,
) -> Result<Vec<&'a Member>> {
    let candidates = members_by_role(view, role);
    if candidates.is_empty() && names.is_empty() {
        bail!("{cluster} cluster doesn't have any members with role {role:?}");
    }
    let mut chosen: Vec<String> = if names.is_empty() {
        if ask_when_none {
            let list: Vec<&str> = candidates.iter().map(|m| m.name.as_str()).collect();
            let a = ask.prompt(
                &format!(
                    "Which member do you want to {action} [{}]?",
                    list.join(", ")
                ),
                "",
            )?;
            if a.is_empty() {
                bail!("no member chosen: name the members to {action} after the cluster name");
            }
            vec![a]
        } else {
            candidates.iter().map(|m| m.name.clone()).collect()
        }
    } else {
        names.to_vec()
    };
    chosen.dedup();
    for n in &chosen {
        if !view.members.contains_key(n) {
            bail!("{n} is not a member of cluster {cluster}: see `tandem list {cluster}`");
        }
        if !candidates.iter().any(|m| &m.name == n) {
            bail!("member {n} does not have the role {role:?} asked for (-r/--role)");
        }
    }
    Ok(candidates
        .into_iter()
        .filter(|m| chosen.contains(&m.name))
        .collect())
}

fn loop_wait(view: &ClusterView) -> u64 {
    view.config
        .as_ref()
        .and_then(|c| c.value.get("loop_wait"))
        .and_then(parse_uint)
        .unwrap_or(tandem_core::dynamic::DEFAULT_LOOP_WAIT)
}

fn names(ms: &[&Member]) -> String {
    ms.iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Verbs.

/// `list` / `topology`: prints the table (again every `watch` seconds).
pub async fn list(
    ctl: &Ctl,
    clusters: &[String],
    format: ListFormat,
    extended: bool,
    with_timestamp: bool,
    watch: Option<f64>,
    topology: bool,
) -> Result<()> {
    let scopes: Vec<String> = if clusters.is_empty() {
        vec![ctl.scope.clone()]
    } else {
        clusters.to_vec()
    };
    loop {
        if watch.is_some() {
            print!("\x1b[2J\x1b[H");
        }
        if with_timestamp || watch.is_some() {
            println!("{}", Local::now().format("%Y-%m-%d %H:%M:%S"));
        }
        for scope in &scopes {
            let view = if *scope == ctl.scope {
                ctl.cluster().await?
            } else {
                Ctl::connect(&ctl.cfg, Some(scope), ctl.cfg.ctl.insecure)
                    .await?
                    .cluster()
                    .await?
            };
            let out = if topology {
                listing::render_topology(&view, scope)
            } else {
                listing::render(&view, scope, format, extended)
            };
            print!("{out}");
        }
        std::io::stdout().flush().ok();
        match watch {
            Some(s) => tokio::time::sleep(Duration::from_secs_f64(s.max(0.1))).await,
            None => return Ok(()),
        }
    }
}

fn show(view: &ClusterView, scope: &str) {
    print!(
        "{}",
        listing::render(view, scope, ListFormat::Pretty, false)
    );
}

/// `switchover` and `failover`.
pub async fn switchover(
    ctl: &Ctl,
    failover: bool,
    leader: Option<String>,
    candidate: Option<String>,
    scheduled: Option<String>,
    ask: &Asker,
) -> Result<()> {
    let action = if failover { "failover" } else { "switchover" };
    let view = ctl.cluster().await?;
    let scope = &ctl.scope;
    println!("Current cluster topology");
    show(&view, scope);
    let current = view.leader_name().map(str::to_string);
    let mut leader = leader;
    if !failover {
        let Some(cur) = current.clone() else {
            bail!("This cluster has no leader: use `tandem failover --candidate NAME` instead");
        };
        if leader.is_none() {
            let q = if listing::is_standby_cluster(&view) {
                "Standby Leader"
            } else {
                "Primary"
            };
            leader = Some(ask.prompt(q, &cur)?);
        }
        if leader.as_deref() != Some(cur.as_str()) {
            bail!(
                "Member {} is not the leader of cluster {scope} (the leader is {cur})",
                leader.unwrap_or_default()
            );
        }
    }
    let candidates: Vec<&str> = view
        .members
        .values()
        .filter(|m| Some(m.name.as_str()) != current.as_deref() && m.value.failover_priority() > 0)
        .map(|m| m.name.as_str())
        .collect();
    if candidates.is_empty() {
        bail!("No candidates found to {action} to");
    }
    let mut candidate = candidate.filter(|c| !c.is_empty());
    if candidate.is_none() && !ask.force {
        let a = ask.prompt(&format!("Candidate {candidates:?}"), "")?;
        candidate = Some(a).filter(|a| !a.is_empty());
    }
    if failover && candidate.is_none() {
        bail!("Failover could be performed only to a specific candidate: pass --candidate NAME");
    }
    if let Some(c) = &candidate {
        if !candidates.contains(&c.as_str()) {
            if Some(c.as_str()) == current.as_deref() {
                bail!("Member {c} is already the leader of cluster {scope}");
            }
            bail!("Member {c} does not exist in cluster {scope} or is tagged as nofailover");
        }
    }
    let mut scheduled_at = None;
    if !failover {
        let text = match scheduled {
            Some(s) => s,
            None => {
                let next = (Local::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
                ask.prompt(
                    &format!("When should the switchover take place (e.g. {next} ) "),
                    "now",
                )?
            }
        };
        scheduled_at = parse_scheduled(&text, action)?;
        if scheduled_at.is_some() && view.paused() {
            bail!("Can't schedule switchover in the paused state: resume first (`tandem resume`)");
        }
    }
    let demote = current
        .as_ref()
        .map(|l| format!(", demoting current leader {l}"))
        .unwrap_or_default();
    let question = match &scheduled_at {
        Some(at) => format!(
            "Are you sure you want to schedule switchover of cluster {scope} at {}{demote}?",
            iso(at)
        ),
        None => format!("Are you sure you want to {action} cluster {scope}{demote}?"),
    };
    if !ask.confirm(&question)? {
        bail!("Aborting {action}");
    }
    let mut body = Map::new();
    if let Some(l) = &leader {
        body.insert("leader".into(), l.clone().into());
    }
    if let Some(c) = &candidate {
        body.insert("candidate".into(), c.clone().into());
    }
    if let Some(at) = &scheduled_at {
        body.insert("scheduled_at".into(), iso(at).into());
    }
    let body = Value::Object(body);
    let target = current
        .as_ref()
        .and_then(|l| view.members.get(l))
        .or_else(|| candidate.as_ref().and_then(|c| view.members.get(c)))
        .ok_or_else(|| anyhow!("cluster {scope} has no leader or candidate member to ask"))?;
    if scheduled_at.is_none() {
        println!(
            "{} Asking {} to {action}; waiting for the new leader...",
            timestamp(),
            target.name
        );
    }
    match ctl
        .call(
            target,
            reqwest::Method::POST,
            action,
            Some(&body),
            SWITCHOVER_WAIT,
        )
        .await
    {
        Ok((200 | 202, text)) => println!("{} {text}", timestamp()),
        Ok((code, text)) => {
            bail!("{} failed, details: {code}, {text}", capitalize(action))
        }
        Err(e) => {
            // The member could not be reached: write the request to the DCS, as patronictl does.
            println!(
                "{} Could not {action} using the REST API ({e:#}), falling back to DCS",
                timestamp()
            );
            let value = FailoverValue {
                leader: leader.clone(),
                member: candidate.clone(),
                scheduled_at: scheduled_at.as_ref().map(iso),
            };
            let text = serde_json::to_string(&value)?;
            ctl.dcs
                .put("failover", &text, None)
                .await
                .context("cannot write the failover key")?;
        }
    }
    let view = ctl.cluster().await?;
    show(&view, scope);
    Ok(())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `pause` / `resume`.
pub async fn toggle_pause(ctl: &Ctl, pause: bool, wait: bool) -> Result<()> {
    let view = ctl.cluster().await?;
    if view.paused() == pause {
        bail!(
            "Cluster is {} paused",
            if pause { "already" } else { "not" }
        );
    }
    let body = json!({ "pause": if pause { Value::Bool(true) } else { Value::Null } });
    let mut done = false;
    let mut errors = Vec::new();
    for m in leader_first(&view) {
        match ctl
            .call(m, reqwest::Method::PATCH, "config", Some(&body), SHORT)
            .await
        {
            Ok((200, _)) => {
                done = true;
                break;
            }
            Ok((code, text)) => errors.push(format!("{}: {code} {text}", m.name)),
            Err(e) => errors.push(format!("{}: {e:#}", m.name)),
        }
    }
    if !done {
        bail!(
            "Can not find accessible cluster member to {} the cluster ({})",
            if pause { "pause" } else { "resume" },
            errors.join("; ")
        );
    }
    let word = if pause { "paused" } else { "resumed" };
    if wait {
        println!(
            "'{}' request sent, waiting until it is recognized by all nodes",
            if pause { "pause" } else { "resume" }
        );
        let old: Vec<String> = view.members.keys().cloned().collect();
        let limit = Duration::from_secs(2 * loop_wait(&view) + 5);
        let deadline = Instant::now() + limit;
        loop {
            let v = ctl.cluster().await?;
            let pending: Vec<&str> = v
                .members
                .values()
                .filter(|m| old.contains(&m.name) && m.value.pause.unwrap_or(false) != pause)
                .map(|m| m.name.as_str())
                .collect();
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} didn't recognize the {} state after {limit:?}: check their agents (`tandem list`, their logs)",
                    pending.join(", "),
                    if pause { "pause" } else { "resume" }
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!("Success: cluster management is {word}");
    Ok(())
}

/// `restart`.
#[allow(clippy::too_many_arguments)]
pub async fn restart(
    ctl: &Ctl,
    members: &[String],
    role: RoleFilter,
    any: bool,
    scheduled: Option<String>,
    pg_version: Option<String>,
    pending: bool,
    timeout: Option<String>,
    ask: &Asker,
) -> Result<()> {
    let view = ctl.cluster().await?;
    show(&view, &ctl.scope);
    let mut chosen = select_members(&view, &ctl.scope, members, role, "restart", ask, false)?;
    let scheduled = match scheduled {
        Some(s) => s,
        None => {
            let next = (Local::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
            ask.prompt(
                &format!("When should the restart take place (e.g. {next}) "),
                "now",
            )?
        }
    };
    let at = parse_scheduled(&scheduled, "restart")?;
    let mut body = Map::new();
    if pending {
        body.insert("restart_pending".into(), true.into());
        if at.is_none() {
            chosen.retain(|m| m.value.pending_restart == Some(true));
        }
    }
    if any {
        // One member, chosen by the clock (no need for a random generator).
        if !chosen.is_empty() {
            let i = (Utc::now().timestamp_subsec_nanos() as usize) % chosen.len();
            chosen = vec![chosen[i]];
        }
    }
    if chosen.is_empty() {
        println!("No member needs a restart");
        return Ok(());
    }
    let question = match &at {
        Some(at) if pending => format!("The nodes needing a restart will be identified at the scheduled time ({}), and might be different from the ones showing pending restart right now. Is this fine?", iso(at)),
        Some(at) => format!(
            "Are you sure you want to schedule restart of members {} at {}?",
            names(&chosen),
            iso(at)
        ),
        None => format!(
            "Are you sure you want to restart members {}?",
            names(&chosen)
        ),
    };
    if !ask.confirm(&question)? {
        bail!("Aborted restart");
    }
    let version = match pg_version {
        Some(v) => v,
        None => ask.prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            "",
        )?,
    };
    if !version.is_empty() {
        check_postgres_version(&version).map_err(|e| anyhow!(e))?;
        body.insert("postgres_version".into(), version.into());
    }
    if let Some(at) = &at {
        if view.paused() {
            bail!("Can't schedule restart in the paused state: resume first, or restart now");
        }
        body.insert("schedule".into(), iso(at).into());
    }
    if let Some(t) = timeout {
        body.insert("timeout".into(), t.into());
    }
    let body = Value::Object(body);
    let mut failed = 0;
    for m in chosen {
        if at.is_some()
            && ask.force
            && m.value
                .extra
                .get("scheduled_restart")
                .is_some_and(|v| !v.is_null())
        {
            let (code, text) = ctl
                .call(m, reqwest::Method::DELETE, "restart", None, SHORT)
                .await?;
            if code >= 400 {
                println!(
                    "Failed: flush scheduled restart for member {}, status code={code}, ({text})",
                    m.name
                );
            }
        }
        let wait = if at.is_some() { SHORT } else { RESTART_WAIT };
        match ctl
            .call(m, reqwest::Method::POST, "restart", Some(&body), wait)
            .await
        {
            Ok((200, _)) => println!("Success: restart on member {}", m.name),
            Ok((202, _)) => println!("Success: restart scheduled on member {}", m.name),
            Ok((409, _)) => {
                failed += 1;
                println!(
                    "Failed: another restart is already scheduled on member {} (flush it with `tandem flush {} {} restart`)",
                    m.name, ctl.scope, m.name
                )
            }
            Ok((code, text)) => {
                failed += 1;
                println!(
                    "Failed: restart for member {}, status code={code}, ({text})",
                    m.name
                )
            }
            Err(e) => {
                failed += 1;
                println!("Failed: restart for member {}: {e:#}", m.name)
            }
        }
    }
    if failed > 0 {
        bail!("the restart failed on {failed} member(s): see above");
    }
    Ok(())
}

/// `reload`.
pub async fn reload(ctl: &Ctl, members: &[String], role: RoleFilter, ask: &Asker) -> Result<()> {
    let view = ctl.cluster().await?;
    show(&view, &ctl.scope);
    let chosen = select_members(&view, &ctl.scope, members, role, "reload", ask, false)?;
    if !ask.confirm(&format!(
        "Are you sure you want to reload members {}?",
        names(&chosen)
    ))? {
        bail!("Aborted reload");
    }
    let mut failed = 0;
    for m in chosen {
        match ctl
            .call(m, reqwest::Method::POST, "reload", None, SHORT)
            .await
        {
            Ok((200, _)) => println!("No changes to apply on member {}", m.name),
            Ok((202, _)) => println!(
                "Reload request received for member {} and will be processed within {} seconds",
                m.name,
                loop_wait(&view)
            ),
            Ok((code, text)) => {
                failed += 1;
                println!(
                    "Failed: reload for member {}, status code={code}, ({text})",
                    m.name
                )
            }
            Err(e) => {
                failed += 1;
                println!("Failed: reload for member {}: {e:#}", m.name)
            }
        }
    }
    if failed > 0 {
        bail!("the reload failed on {failed} member(s): see above");
    }
    Ok(())
}

/// `reinit`.
pub async fn reinit(
    ctl: &Ctl,
    members: &[String],
    from_leader: bool,
    wait: bool,
    ask: &Asker,
) -> Result<()> {
    let view = ctl.cluster().await?;
    show(&view, &ctl.scope);
    let role = if listing::is_standby_cluster(&view) {
        RoleFilter::Standby
    } else {
        RoleFilter::Replica
    };
    let chosen = select_members(&view, &ctl.scope, members, role, "reinitialize", ask, true)?;
    if !ask.confirm(&format!(
        "Are you sure you want to reinitialize members {}?",
        names(&chosen)
    ))? {
        bail!("Aborted reinitialize");
    }
    let mut started = Vec::new();
    let mut failed = 0;
    for m in chosen {
        let mut body = json!({"force": ask.force, "from_leader": from_leader});
        loop {
            match ctl
                .call(m, reqwest::Method::POST, "reinitialize", Some(&body), SHORT)
                .await
            {
                Ok((200, _)) => {
                    println!("Success: reinitialize for member {}", m.name);
                    started.push(m);
                }
                Ok((code, text)) => {
                    if text.ends_with(" already in progress")
                        && body["force"] == false
                        && ask.confirm("Do you want to cancel it and reinitialize anyway?")?
                    {
                        body["force"] = true.into();
                        continue;
                    }
                    failed += 1;
                    println!(
                        "Failed: reinitialize for member {}, status code={code}, ({text})",
                        m.name
                    );
                }
                Err(e) => {
                    failed += 1;
                    println!("Failed: reinitialize for member {}: {e:#}", m.name);
                }
            }
            break;
        }
    }
    if wait && !started.is_empty() {
        println!(
            "Waiting for reinitialize to complete on: {}",
            names(&started)
        );
        let mut pending: Vec<(&Member, bool)> = started.iter().map(|m| (*m, false)).collect();
        let begin = Instant::now();
        while !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut still = Vec::new();
            for (m, seen_busy) in pending {
                let state = match ctl
                    .call(m, reqwest::Method::GET, "patroni", None, SHORT)
                    .await
                {
                    Ok((_, text)) => serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|d| d.get("state").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let busy = state != "running";
                // Done once it ran something else and is running again (or never left running
                // for 15 s: the re-clone was that quick, or did not start).
                if !busy && (seen_busy || begin.elapsed() > Duration::from_secs(15)) {
                    println!("Reinitialize is completed on: {}", m.name);
                } else if matches!(state.as_str(), "start failed" | "crashed") && seen_busy {
                    failed += 1;
                    println!(
                        "Failed: reinitialize on {} ended in state '{state}'",
                        m.name
                    );
                } else {
                    still.push((m, seen_busy || busy));
                }
            }
            pending = still;
        }
    }
    if failed > 0 {
        bail!("reinitialize failed on {failed} member(s): see above");
    }
    Ok(())
}

/// `flush CLUSTER [MEMBER...] restart|switchover`.
pub async fn flush(
    ctl: &Ctl,
    members: &[String],
    target: &str,
    role: RoleFilter,
    ask: &Asker,
) -> Result<()> {
    let view = ctl.cluster().await?;
    match target {
        "restart" => {
            let chosen = select_members(&view, &ctl.scope, members, role, "flush", ask, false)?;
            if !ask.confirm(&format!(
                "Are you sure you want to flush members {}?",
                names(&chosen)
            ))? {
                bail!("Aborted flush");
            }
            for m in chosen {
                if m.value
                    .extra
                    .get("scheduled_restart")
                    .is_some_and(|v| !v.is_null())
                {
                    let (code, text) = ctl
                        .call(m, reqwest::Method::DELETE, "restart", None, SHORT)
                        .await?;
                    if code < 400 {
                        println!("Success: flush scheduled restart for member {}", m.name);
                    } else {
                        println!(
                            "Failed: flush scheduled restart for member {}, status code={code}, ({text})",
                            m.name
                        );
                    }
                } else {
                    println!("No scheduled restart for member {}", m.name);
                }
            }
            Ok(())
        }
        "switchover" => {
            // The revision to compare on: a scheduled request, or a value that does not parse
            // (which members' DELETE /switchover removes too).
            let mod_revision = match (&view.failover, view.invalid_failover()) {
                (Some(f), _) if f.value.scheduled_at.is_some() => f.mod_revision,
                (_, Some(bad)) => {
                    println!("The failover key holds {}", bad.problem);
                    bad.mod_revision
                }
                _ => {
                    println!("No pending scheduled switchover");
                    return Ok(());
                }
            };
            let removed = if view.invalid_failover().is_some() {
                UNPARSABLE_FAILOVER_REMOVED
            } else {
                "scheduled switchover deleted"
            };
            for m in leader_first(&view) {
                match ctl
                    .call(m, reqwest::Method::DELETE, "switchover", None, SHORT)
                    .await
                {
                    Ok((200, text)) => {
                        println!("Success: {text}");
                        return Ok(());
                    }
                    Ok((404, text)) => {
                        println!("Failed: {text}");
                        return Ok(());
                    }
                    Ok((code, text)) => {
                        println!("Failed: member={}, status_code={code}, ({text})", m.name)
                    }
                    Err(e) => eprintln!("member {} is not accessible: {e:#}", m.name),
                }
            }
            println!(
                "{} Could not find any accessible member of cluster {}",
                timestamp(),
                ctl.scope
            );
            if !ctl.dcs.cas("failover", "{}", mod_revision).await? {
                bail!("the failover key changed meanwhile: run the command again");
            }
            println!("Success: {removed}");
            Ok(())
        }
        other => bail!("cannot flush '{other}': use restart or switchover"),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration.

/// The configuration as YAML the way patronictl prints it (PyYAML's block style, keys sorted),
/// with strings quoted wherever a YAML 1.1 reader would take them for something else
/// (`'on'`, `'off'`, `'yes'`, `'1.0'`, ...).
pub fn config_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => yaml_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => yaml_seq(a, 0, &mut out),
        other => {
            out.push_str(&yaml_scalar(other));
            out.push('\n');
        }
    }
    out
}

fn yaml_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(k));
        out.push(':');
        match v {
            Value::Object(o) if !o.is_empty() => {
                out.push('\n');
                yaml_map(o, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                yaml_seq(a, indent, out);
            }
            other => {
                out.push(' ');
                out.push_str(&yaml_scalar(other));
                out.push('\n');
            }
        }
    }
}

fn yaml_seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(o) if !o.is_empty() => {
                // First key on the dash's line, the rest aligned under it.
                let mut inner = String::new();
                yaml_map(o, indent + 2, &mut inner);
                out.push(' ');
                out.push_str(inner.trim_start());
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                yaml_seq(inner, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&yaml_scalar(other));
                out.push('\n');
            }
        }
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string plain when unambiguous, else single-quoted (double-quoted with escapes when it has
/// control characters).
fn yaml_string(s: &str) -> String {
    if s.chars().any(|c| c.is_control()) {
        return serde_json::to_string(s).unwrap_or_default();
    }
    let lower = s.to_ascii_lowercase();
    let special_word = matches!(
        lower.as_str(),
        "" | "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off"
    );
    let numeric = s.parse::<f64>().is_ok()
        || lower.starts_with("0x")
        || lower.starts_with("0o")
        || lower.trim_start_matches(['+', '-']).starts_with('.')
        || s.chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '_')
            && s.contains(':');
    let first = s.chars().next().unwrap_or(' ');
    let bad_start = "-?:,[]{}#&*!|>'\"%@` ".contains(first);
    let bad_inside = s.contains(": ") || s.contains(" #") || s.ends_with(' ') || s.ends_with(':');
    if special_word || numeric || bad_start || bad_inside {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        s.to_string()
    }
}

fn yaml_to_json(text: &str, origin: &str) -> Result<Value> {
    let y: serde_yaml::Value =
        serde_yaml::from_str(text).with_context(|| format!("{origin} is not valid YAML"))?;
    serde_json::to_value(y).with_context(|| format!("{origin}: cannot be expressed as JSON"))
}

/// patronictl reads values with PyYAML (YAML 1.1), where these plain scalars are booleans;
/// serde_yaml (YAML 1.2) would keep them as strings, so `-s pause=on` would store "on".
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Applies `-s key.path=value` (value parsed as YAML; `null` removes the key).
pub fn apply_set(config: &mut Value, pair: &str, pg: bool) -> Result<()> {
    let (path, value) = pair.split_once('=').ok_or_else(|| {
        anyhow!("Invalid parameter setting {pair}: use key=value (for example loop_wait=5)")
    })?;
    let path = path.trim();
    if path.is_empty() {
        bail!("Invalid parameter setting {pair}: the key is empty");
    }
    let value: Value = if value.trim().is_empty() {
        Value::Null
    } else if let Some(b) = yaml11_bool(value.trim()) {
        Value::Bool(b)
    } else {
        yaml_to_json(value, &format!("the value of {path}"))?
    };
    // -p keeps dots inside GUC names (e.g. pg_stat_statements.max).
    let keys: Vec<&str> = if pg {
        vec!["postgresql", "parameters", path]
    } else {
        path.split('.').collect()
    };
    let mut patch = value;
    for k in keys.iter().rev() {
        let mut m = Map::new();
        m.insert(k.to_string(), patch);
        patch = Value::Object(m);
    }
    merge_patch(config, &patch);
    Ok(())
}

fn read_file_or_stdin(name: &str) -> Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read the configuration from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(name).with_context(|| format!("cannot read {name}"))
    }
}

/// A unified diff of two texts (line based, 3 lines of context).
pub fn unified_diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    // Longest common subsequence table (configurations are small).
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Edit script: (' ' | '-' | '+', line).
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i], i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i], i, j));
            i += 1;
        } else {
            ops.push(('+', b[j], i, j));
            j += 1;
        }
    }
    if ops.iter().all(|o| o.0 == ' ') {
        return String::new();
    }
    let mut out = String::from("--- before\n+++ after\n");
    let ctx = 3;
    let mut k = 0;
    while k < ops.len() {
        if ops[k].0 == ' ' {
            k += 1;
            continue;
        }
        let start = k.saturating_sub(ctx);
        let mut end = k;
        // Extend the hunk while changes are within 2*ctx lines of each other.
        let mut last_change = k;
        while end < ops.len() {
            if ops[end].0 != ' ' {
                last_change = end;
            } else if end - last_change > 2 * ctx {
                break;
            }
            end += 1;
        }
        let end = (last_change + ctx + 1).min(ops.len());
        let hunk = &ops[start..end];
        let a_start = hunk.first().map(|o| o.2).unwrap_or(0);
        let b_start = hunk.first().map(|o| o.3).unwrap_or(0);
        let a_len = hunk.iter().filter(|o| o.0 != '+').count();
        let b_len = hunk.iter().filter(|o| o.0 != '-').count();
        out.push_str(&format!(
            "@@ -{},{a_len} +{},{b_len} @@\n",
            a_start + usize::from(a_len > 0),
            b_start + usize::from(b_len > 0)
        ));
        for (op, line, _, _) in hunk {
            out.push(*op);
            out.push_str(line);
            out.push('\n');
        }
        k = end;
    }
    out
}

/// Opens `$EDITOR` (else `editor`, else `vi`) on `text`; returns the edited text.
fn invoke_editor(text: &str, scope: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("edit-config opens an editor, but stdin is not a terminal: use -s/-p/--apply/--replace with --force");
    }
    let dir = std::env::temp_dir();
    let path: PathBuf = dir.join(format!(
        "{scope}-config-{}-{}.yaml",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            ["editor", "vi"]
                .iter()
                .find(|e| which(e).is_some())
                .map(|e| e.to_string())
        })
        .ok_or_else(|| anyhow!("no editor found: set $EDITOR, or use -s/-p/--apply"))?;
    // $EDITOR may carry arguments ("code --wait").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run the editor '{editor}'"));
    let result = status.and_then(|s| {
        if !s.success() {
            bail!("the editor '{editor}' exited with {s}: nothing changed");
        }
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    });
    let _ = std::fs::remove_file(&path);
    result
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

/// `edit-config`.
#[allow(clippy::too_many_arguments)]
pub async fn edit_config(
    ctl: &Ctl,
    quiet: bool,
    sets: &[String],
    pgs: &[String],
    apply: Option<String>,
    replace: Option<String>,
    ask: &Asker,
) -> Result<()> {
    let view = ctl.cluster().await?;
    let config = match (view.config.clone(), view.invalid_config()) {
        (Some(c), _) => c,
        // Only a whole replacement repairs an unparsable value; compare on its revision.
        (None, Some(bad)) if replace.is_some() => {
            eprintln!("the config key holds {}: replacing it", bad.problem);
            Versioned {
                value: json!({}),
                mod_revision: bad.mod_revision,
            }
        }
        (None, Some(bad)) => bail!("{}", invalid_config_message(bad)),
        (None, None) => bail!(
            "The config key does not exist in the cluster {}: has the cluster been bootstrapped?",
            ctl.scope
        ),
    };
    let before = config_yaml(&config.value);
    let mut changed = config.value.clone();
    let mut edited = false;
    if let Some(f) = &replace {
        changed = yaml_to_json(&read_file_or_stdin(f)?, f)?;
        edited = true;
    }
    if let Some(f) = &apply {
        let patch = yaml_to_json(&read_file_or_stdin(f)?, f)?;
        merge_patch(&mut changed, &patch);
        edited = true;
    }
    for s in sets {
        apply_set(&mut changed, s, false)?;
        edited = true;
    }
    for p in pgs {
        apply_set(&mut changed, p.trim_start(), true)?;
        edited = true;
    }
    if !edited {
        let text = invoke_editor(&before, &ctl.scope)?;
        changed = yaml_to_json(&text, "the edited configuration")?;
    }
    if changed.is_null() {
        changed = json!({});
    }
    if !changed.is_object() {
        bail!("the configuration must be a mapping of settings, not {changed}");
    }
    if changed == config.value {
        if !quiet {
            println!("Not changed");
        }
        return Ok(());
    }
    let refused = tandem_core::dynamic::DynamicConfig::new_refusals(&config.value, &changed);
    if !refused.is_empty() {
        bail!("the configuration was not changed: {}", refused.join("; "));
    }
    let after = config_yaml(&changed);
    if !quiet {
        print!("{}", unified_diff(&before, &after));
    }
    let from_stdin = apply.as_deref() == Some("-") || replace.as_deref() == Some("-");
    if from_stdin && !ask.force {
        bail!("Use --force option to apply changes read from stdin");
    }
    if !ask.confirm("Apply these changes?")? {
        bail!("Aborted: the configuration was not changed");
    }
    let text = serde_json::to_string(&changed)?;
    if !ctl.dcs.cas("config", &text, config.mod_revision).await? {
        bail!("Config modification aborted due to concurrent changes: run the command again");
    }
    println!("Configuration changed");
    Ok(())
}

/// `show-config`.
pub async fn show_config(ctl: &Ctl) -> Result<()> {
    let view = ctl.cluster().await?;
    match (&view.config, view.invalid_config()) {
        (Some(c), _) => print!("{}", config_yaml(&c.value)),
        (None, Some(bad)) => bail!("cluster {}: {}", ctl.scope, invalid_config_message(bad)),
        (None, None) => bail!(
            "cluster {} has no configuration in the DCS: is it bootstrapped?",
            ctl.scope
        ),
    }
    Ok(())
}

/// `history`.
pub async fn history(ctl: &Ctl, format: ListFormat) -> Result<()> {
    let view = ctl.cluster().await?;
    let rows: Vec<Vec<String>> = view
        .history
        .map(|h| h.value)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            vec![
                e.timeline.to_string(),
                e.lsn.to_string(),
                e.reason,
                e.timestamp.unwrap_or_default(),
                e.new_leader.unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        listing::simple_table(
            &["TL", "LSN", "Reason", "Timestamp", "New Leader"],
            &rows,
            &["TL", "LSN"],
            format
        )
    );
    Ok(())
}

/// `remove`: deletes every key of the cluster after three questions.
pub async fn remove(ctl: &Ctl, cluster: &str, format: ListFormat) -> Result<()> {
    let view = ctl.cluster().await?;
    print!("{}", listing::render(&view, cluster, format, false));
    if !std::io::stdin().is_terminal() {
        bail!("remove asks you to type the cluster name and a confirmation, but stdin is not a terminal: run it in a terminal");
    }
    let ask = Asker { force: false };
    let name = ask.prompt("Please confirm the cluster name to remove", "")?;
    if name != cluster {
        bail!("Cluster names specified do not match: nothing removed");
    }
    let text = ask.prompt(
        &format!("You are about to remove all information in DCS for {cluster}, please type: \"Yes I am aware\""),
        "",
    )?;
    if text != "Yes I am aware" {
        bail!("You did not exactly type \"Yes I am aware\": nothing removed");
    }
    if let Some(leader) = view.leader_member() {
        if leader.value.state == "running" {
            let l = ask.prompt(
                "This cluster currently is healthy. Please specify the leader name to continue",
                "",
            )?;
            if l != leader.name {
                bail!("You did not specify the current leader of the cluster: nothing removed");
            }
        }
    }
    ctl.dcs.delete_cluster().await?;
    println!("Cluster {cluster} removed from the DCS");
    Ok(())
}

/// `dsn`: `host=... port=...` of the leader, or of a member chosen by role or name.
pub async fn dsn(ctl: &Ctl, role: Option<RoleFilter>, member: Option<&str>) -> Result<()> {
    let view = ctl.cluster().await?;
    let m = pick_member(&view, &ctl.scope, role, member)?;
    let (host, port) = m.value.conn_host_port().ok_or_else(|| {
        anyhow!(
            "member {} publishes no usable conn_url ({:?})",
            m.name,
            m.value.conn_url
        )
    })?;
    println!("host={host} port={port}");
    Ok(())
}

fn pick_member<'a>(
    view: &'a ClusterView,
    scope: &str,
    role: Option<RoleFilter>,
    member: Option<&str>,
) -> Result<&'a Member> {
    if role.is_some() && member.is_some() {
        bail!("--role and --member are mutually exclusive: give one");
    }
    if let Some(name) = member {
        return view
            .members
            .get(name)
            .ok_or_else(|| anyhow!("member {name} is not in cluster {scope}"));
    }
    let role = role.unwrap_or(RoleFilter::Leader);
    members_by_role(view, role)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("cluster {scope} has no member with role {role:?}"))
}

/// `query`: runs SQL on a member through `psql` (libpq's pgpass and environment apply).
#[allow(clippy::too_many_arguments)]
pub async fn query(
    ctl: &Ctl,
    role: Option<RoleFilter>,
    member: Option<&str>,
    command: Option<String>,
    file: Option<PathBuf>,
    username: Option<String>,
    password: bool,
    dbname: Option<String>,
    delimiter: &str,
    format: ListFormat,
) -> Result<()> {
    let sql = match (command, file) {
        (Some(c), None) => c,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (Some(_), Some(_)) => bail!("--command and --file are mutually exclusive: give one"),
        (None, None) => bail!("nothing to run: give -c SQL or -f FILE"),
    };
    let view = ctl.cluster().await?;
    let m = pick_member(&view, &ctl.scope, role, member)?;
    let (host, port) = m
        .value
        .conn_host_port()
        .ok_or_else(|| anyhow!("member {} publishes no usable conn_url", m.name))?;
    let db = dbname.unwrap_or_else(|| {
        m.value
            .conn_url
            .rsplit('/')
            .next()
            .filter(|d| !d.is_empty() && !d.contains(':'))
            .unwrap_or("postgres")
            .to_string()
    });
    let psql = which("psql")
        .or_else(|| {
            ctl.cfg
                .postgresql
                .bin_dir
                .as_ref()
                .map(|b| b.join("psql"))
                .filter(|p| p.is_file())
        })
        .ok_or_else(|| anyhow!("psql is not installed: install postgresql-client"))?;
    let mut cmd = tokio::process::Command::new(psql);
    let conninfo = format!(
        "host={host} port={port} dbname={db} fallback_application_name='Patroni ctl' connect_timeout=5"
    );
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-P", "footer=off"]);
    match format {
        ListFormat::Pretty => {}
        _ => {
            cmd.args(["-A", "-F", delimiter]);
        }
    }
    if let Some(u) = &username {
        cmd.args(["-U", u]);
    }
    if password {
        let user = username.clone().unwrap_or_else(|| "your user".into());
        if !std::io::stdin().is_terminal() {
            bail!("--password asks for a password, but stdin is not a terminal: use a pgpass file or PGPASSWORD");
        }
        let pw = rpassword_prompt(&format!("Password for {user}: "))?;
        cmd.env("PGPASSWORD", pw);
    }
    cmd.arg("-d").arg(conninfo).arg("-c").arg(sql);
    let status = cmd.status().await.context("cannot run psql")?;
    if !status.success() {
        bail!(
            "the query failed on member {} (psql exited with {status})",
            m.name
        );
    }
    Ok(())
}

/// Reads a password from the terminal without echo.
fn rpassword_prompt(prompt: &str) -> Result<String> {
    print!("{prompt}");
    std::io::stdout().flush().ok();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios calls on stdin with a properly sized, zeroed struct.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    if have {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    if have {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    println!();
    r.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `version [CLUSTER [MEMBER...]]`.
pub async fn version(ctl: Option<&Ctl>, members: &[String]) -> Result<()> {
    println!(
        "tandem version {} (patronictl {} compatible)",
        crate::api::tandem_version(),
        crate::api::PATRONI_COMPAT_VERSION
    );
    let Some(ctl) = ctl else { return Ok(()) };
    println!();
    let view = ctl.cluster().await?;
    for m in view.members.values() {
        if !members.is_empty() && !members.contains(&m.name) {
            continue;
        }
        match ctl
            .call(m, reqwest::Method::GET, "patroni", None, SHORT)
            .await
        {
            Ok((_, text)) => {
                let d: Value = serde_json::from_str(&text).unwrap_or_default();
                let agent = match d["tandem"]["version"].as_str() {
                    Some(v) => format!("tandem {v}"),
                    None => format!(
                        "Patroni {}",
                        d["patroni"]["version"].as_str().unwrap_or("?")
                    ),
                };
                let pg = d["server_version"]
                    .as_u64()
                    .map(|v| format!(" PostgreSQL {}", format_pg_version(v)))
                    .unwrap_or_default();
                println!("{}: {agent}{pg}", m.name);
            }
            Err(e) => println!("{}: failed to get version: {e:#}", m.name),
        }
    }
    Ok(())
}

/// `150004` → `15.4`; `90624` → `9.6.24`.
pub fn format_pg_version(v: u64) -> String {
    if v >= 100_000 {
        format!("{}.{}", v / 10_000, v % 10_000)
    } else {
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    }
}

/// A `--apply`/`--replace` body read from a file, for tests.
pub fn object_from_yaml(text: &str) -> Result<Object> {
    match yaml_to_json(text, "input")? {
        Value::Object(o) => Ok(o),
        other => bail!("expected a mapping, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:8008/patroni", "switchover").as_deref(),
            Some("http://127.0.0.1:8008/switchover")
        );
        assert_eq!(
            endpoint_url("https://[::1]:8008/patroni", "restart").as_deref(),
            Some("https://[::1]:8008/restart")
        );
        assert_eq!(endpoint_url("nonsense", "x"), None);
    }

    #[test]
    fn set_pairs() {
        let mut c = json!({"loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}});
        apply_set(&mut c, "loop_wait=5", false).unwrap();
        apply_set(&mut c, "postgresql.use_pg_rewind=true", false).unwrap();
        apply_set(&mut c, "pg_stat_statements.max=500", true).unwrap();
        apply_set(&mut c, "work_mem=null", true).unwrap();
        apply_set(&mut c, "synchronous_mode=quorum", false).unwrap();
        assert_eq!(
            c,
            json!({"loop_wait": 5, "synchronous_mode": "quorum", "postgresql": {"use_pg_rewind": true, "parameters": {"pg_stat_statements.max": 500}}})
        );
        apply_set(&mut c, "loop_wait=", false).unwrap();
        assert!(c.get("loop_wait").is_none());
        assert!(apply_set(&mut c, "novalue", false).is_err());
        assert!(apply_set(&mut c, "=1", false).is_err());
    }

    /// As patronictl (PyYAML, YAML 1.1): on/off/yes/no are booleans, numbers are numbers, and a
    /// quoted value stays a string.
    #[test]
    fn set_values_are_typed_as_patronictl_types_them() {
        let mut c = json!({});
        for (pair, want) in [
            ("pause=on", json!(true)),
            ("pause=OFF", json!(false)),
            ("pause=yes", json!(true)),
            ("pause=No", json!(false)),
            ("pause=true", json!(true)),
            ("pause='on'", json!("on")),
            ("ttl=6", json!(6)),
            ("ttl=\"6\"", json!("6")),
        ] {
            apply_set(&mut c, pair, false).unwrap();
            let key = pair.split('=').next().unwrap();
            assert_eq!(c[key], want, "{pair}");
        }
    }

    #[test]
    fn diffs() {
        assert_eq!(unified_diff("a\nb\n", "a\nb\n"), "");
        let d = unified_diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(
            d,
            "--- before\n+++ after\n@@ -1,3 +1,4 @@\n a\n-b\n+B\n c\n+d\n"
        );
        let before: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let after = before.replace("l2\n", "x\n").replace("l19\n", "y\n");
        let d = unified_diff(&before, &after);
        assert_eq!(d.matches("@@").count(), 4, "{d}");
    }

    #[test]
    fn config_text_is_sorted_yaml() {
        assert_eq!(
            config_yaml(
                &json!({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"a": 1}}})
            ),
            "loop_wait: 10\npostgresql:\n  parameters:\n    a: 1\nttl: 30\n"
        );
        assert_eq!(config_yaml(&json!({})), "{}\n");
        let v = json!({"postgresql": {"parameters": {"wal_log_hints": "on", "x": "1.5", "y": "8MB", "z": ""},
            "pg_hba": ["host all all 0.0.0.0/0 md5", "- odd"]}, "tags": [{"a": 1, "b": "no"}]});
        let text = config_yaml(&v);
        assert_eq!(
            text,
            "postgresql:\n  parameters:\n    wal_log_hints: 'on'\n    x: '1.5'\n    y: 8MB\n    z: ''\n  pg_hba:\n  - host all all 0.0.0.0/0 md5\n  - '- odd'\ntags:\n- a: 1\n  b: 'no'\n"
        );
        // It reads back as the same value.
        assert_eq!(yaml_to_json(&text, "t").unwrap(), v);
    }

    #[test]
    fn schedules_and_versions() {
        assert_eq!(parse_scheduled("now", "restart").unwrap(), None);
        assert_eq!(parse_scheduled("", "restart").unwrap(), None);
        let at = parse_scheduled("2100-01-01T10:00+00:00", "restart")
            .unwrap()
            .unwrap();
        assert_eq!(iso(&at), "2100-01-01T10:00:00+00:00");
        assert!(parse_scheduled("2100-01-01 10:00", "restart")
            .unwrap()
            .is_some());
        let e = parse_scheduled("2000-01-01T10:00Z", "switchover")
            .unwrap_err()
            .to_string();
        assert!(e.contains("in the past"), "{e}");
        assert_eq!(format_pg_version(150004), "15.4");
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(
            "standby-leader".parse::<RoleFilter>(),
            Ok(RoleFilter::StandbyLeader)
        );
        assert!("boss".parse::<RoleFilter>().is_err());
    }

    #[test]
    fn forced_questions_take_defaults_and_others_need_a_terminal() {
        let f = Asker { force: true };
        assert_eq!(f.prompt("Primary", "pg0").unwrap(), "pg0");
        assert!(f.confirm("Sure?").unwrap());
        if !std::io::stdin().is_terminal() {
            let a = Asker { force: false };
            let e = a.confirm("Sure?").unwrap_err().to_string();
            assert!(e.contains("--force"), "{e}");
        }
    }
}
