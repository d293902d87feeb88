//! `tandem list`: the member table of `patronictl list` (spec §6.3), and the per-member rows it
//! shares with `GET /cluster` (spec §5.4). Pure: a cluster view in, text or JSON out.

use serde_json::{Map, Value};
use std::fmt::Write as _;
use tandem_core::cluster::{ClusterView, Member};
use tandem_core::dynamic::parse_bool;
use tandem_core::lsn::Lsn;

/// Output format of `tandem list -f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Pretty,
    Tsv,
    Json,
    Yaml,
}

impl std::str::FromStr for ListFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(ListFormat::Pretty),
            "tsv" => Ok(ListFormat::Tsv),
            "json" => Ok(ListFormat::Json),
            "yaml" | "yml" => Ok(ListFormat::Yaml),
            other => Err(format!(
                "unknown output format '{other}': use pretty, tsv, json or yaml"
            )),
        }
    }
}

/// A member's role in the cluster, as `GET /cluster` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Leader,
    StandbyLeader,
    SyncStandby,
    QuorumStandby,
    Replica,
}

impl MemberRole {
    /// The name in `GET /cluster` (`leader`, `sync_standby`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::StandbyLeader => "standby_leader",
            MemberRole::SyncStandby => "sync_standby",
            MemberRole::QuorumStandby => "quorum_standby",
            MemberRole::Replica => "replica",
        }
    }
    /// The name in `list` (`Leader`, `Sync Standby`, ...).
    pub fn title(self) -> &'static str {
        match self {
            MemberRole::Leader => "Leader",
            MemberRole::StandbyLeader => "Standby Leader",
            MemberRole::SyncStandby => "Sync Standby",
            MemberRole::QuorumStandby => "Quorum Standby",
            MemberRole::Replica => "Replica",
        }
    }
    pub fn is_leader(self) -> bool {
        matches!(self, MemberRole::Leader | MemberRole::StandbyLeader)
    }
}

/// A non-leader's WAL position and how far it is behind the cluster's last known position.
/// `None` means unknown (the member did not publish it, or no primary position is known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalPoint {
    pub lsn: Option<u64>,
    pub lag: Option<u64>,
}

/// One member as `GET /cluster` and `list` show it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberRow {
    pub name: String,
    pub role: MemberRole,
    /// Replication state for non-leaders when known, else the PostgreSQL state.
    pub state: String,
    pub api_url: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeline: Option<u64>,
    /// Non-leaders only: received, replayed and overall (`xlog_location`) positions.
    pub receive: Option<WalPoint>,
    pub replay: Option<WalPoint>,
    pub lsn: Option<WalPoint>,
    pub pending_restart: bool,
    pub pending_restart_reason: Option<Value>,
    pub scheduled_restart: Option<Value>,
    pub tags: Map<String, Value>,
}

/// The dynamic config says this is a standby cluster (`standby_cluster` with a host, port or
/// restore_command).
pub fn is_standby_cluster(view: &ClusterView) -> bool {
    let sc = view
        .config
        .as_ref()
        .and_then(|c| c.value.get("standby_cluster"));
    match sc {
        Some(Value::Object(o)) => ["host", "port", "restore_command"]
            .iter()
            .any(|k| o.get(*k).is_some_and(|v| !v.is_null() && v != "")),
        _ => false,
    }
}

/// Synchronous replication mode from the dynamic config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Off,
    On,
    Quorum,
}

pub fn sync_mode(view: &ClusterView) -> SyncMode {
    match view
        .config
        .as_ref()
        .and_then(|c| c.value.get("synchronous_mode"))
    {
        Some(Value::String(s)) if s.eq_ignore_ascii_case("quorum") => SyncMode::Quorum,
        Some(v) if parse_bool(v) == Some(true) => SyncMode::On,
        _ => SyncMode::Off,
    }
}

/// Names in `/sync.sync_standby` (comma-separated), when synchronous mode is on.
pub fn sync_standbys(view: &ClusterView) -> Vec<String> {
    if sync_mode(view) == SyncMode::Off {
        return Vec::new();
    }
    let names = view
        .sync
        .as_ref()
        .and_then(|s| s.value.get("sync_standby"))
        .and_then(Value::as_str)
        .unwrap_or("");
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// The primary position lags are measured against: `status.optime`, else the leader's own
/// published position.
pub fn cluster_lsn(view: &ClusterView) -> Option<u64> {
    view.last_leader_lsn()
        .or_else(|| view.leader_member().and_then(|m| m.value.xlog_location))
}

/// The members sorted by name, with roles, states and lags worked out.
pub fn member_rows(view: &ClusterView) -> Vec<MemberRow> {
    let leader = view.leader_name();
    let standby = is_standby_cluster(view);
    let quorum = sync_mode(view) == SyncMode::Quorum;
    let syncs = sync_standbys(view);
    let optime = cluster_lsn(view);
    let point = |lsn: Option<u64>| WalPoint {
        lsn,
        lag: lsn.zip(optime).map(|(l, o)| o.saturating_sub(l)),
    };
    view.members
        .values()
        .map(|Member { name, value: m, .. }| {
            let role = if Some(name.as_str()) == leader {
                if standby {
                    MemberRole::StandbyLeader
                } else {
                    MemberRole::Leader
                }
            } else if syncs.iter().any(|s| s == name) {
                if quorum {
                    MemberRole::QuorumStandby
                } else {
                    MemberRole::SyncStandby
                }
            } else {
                MemberRole::Replica
            };
            let state = match (&m.replication_state, role.is_leader()) {
                (Some(rs), false) if !rs.is_empty() => rs.clone(),
                _ => m.state.clone(),
            };
            let (host, port) = match m.conn_host_port() {
                Some((h, p)) => (Some(h), Some(p)),
                None => (None, None),
            };
            let timeline = m
                .timeline
                .or_else(|| (role.is_leader() && view.history.is_some()).then(|| view.timeline()));
            let (receive, replay, lsn) = if role.is_leader() {
                (None, None, None)
            } else {
                (
                    Some(point(m.receive_lsn)),
                    Some(point(m.replay_lsn)),
                    Some(point(m.xlog_location)),
                )
            };
            MemberRow {
                name: name.clone(),
                role,
                state,
                api_url: m.api_url.clone(),
                host,
                port,
                timeline,
                receive,
                replay,
                lsn,
                pending_restart: m.pending_restart == Some(true),
                pending_restart_reason: m
                    .extra
                    .get("pending_restart_reason")
                    .filter(|v| !v.is_null())
                    .cloned(),
                scheduled_restart: m
                    .extra
                    .get("scheduled_restart")
                    .filter(|v| !v.is_null())
                    .cloned(),
                tags: m.tags.clone(),
            }
        })
        .collect()
}

/// `tandem list` output for one cluster.
pub fn render(view: &ClusterView, scope: &str, format: ListFormat, extended: bool) -> String {
    let rows = member_rows(view);
    let table = Table::build(&rows, extended);
    match format {
        ListFormat::Pretty => pretty(view, scope, &table),
        ListFormat::Tsv => tsv(scope, &table),
        ListFormat::Json => json_rows(scope, &table),
        ListFormat::Yaml => yaml_rows(scope, &table),
    }
}

/// `tandem topology`: the `list` table with members ordered as a replication tree: the leader
/// first, each replica under the member it replicates from (`replicatefrom` tag, else the leader),
/// names indented with `+ ` by depth.
pub fn render_topology(view: &ClusterView, scope: &str) -> String {
    let rows = member_rows(view);
    let ordered = topology_order(&rows, view.leader_name());
    let rows: Vec<MemberRow> = ordered
        .into_iter()
        .map(|(i, depth)| {
            let mut r = rows[i].clone();
            if depth > 0 {
                r.name = format!("{}+ {}", "  ".repeat(depth - 1), r.name);
            }
            r
        })
        .collect();
    let table = Table::build(&rows, false);
    // Names are indented: keep the Member column left-aligned as built.
    pretty(view, scope, &table)
}

/// Indices of `rows` in tree order, with their depth (0 = the leader, or a member with nowhere to
/// hang).
fn topology_order(rows: &[MemberRow], leader: Option<&str>) -> Vec<(usize, usize)> {
    let index = |name: &str| rows.iter().position(|r| r.name == name);
    let leader_i = leader.and_then(index);
    // Parent of each member: its replicatefrom member if that exists, else the leader.
    let parent: Vec<Option<usize>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if Some(i) == leader_i {
                return None;
            }
            match r
                .tags
                .get("replicatefrom")
                .and_then(Value::as_str)
                .and_then(index)
            {
                Some(u) if u != i => Some(u),
                _ => leader_i,
            }
        })
        .collect();
    fn visit(
        i: usize,
        depth: usize,
        parent: &[Option<usize>],
        placed: &mut Vec<bool>,
        out: &mut Vec<(usize, usize)>,
    ) {
        if placed[i] {
            return;
        }
        placed[i] = true;
        out.push((i, depth));
        for j in 0..parent.len() {
            if parent[j] == Some(i) {
                visit(j, depth + 1, parent, placed, out);
            }
        }
    }
    let mut out = Vec::new();
    let mut placed = vec![false; rows.len()];
    // Roots: the leader, then members that hang nowhere (no leader).
    for i in 0..rows.len() {
        if parent[i].is_none() {
            visit(i, 0, &parent, &mut placed, &mut out);
        }
    }
    for i in 0..rows.len() {
        // Cycles of replicatefrom: shown at the level below the leader.
        visit(i, 1, &parent, &mut placed, &mut out);
    }
    out
}

/// A plain table in `pretty` (bordered) or `tsv` form, for `history` and `query`.
pub fn simple_table(
    columns: &[&str],
    rows: &[Vec<String>],
    right: &[&str],
    format: ListFormat,
) -> String {
    match format {
        ListFormat::Tsv => {
            let mut out = columns.join("\t");
            out.push('\n');
            for r in rows {
                out.push_str(&r.join("\t"));
                out.push('\n');
            }
            out
        }
        ListFormat::Json | ListFormat::Yaml => {
            let list: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    for (c, v) in columns.iter().zip(r) {
                        let value = v
                            .parse::<i64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| Value::from(v.clone()));
                        m.insert(c.to_string(), value);
                    }
                    Value::Object(m)
                })
                .collect();
            if format == ListFormat::Json {
                let mut s = py_json(&Value::Array(list));
                s.push('\n');
                s
            } else {
                serde_yaml::to_string(&list).unwrap_or_default()
            }
        }
        ListFormat::Pretty => {
            let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
            for r in rows {
                for (i, c) in r.iter().enumerate().take(widths.len()) {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
            let mut border = String::from("+");
            for w in &widths {
                border.push_str(&"-".repeat(w + 2));
                border.push('+');
            }
            let line = |cells: Vec<&str>| {
                let mut l = String::from("|");
                for (i, c) in cells.iter().enumerate() {
                    let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()));
                    if right.contains(&columns[i]) {
                        let _ = write!(l, " {pad}{c} |");
                    } else {
                        let _ = write!(l, " {c}{pad} |");
                    }
                }
                l.push('\n');
                l
            };
            let mut out = format!("{border}\n");
            out.push_str(&line(columns.to_vec()));
            out.push_str(&format!("{border}\n"));
            for r in rows {
                let mut cells: Vec<&str> = r.iter().map(String::as_str).collect();
                cells.resize(columns.len(), "");
                out.push_str(&line(cells));
            }
            out.push_str(&format!("{border}\n"));
            out
        }
    }
}

/// A cell: its text for pretty/tsv and its value for json/yaml (`Null` = left out).
#[derive(Clone, Debug)]
struct Cell {
    text: String,
    value: Value,
}

impl Cell {
    fn empty() -> Cell {
        Cell {
            text: String::new(),
            value: Value::Null,
        }
    }
    fn text(s: impl Into<String>) -> Cell {
        let s = s.into();
        let value = if s.is_empty() {
            Value::Null
        } else {
            Value::from(s.clone())
        };
        Cell { text: s, value }
    }
    fn number(n: u64) -> Cell {
        Cell {
            text: n.to_string(),
            value: Value::from(n),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

struct Column {
    /// Name in tsv/json/yaml.
    name: &'static str,
    /// Title in pretty (both lag columns are `Lag` there).
    title: &'static str,
    align: Align,
}

struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Cell>>,
}

fn lsn_cell(p: &Option<WalPoint>) -> Cell {
    match p.and_then(|p| p.lsn) {
        Some(l) => Cell::text(Lsn(l).to_string()),
        None => Cell::empty(),
    }
}

fn lag_cell(p: &Option<WalPoint>) -> Cell {
    match p {
        None => Cell::empty(),
        Some(WalPoint {
            lag: Some(bytes), ..
        }) => Cell::number(lag_mb(*bytes)),
        Some(WalPoint { lag: None, .. }) => Cell::text("unknown"),
    }
}

/// Bytes to MB, rounded half to even (as Python's `round`).
fn lag_mb(bytes: u64) -> u64 {
    (bytes as f64 / 1_048_576.0).round_ties_even() as u64
}

/// `param: old->new` lines from `pending_restart_reason`.
fn reason_text(v: &Value) -> String {
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, d)| {
                let s = |f: &str| match d.get(f) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                format!("{k}: {}->{}", s("old_value"), s("new_value"))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn tags_yaml(tags: &Map<String, Value>) -> String {
    serde_yaml::to_string(tags)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

impl Table {
    fn build(rows: &[MemberRow], extended: bool) -> Table {
        let col = |name, title, align| Column { name, title, align };
        let mut columns = vec![
            col("Member", "Member", Align::Left),
            col("Host", "Host", Align::Left),
            col("Role", "Role", Align::Left),
            col("State", "State", Align::Left),
            col("TL", "TL", Align::Right),
            col("Receive LSN", "Receive LSN", Align::Right),
            col("Receive Lag", "Lag", Align::Right),
            col("Replay LSN", "Replay LSN", Align::Right),
            col("Replay Lag", "Lag", Align::Right),
        ];
        let mut hosts = std::collections::HashMap::new();
        for r in rows {
            if let Some(h) = &r.host {
                *hosts.entry(h.as_str()).or_insert(0) += 1;
            }
        }
        let with_port = rows.iter().any(|r| r.port.is_some_and(|p| p != 5432))
            || hosts.values().any(|n| *n > 1);
        let mut cells: Vec<Vec<Cell>> = rows
            .iter()
            .map(|r| {
                let host = match (&r.host, r.port) {
                    (Some(h), Some(p)) if with_port => {
                        if h.contains(':') {
                            format!("[{h}]:{p}")
                        } else {
                            format!("{h}:{p}")
                        }
                    }
                    (Some(h), _) => h.clone(),
                    (None, _) => String::new(),
                };
                vec![
                    Cell::text(r.name.clone()),
                    Cell::text(host),
                    Cell::text(r.role.title()),
                    Cell::text(r.state.clone()),
                    r.timeline.map(Cell::number).unwrap_or_else(Cell::empty),
                    lsn_cell(&r.receive),
                    lag_cell(&r.receive),
                    lsn_cell(&r.replay),
                    lag_cell(&r.replay),
                ]
            })
            .collect();
        // Optional columns: shown with -e, or when any member has a value.
        let mut optional = |name: &'static str, f: &dyn Fn(&MemberRow) -> Cell| {
            let extra: Vec<Cell> = rows.iter().map(f).collect();
            if extended || extra.iter().any(|c| !c.value.is_null()) {
                columns.push(col(name, name, Align::Left));
                for (row, c) in cells.iter_mut().zip(extra) {
                    row.push(c);
                }
            }
        };
        optional("Pending restart", &|r| {
            if r.pending_restart {
                Cell::text("*")
            } else {
                Cell::empty()
            }
        });
        optional("Pending restart reason", &|r| {
            r.pending_restart_reason
                .as_ref()
                .map(|v| Cell::text(reason_text(v)))
                .unwrap_or_else(Cell::empty)
        });
        optional("Scheduled restart", &|r| {
            let at = r
                .scheduled_restart
                .as_ref()
                .and_then(|s| s.get("schedule"))
                .and_then(Value::as_str);
            at.map(Cell::text).unwrap_or_else(Cell::empty)
        });
        optional("Tags", &|r| {
            if r.tags.is_empty() {
                Cell::empty()
            } else {
                Cell {
                    text: tags_yaml(&r.tags),
                    value: Value::Object(r.tags.clone()),
                }
            }
        });
        Table {
            columns,
            rows: cells,
        }
    }
}

fn title(view: &ClusterView, scope: &str) -> String {
    let id = match view.initialize.as_deref() {
        None => "uninitialized",
        Some("") => "initializing",
        Some(sysid) => sysid,
    };
    format!(" Cluster: {scope} ({id}) ")
}

fn pretty(view: &ClusterView, scope: &str, table: &Table) -> String {
    let cols = &table.columns;
    // Pretty hides long restart reasons.
    let reason_col = cols.iter().position(|c| c.name == "Pending restart reason");
    let text = |i: usize, c: &Cell| -> String {
        if Some(i) == reason_col && c.text.chars().count() > 50 {
            String::new()
        } else {
            c.text.clone()
        }
    };
    let mut widths: Vec<usize> = cols.iter().map(|c| c.title.chars().count()).collect();
    for row in &table.rows {
        for (i, c) in row.iter().enumerate() {
            for line in text(i, c).lines() {
                widths[i] = widths[i].max(line.chars().count());
            }
        }
    }
    let title = title(view, scope);
    let border_len = |w: &[usize]| 1 + w.iter().map(|w| w + 3).sum::<usize>();
    let title_len = title.chars().count();
    if title_len + 3 > border_len(&widths) {
        let grow = title_len + 3 - border_len(&widths);
        if let Some(last) = widths.last_mut() {
            *last += grow;
        }
    }
    let mut border = String::from("+");
    for w in &widths {
        border.push_str(&"-".repeat(w + 2));
        border.push('+');
    }
    let mut out = String::new();
    let top: String = std::iter::once('+')
        .chain(title.chars())
        .chain(border.chars().skip(1 + title_len))
        .collect();
    out.push_str(&top);
    out.push('\n');
    let line = |out: &mut String, cells: &[String]| {
        let height = cells
            .iter()
            .map(|c| c.lines().count().max(1))
            .max()
            .unwrap_or(1);
        for k in 0..height {
            out.push('|');
            for (i, c) in cells.iter().enumerate() {
                let part = c.lines().nth(k).unwrap_or("");
                let pad = widths[i].saturating_sub(part.chars().count());
                match cols[i].align {
                    Align::Left => {
                        let _ = write!(out, " {part}{} |", " ".repeat(pad));
                    }
                    Align::Right => {
                        let _ = write!(out, " {}{part} |", " ".repeat(pad));
                    }
                }
            }
            out.push('\n');
        }
    };
    line(
        &mut out,
        &cols.iter().map(|c| c.title.to_string()).collect::<Vec<_>>(),
    );
    out.push_str(&border);
    out.push('\n');
    for row in &table.rows {
        line(
            &mut out,
            &row.iter()
                .enumerate()
                .map(|(i, c)| text(i, c))
                .collect::<Vec<_>>(),
        );
    }
    out.push_str(&border);
    out.push('\n');
    if view.paused() {
        out.push_str(" Maintenance mode: on\n");
    }
    if let Some(f) = view.failover_request() {
        if let Some(at) = &f.scheduled_at {
            let _ = writeln!(out, " Switchover scheduled at: {at}");
            if let Some(l) = &f.leader {
                let _ = writeln!(out, "                    from: {l}");
            }
            if let Some(m) = &f.member {
                let _ = writeln!(out, "                      to: {m}");
            }
        }
    }
    out
}

fn tsv(scope: &str, table: &Table) -> String {
    let mut out = String::from("Cluster");
    for c in &table.columns {
        out.push('\t');
        out.push_str(c.name);
    }
    out.push('\n');
    for row in &table.rows {
        out.push_str(scope);
        for c in row {
            out.push('\t');
            // One line per member: multi-line cells (tags) are joined.
            out.push_str(&c.text.replace('\n', ", "));
        }
        out.push('\n');
    }
    out
}

/// One object per member, in column order; empty cells left out.
fn objects<'a>(
    scope: &'a str,
    table: &'a Table,
) -> impl Iterator<Item = Vec<(&'a str, Value)>> + 'a {
    table.rows.iter().map(move |row| {
        let mut obj = vec![("Cluster", Value::from(scope))];
        for (col, cell) in table.columns.iter().zip(row) {
            if !cell.value.is_null() {
                obj.push((col.name, cell.value.clone()));
            }
        }
        obj
    })
}

/// JSON in column order (serde_json's map would sort the keys), Python-style spacing.
fn json_rows(scope: &str, table: &Table) -> String {
    let items: Vec<String> = objects(scope, table)
        .map(|obj| {
            let fields: Vec<String> = obj
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(*k), py_json(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        })
        .collect();
    format!("[{}]\n", items.join(", "))
}

fn py_json(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => {
            let fields: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), py_json(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// YAML with sorted keys, as PyYAML prints it.
fn yaml_rows(scope: &str, table: &Table) -> String {
    let list: Vec<Value> = objects(scope, table)
        .map(|obj| Value::Object(obj.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .collect();
    serde_yaml::to_string(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_orders_by_replicatefrom() {
        let row = |name: &str, from: Option<&str>| MemberRow {
            name: name.into(),
            role: MemberRole::Replica,
            state: "streaming".into(),
            api_url: String::new(),
            host: None,
            port: None,
            timeline: None,
            receive: None,
            replay: None,
            lsn: None,
            pending_restart: false,
            pending_restart_reason: None,
            scheduled_restart: None,
            tags: from
                .map(|f| {
                    [("replicatefrom".to_string(), Value::from(f))]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
        };
        let rows = vec![
            row("a", Some("c")),
            row("b", None),
            row("c", None),
            row("d", Some("a")),
            row("e", Some("e")),
        ];
        assert_eq!(
            topology_order(&rows, Some("b")),
            vec![(1, 0), (2, 1), (0, 2), (3, 3), (4, 1)]
        );
        // Without a leader, everyone is a root unless it hangs below another member.
        assert_eq!(
            topology_order(&rows, None),
            vec![(1, 0), (2, 0), (0, 1), (3, 2), (4, 0)]
        );
    }

    #[test]
    fn simple_tables() {
        let rows = vec![vec![
            "1".to_string(),
            "25623960".into(),
            "no recovery target specified".into(),
        ]];
        let t = simple_table(
            &["TL", "LSN", "Reason"],
            &rows,
            &["TL", "LSN"],
            ListFormat::Pretty,
        );
        assert_eq!(
            t,
            "+----+----------+------------------------------+\n\
             | TL |      LSN | Reason                       |\n\
             +----+----------+------------------------------+\n\
             |  1 | 25623960 | no recovery target specified |\n\
             +----+----------+------------------------------+\n"
        );
        assert_eq!(
            simple_table(&["TL", "LSN", "Reason"], &rows, &[], ListFormat::Tsv),
            "TL\tLSN\tReason\n1\t25623960\tno recovery target specified\n"
        );
        assert_eq!(
            simple_table(
                &["TL", "Reason"],
                &[vec!["1".into(), "x".into()]],
                &[],
                ListFormat::Json
            ),
            "[{\"Reason\": \"x\", \"TL\": 1}]\n"
        );
    }
    use tandem_core::cluster::{LeaderKey, MemberValue, StatusValue, Versioned};

    fn member(
        name: &str,
        port: u16,
        role: &str,
        f: impl FnOnce(&mut MemberValue),
    ) -> (String, Member) {
        let mut value = MemberValue {
            conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
            api_url: format!("http://127.0.0.1:{}/patroni", port + 3576),
            state: "running".into(),
            role: role.into(),
            version: "4.1.5".into(),
            timeline: Some(5),
            ..Default::default()
        };
        f(&mut value);
        (
            name.to_string(),
            Member {
                name: name.into(),
                value,
                lease: 1,
            },
        )
    }

    /// postgresql0 leader, postgresql1 streaming 3 MiB behind, postgresql2 stopped.
    fn view() -> ClusterView {
        let optime = 0x0400_04E8 + 3 * 1_048_576;
        ClusterView {
            initialize: Some("7277694203142172922".into()),
            leader: Some(LeaderKey {
                name: "postgresql0".into(),
                lease: 1,
                mod_revision: 1,
            }),
            status: Some(StatusValue {
                optime: Some(optime),
                ..Default::default()
            }),
            members: [
                member("postgresql0", 5432, "primary", |m| {
                    m.xlog_location = Some(optime)
                }),
                member("postgresql1", 5433, "replica", |m| {
                    m.replication_state = Some("streaming".into());
                    m.receive_lsn = Some(0x0400_04E8);
                    m.replay_lsn = Some(0x0400_04E8);
                    m.xlog_location = Some(0x0400_04E8);
                }),
                member("postgresql2", 5434, "replica", |m| {
                    m.state = "stopped".into();
                    m.timeline = None;
                    m.tags.insert("nofailover".into(), Value::Bool(true));
                }),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pretty_matches_patronictl_layout() {
        let out = render(&view(), "batman", ListFormat::Pretty, false);
        let expected = "\
+ Cluster: batman (7277694203142172922) -+-----------+----+-------------+---------+------------+---------+------------------+
| Member      | Host           | Role    | State     | TL | Receive LSN |     Lag | Replay LSN |     Lag | Tags             |
+-------------+----------------+---------+-----------+----+-------------+---------+------------+---------+------------------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |             |         |            |         |                  |
| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |   0/40004E8 |       3 |  0/40004E8 |       3 |                  |
| postgresql2 | 127.0.0.1:5434 | Replica | stopped   |    |             | unknown |            | unknown | nofailover: true |
+-------------+----------------+---------+-----------+----+-------------+---------+------------+---------+------------------+
";
        assert_eq!(out, expected, "\n{out}");
    }

    #[test]
    fn pretty_title_footer_and_sync_role() {
        let mut v = view();
        v.members.remove("postgresql2");
        v.config = Some(Versioned {
            value: serde_json::json!({"pause": true, "synchronous_mode": true}),
            mod_revision: 1,
        });
        v.sync = Some(Versioned {
            value: serde_json::json!({"leader": "postgresql0", "sync_standby": "postgresql1"}),
            mod_revision: 1,
        });
        v.status = None; // lag measured against the leader's own position
        v.initialize = Some(String::new());
        let out = render(&v, "batman", ListFormat::Pretty, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("+ Cluster: batman (initializing) -"),
            "{out}"
        );
        assert_eq!(lines[0].len(), lines[2].len());
        assert!(
            lines[4].contains("| Sync Standby | streaming |") && lines[4].contains("|   3 |"),
            "{out}"
        );
        assert_eq!(lines.last(), Some(&" Maintenance mode: on"));
        assert!(!out.contains("Tags"));
    }

    #[test]
    fn host_without_port_when_all_default_and_distinct() {
        let mut v = view();
        for (i, m) in v.members.values_mut().enumerate() {
            m.value.conn_url = format!("postgres://10.0.0.{i}:5432/postgres");
        }
        let out = render(&v, "batman", ListFormat::Tsv, false);
        assert!(out.contains("\t10.0.0.1\t"), "{out}");
        assert!(!out.contains(":5432"));
    }

    #[test]
    fn tsv_has_cluster_column_and_full_lag_titles() {
        let out = render(&view(), "batman", ListFormat::Tsv, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tTags");
        assert_eq!(
            lines[1],
            "batman\tpostgresql0\t127.0.0.1:5432\tLeader\trunning\t5\t\t\t\t\t"
        );
        assert_eq!(lines[2], "batman\tpostgresql1\t127.0.0.1:5433\tReplica\tstreaming\t5\t0/40004E8\t3\t0/40004E8\t3\t");
    }

    #[test]
    fn json_keeps_patroni_keys_in_column_order() {
        let out = render(&view(), "batman", ListFormat::Json, false);
        let parsed: Vec<Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[0],
            serde_json::json!({"Cluster":"batman","Member":"postgresql0","Host":"127.0.0.1:5432","Role":"Leader","State":"running","TL":5})
        );
        assert_eq!(parsed[1]["Receive Lag"], Value::from(3));
        assert_eq!(parsed[1]["Replay LSN"], Value::from("0/40004E8"));
        assert_eq!(parsed[2]["Tags"], serde_json::json!({"nofailover": true}));
        assert_eq!(parsed[2]["Replay Lag"], Value::from("unknown"));
        assert!(
            out.starts_with(r#"[{"Cluster": "batman", "Member": "postgresql0", "Host""#),
            "{out}"
        );
    }

    #[test]
    fn yaml_is_a_list_of_sorted_maps() {
        let out = render(&view(), "batman", ListFormat::Yaml, true);
        let parsed: Vec<Value> = serde_yaml::from_str(&out).unwrap();
        assert_eq!(parsed[1]["Member"], Value::from("postgresql1"));
        assert_eq!(parsed[1]["Replay Lag"], Value::from(3));
        assert!(
            out.starts_with("- Cluster: batman\n  Host: 127.0.0.1:5432\n"),
            "{out}"
        );
    }

    #[test]
    fn extended_shows_optional_columns_and_pending_restart() {
        let mut v = view();
        v.members
            .get_mut("postgresql1")
            .unwrap()
            .value
            .pending_restart = Some(true);
        let out = render(&v, "batman", ListFormat::Tsv, true);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0]
                .ends_with("\tPending restart\tPending restart reason\tScheduled restart\tTags"),
            "{out}"
        );
        assert!(lines[2].contains("\t*\t"));
    }

    #[test]
    fn rows_for_cluster_endpoint() {
        let mut v = view();
        v.config = Some(Versioned {
            value: serde_json::json!({"standby_cluster": {"host": "10.1.1.1"}}),
            mod_revision: 1,
        });
        let rows = member_rows(&v);
        assert_eq!(rows[0].role, MemberRole::StandbyLeader);
        assert_eq!(
            rows[1].replay,
            Some(WalPoint {
                lsn: Some(0x0400_04E8),
                lag: Some(3 * 1_048_576)
            })
        );
        assert_eq!(
            rows[2].receive,
            Some(WalPoint {
                lsn: None,
                lag: None
            })
        );
        assert_eq!(
            (rows[2].host.as_deref(), rows[2].port),
            (Some("127.0.0.1"), Some(5434))
        );
    }

    #[test]
    fn long_title_widens_the_table() {
        let v = ClusterView::default();
        let scope = "a-very-long-cluster-name-that-is-wider-than-all-the-column-headers-together";
        let out = render(&v, scope, ListFormat::Pretty, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[0].starts_with(&format!("+ Cluster: {scope} (uninitialized) -")),
            "{out}"
        );
        assert!(lines[0].ends_with('+'));
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{out}"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed_with_ports() {
        let mut v = view();
        v.members.get_mut("postgresql1").unwrap().value.conn_url =
            "postgres://[fd00::2]:5433/postgres".into();
        let out = render(&v, "batman", ListFormat::Tsv, false);
        assert!(out.contains("\t[fd00::2]:5433\t"), "{out}");
    }

    #[test]
    fn mb_rounding_and_formats() {
        assert_eq!(lag_mb(0), 0);
        assert_eq!(lag_mb(524_288), 0); // 0.5 rounds to even
        assert_eq!(lag_mb(1_572_864), 2); // 1.5 rounds to even
        assert_eq!(lag_mb(1_600_000), 2);
        assert_eq!("yml".parse::<ListFormat>(), Ok(ListFormat::Yaml));
        assert!("xml".parse::<ListFormat>().is_err());
    }
}
