//! PostgreSQL parameter values checked by type before they reach the postmaster.
//!
//! A value PostgreSQL cannot parse stops the postmaster from starting ("invalid value for
//! parameter"), so a typo in the dynamic configuration could take every replica down at its next
//! restart. Patroni checks each parameter against PostgreSQL's type and range and drops what does
//! not fit, with a warning; its own command-line parameters (`max_connections`, `wal_level`, ...)
//! fall back to their defaults, with the stricter minimums Patroni needs for replication. tandem
//! does the same for the parameters in [`TABLE`]: the ones Patroni controls (spec §7.5) and the
//! ones most often set. Parameters not in the table pass unchecked (PostgreSQL still checks them).
//!
//! Value syntax, as PostgreSQL's documentation states it (§20.1.1 "Parameter Names and Values"):
//! * boolean: `on`, `off`, `true`, `false`, `yes`, `no`, `1`, `0`, case-insensitive, or any
//!   unambiguous prefix of these;
//! * integer: decimal, or hexadecimal (`0x...`) or octal (leading `0`) without a fraction; a
//!   fractional decimal is rounded to the nearest integer; a parameter with a unit takes a unit
//!   suffix (memory `B`, `kB`, `MB`, `GB`, `TB`; time `us`, `ms`, `s`, `min`, `h`, `d`;
//!   case-sensitive), the value being converted to the parameter's base unit;
//! * real: a floating-point number, with a unit suffix for time-valued parameters;
//! * enum: one of the listed names, case-insensitive.

use serde_json::Value;

/// The base unit a numeric parameter is stored in (what a value without a suffix means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    None,
    /// Memory, in bytes.
    Bytes,
    /// Memory, in kilobytes.
    Kb,
    /// Memory, in 8 kB blocks (`shared_buffers`, `effective_cache_size`, ...).
    Blocks8k,
    /// Memory, in megabytes.
    Mb,
    /// Time, in milliseconds.
    Ms,
    /// Time, in seconds.
    S,
}

impl Unit {
    fn memory(self) -> Option<f64> {
        match self {
            Unit::Bytes => Some(1.0),
            Unit::Kb => Some(1024.0),
            Unit::Blocks8k => Some(8192.0),
            Unit::Mb => Some(1024.0 * 1024.0),
            _ => None,
        }
    }

    fn time_ms(self) -> Option<f64> {
        match self {
            Unit::Ms => Some(1.0),
            Unit::S => Some(1000.0),
            _ => None,
        }
    }

    /// The value of one `suffix` in this base unit, or None if the suffix does not apply.
    fn factor(self, suffix: &str) -> Option<f64> {
        if let Some(base) = self.memory() {
            let bytes = match suffix {
                "B" => 1.0,
                "kB" => 1024.0,
                "MB" => 1024.0 * 1024.0,
                "GB" => 1024.0 * 1024.0 * 1024.0,
                "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            return Some(bytes / base);
        }
        if let Some(base) = self.time_ms() {
            let ms = match suffix {
                "us" => 0.001,
                "ms" => 1.0,
                "s" => 1000.0,
                "min" => 60_000.0,
                "h" => 3_600_000.0,
                "d" => 86_400_000.0,
                _ => return None,
            };
            return Some(ms / base);
        }
        None
    }

    fn describe(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Bytes => " bytes (or with a unit: B, kB, MB, GB, TB)",
            Unit::Kb => " kB (or with a unit: B, kB, MB, GB, TB)",
            Unit::Blocks8k => " blocks of 8 kB (or with a unit: kB, MB, GB, TB)",
            Unit::Mb => " MB (or with a unit: kB, MB, GB, TB)",
            Unit::Ms => " ms (or with a unit: us, ms, s, min, h, d)",
            Unit::S => " s (or with a unit: ms, s, min, h, d)",
        }
    }
}

/// A parameter's type and range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Bool,
    Int { min: i64, max: i64, unit: Unit },
    Real { min: f64, max: f64, unit: Unit },
    Enum(&'static [&'static str]),
}

/// One row of the table: a parameter, its type and range, and why the range differs from
/// PostgreSQL's when it does.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub note: &'static str,
}

const I32: i64 = 2_147_483_647;
const BACKENDS: i64 = 262_143;
const BOOL_ALIASES: [&str; 6] = ["true", "false", "yes", "no", "1", "0"];

const fn int(name: &'static str, min: i64, max: i64, unit: Unit) -> Param {
    Param {
        name,
        kind: Kind::Int { min, max, unit },
        note: "",
    }
}

const fn patroni_min(name: &'static str, min: i64, max: i64, unit: Unit) -> Param {
    Param {
        name,
        kind: Kind::Int { min, max, unit },
        note: "Patroni's minimum for a replicated cluster",
    }
}

const fn real(name: &'static str, min: f64, max: f64, unit: Unit) -> Param {
    Param {
        name,
        kind: Kind::Real { min, max, unit },
        note: "",
    }
}

const fn boolean(name: &'static str) -> Param {
    Param {
        name,
        kind: Kind::Bool,
        note: "",
    }
}

const fn enumerated(name: &'static str, values: &'static [&'static str]) -> Param {
    Param {
        name,
        kind: Kind::Enum(values),
        note: "",
    }
}

/// The checked parameters (ranges of PostgreSQL 13-18; Patroni's stricter minimums where noted).
pub const TABLE: &[Param] = &[
    // Controlled by Patroni (spec §7.5): settable only in the dynamic configuration.
    patroni_min("max_connections", 25, BACKENDS, Unit::None),
    patroni_min("max_locks_per_transaction", 32, I32, Unit::None),
    patroni_min("max_worker_processes", 2, BACKENDS, Unit::None),
    int("max_prepared_transactions", 0, BACKENDS, Unit::None),
    Param {
        name: "wal_level",
        // `minimal` cannot feed a replica; `hot_standby` is PostgreSQL's old name of `replica`.
        kind: Kind::Enum(&["replica", "logical", "hot_standby"]),
        note: "a replicated cluster needs replica or logical",
    },
    boolean("track_commit_timestamp"),
    patroni_min("max_wal_senders", 3, BACKENDS, Unit::None),
    patroni_min("max_replication_slots", 4, BACKENDS, Unit::None),
    patroni_min("wal_keep_size", 16, I32, Unit::Mb),
    patroni_min("wal_keep_segments", 1, I32, Unit::None),
    boolean("wal_log_hints"),
    boolean("hot_standby"),
    // Memory.
    int("shared_buffers", 16, 1_073_741_823, Unit::Blocks8k),
    int("effective_cache_size", 1, I32, Unit::Blocks8k),
    int("temp_buffers", 100, 1_073_741_823, Unit::Blocks8k),
    int("wal_buffers", -1, BACKENDS, Unit::Blocks8k),
    int("work_mem", 64, I32, Unit::Kb),
    int("maintenance_work_mem", 1024, I32, Unit::Kb),
    int("autovacuum_work_mem", -1, I32, Unit::Kb),
    int("log_temp_files", -1, I32, Unit::Kb),
    int("max_wal_size", 2, I32, Unit::Mb),
    int("min_wal_size", 2, I32, Unit::Mb),
    // Time.
    int("checkpoint_timeout", 30, 86_400, Unit::S),
    int("archive_timeout", 0, 1_073_741_823, Unit::S),
    int("wal_receiver_status_interval", 0, 2_147_483, Unit::S),
    int("autovacuum_naptime", 1, 2_147_483, Unit::S),
    int("max_standby_streaming_delay", -1, I32, Unit::Ms),
    int("max_standby_archive_delay", -1, I32, Unit::Ms),
    int("wal_sender_timeout", 0, I32, Unit::Ms),
    int("wal_receiver_timeout", 0, I32, Unit::Ms),
    int("statement_timeout", 0, I32, Unit::Ms),
    int("lock_timeout", 0, I32, Unit::Ms),
    int("idle_in_transaction_session_timeout", 0, I32, Unit::Ms),
    int("log_min_duration_statement", -1, I32, Unit::Ms),
    int("log_autovacuum_min_duration", -1, I32, Unit::Ms),
    int("bgwriter_delay", 10, 10_000, Unit::Ms),
    int("wal_writer_delay", 1, 10_000, Unit::Ms),
    real("autovacuum_vacuum_cost_delay", -1.0, 100.0, Unit::Ms),
    real("vacuum_cost_delay", 0.0, 100.0, Unit::Ms),
    // Plain numbers.
    real("checkpoint_completion_target", 0.0, 1.0, Unit::None),
    real("random_page_cost", 0.0, f64::MAX, Unit::None),
    real("seq_page_cost", 0.0, f64::MAX, Unit::None),
    real("autovacuum_vacuum_scale_factor", 0.0, 100.0, Unit::None),
    real("autovacuum_analyze_scale_factor", 0.0, 100.0, Unit::None),
    int("autovacuum_max_workers", 1, BACKENDS, Unit::None),
    int("autovacuum_vacuum_cost_limit", -1, 10_000, Unit::None),
    int("effective_io_concurrency", 0, 1000, Unit::None),
    int("max_parallel_workers", 0, 1024, Unit::None),
    int("max_parallel_workers_per_gather", 0, 1024, Unit::None),
    int("max_parallel_maintenance_workers", 0, 1024, Unit::None),
    int("default_statistics_target", 1, 10_000, Unit::None),
    int("max_files_per_process", 64, I32, Unit::None),
    // Booleans.
    boolean("hot_standby_feedback"),
    boolean("fsync"),
    boolean("full_page_writes"),
    boolean("logging_collector"),
    boolean("log_checkpoints"),
    boolean("log_connections"),
    boolean("log_disconnections"),
    boolean("log_lock_waits"),
    boolean("autovacuum"),
    boolean("ssl"),
    boolean("jit"),
    boolean("track_io_timing"),
    // Enums (the boolean spellings are accepted where PostgreSQL accepts them).
    enumerated(
        "archive_mode",
        &[
            "always", "on", "off", "true", "false", "yes", "no", "1", "0",
        ],
    ),
    enumerated(
        "synchronous_commit",
        &[
            "local",
            "remote_write",
            "remote_apply",
            "on",
            "off",
            "true",
            "false",
            "yes",
            "no",
            "1",
            "0",
        ],
    ),
    enumerated(
        "wal_compression",
        &[
            "pglz", "lz4", "zstd", "on", "off", "true", "false", "yes", "no", "1", "0",
        ],
    ),
    enumerated(
        "huge_pages",
        &["on", "off", "try", "true", "false", "yes", "no", "1", "0"],
    ),
    enumerated("password_encryption", &["md5", "scram-sha-256"]),
    enumerated("log_statement", &["none", "ddl", "mod", "all"]),
    enumerated(
        "log_min_messages",
        &[
            "debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error",
            "log", "fatal", "panic",
        ],
    ),
    enumerated(
        "default_transaction_isolation",
        &[
            "serializable",
            "repeatable read",
            "read committed",
            "read uncommitted",
        ],
    ),
];

/// The row for `name` (parameter names are case-insensitive in PostgreSQL).
pub fn lookup(name: &str) -> Option<&'static Param> {
    TABLE.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// What a value of this kind must look like, for messages.
pub fn expected(p: &Param) -> String {
    let mut s = match p.kind {
        Kind::Bool => "a boolean (on/off, true/false, yes/no, 1/0)".to_string(),
        Kind::Int { min, max, unit } => {
            format!("an integer from {min} to {max}{}", unit.describe())
        }
        Kind::Real { min, max, unit } => {
            if max == f64::MAX {
                format!("a number >= {min}{}", unit.describe())
            } else {
                format!("a number from {min} to {max}{}", unit.describe())
            }
        }
        Kind::Enum(values) => {
            // The boolean spellings are aliases; name the canonical values only.
            let shown: Vec<&str> = values
                .iter()
                .copied()
                .filter(|v| !BOOL_ALIASES.contains(v))
                .collect();
            format!("one of {}", shown.join(", "))
        }
    };
    if !p.note.is_empty() {
        s.push_str(&format!(" ({})", p.note));
    }
    s
}

/// Whether `value` is valid for parameter `name`: `Ok(())` when it is, or when the parameter is
/// not in [`TABLE`]; otherwise `Err` with what was expected. Arrays and objects are never
/// valid (a parameter takes a single value). Never panics.
pub fn check(name: &str, value: &Value) -> Result<(), String> {
    if matches!(value, Value::Array(_) | Value::Object(_)) {
        return Err("a single value (string, number or boolean)".to_string());
    }
    let Some(p) = lookup(name) else {
        return Ok(());
    };
    if valid(p.kind, value) {
        Ok(())
    } else {
        Err(expected(p))
    }
}

fn valid(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Bool => match value {
            Value::Bool(_) => true,
            Value::Number(n) => matches!(n.as_u64(), Some(0 | 1)),
            Value::String(s) => parse_bool(s).is_some(),
            _ => false,
        },
        Kind::Enum(values) => {
            let text = match value {
                Value::Bool(true) => "on".to_string(),
                Value::Bool(false) => "off".to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return false,
            };
            values.iter().any(|v| v.eq_ignore_ascii_case(&text))
        }
        Kind::Int { min, max, unit } => {
            let v = match value {
                Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => i as f64,
                    (None, Some(f)) => f.round(),
                    _ => return false,
                },
                Value::String(s) => match parse_int(s, unit) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
            v.is_finite() && v >= min as f64 && v <= max as f64
        }
        Kind::Real { min, max, unit } => {
            let v = match value {
                Value::Number(n) => match n.as_f64() {
                    Some(f) => f,
                    None => return false,
                },
                Value::String(s) => match parse_real(s, unit) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
            v.is_finite() && v >= min && v <= max
        }
    }
}

/// PostgreSQL's boolean syntax: on/off/true/false/yes/no/1/0, case-insensitive, or an
/// unambiguous prefix (`t`, `ye`, `of`; not `o`).
pub fn parse_bool(s: &str) -> Option<bool> {
    let l = s.to_ascii_lowercase();
    if l.is_empty() {
        return None;
    }
    let prefix_of = |word: &str| word.starts_with(l.as_str());
    match l.as_str() {
        "1" => return Some(true),
        "0" => return Some(false),
        _ => {}
    }
    if prefix_of("true") || prefix_of("yes") {
        return Some(true);
    }
    if prefix_of("false") || prefix_of("no") {
        return Some(false);
    }
    // "on" and "off" share "o": at least two characters are needed.
    if l.len() >= 2 {
        if prefix_of("on") {
            return Some(true);
        }
        if prefix_of("off") {
            return Some(false);
        }
    }
    None
}

/// Splits `s` (surrounding white space allowed) into the leading decimal number and the rest
/// (white space between them allowed): `"256 MB"` → (256.0, "MB").
fn number_and_suffix(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - digits_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    // An exponent only when digits follow it (so "5e" is not taken for one).
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    let value: f64 = s[..i].parse().ok()?;
    Some((value, s[i..].trim_start()))
}

fn apply_unit(value: f64, suffix: &str, unit: Unit) -> Option<f64> {
    if suffix.is_empty() {
        return Some(value);
    }
    let factor = unit.factor(suffix)?;
    Some(value * factor)
}

/// An integer parameter's value in its base unit (rounded as PostgreSQL rounds), or None.
pub fn parse_int(s: &str, unit: Unit) -> Option<f64> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    // Hexadecimal and octal: whole numbers only, optionally followed by a unit.
    let radix = if body.starts_with("0x") || body.starts_with("0X") {
        Some((16, &body[2..]))
    } else if body.len() > 1
        && body.starts_with('0')
        && body.as_bytes()[1].is_ascii_digit()
        && !body.contains(['.', 'e', 'E'])
    {
        Some((8, &body[1..]))
    } else {
        None
    };
    let value = match radix {
        Some((radix, digits)) => {
            let end = digits
                .find(|c: char| !c.is_digit(radix))
                .unwrap_or(digits.len());
            if end == 0 {
                return None;
            }
            let n = i64::from_str_radix(&digits[..end], radix).ok()? as f64;
            let n = if neg { -n } else { n };
            apply_unit(n, digits[end..].trim_start(), unit)?
        }
        None => {
            let (n, suffix) = number_and_suffix(t)?;
            apply_unit(n, suffix, unit)?
        }
    };
    let rounded = value.round();
    rounded.is_finite().then_some(rounded)
}

/// A real parameter's value in its base unit, or None.
pub fn parse_real(s: &str, unit: Unit) -> Option<f64> {
    let (n, suffix) = number_and_suffix(s)?;
    let v = apply_unit(n, suffix, unit)?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_table() {
        // (parameter, value, valid?)
        let cases: &[(&str, Value, bool)] = &[
            ("max_connections", json!(200), true),
            ("max_connections", json!("200"), true),
            ("max_connections", json!(" 200 "), true),
            ("max_connections", json!("abc"), false),
            ("max_connections", json!(10), false), // Patroni's minimum is 25
            ("max_connections", json!(true), false),
            ("max_connections", json!("0x100"), true),
            ("max_connections", json!("0400"), true), // octal 256
            ("max_connections", json!("100.4"), true), // rounded
            ("max_connections", json!("100MB"), false), // no unit for a plain integer
            ("max_connections", json!([1]), false),
            ("max_connections", json!(1e300), false),
            ("MAX_CONNECTIONS", json!("x"), false), // names are case-insensitive
            ("shared_buffers", json!("256MB"), true),
            ("shared_buffers", json!("256 MB"), true),
            ("shared_buffers", json!("1GB"), true),
            ("shared_buffers", json!("256mb"), false), // units are case-sensitive
            ("shared_buffers", json!("128kB"), true),  // 16 blocks, the minimum
            ("shared_buffers", json!("64kB"), false),  // 8 blocks
            ("shared_buffers", json!(128), true),
            ("shared_buffers", json!("256s"), false), // a time unit on a memory parameter
            ("shared_buffers", json!("1.5GB"), true),
            ("checkpoint_timeout", json!("5min"), true),
            ("checkpoint_timeout", json!("10"), false), // 10 s < 30 s
            ("checkpoint_timeout", json!("2d"), false), // > 1 day
            ("statement_timeout", json!("30s"), true),
            ("statement_timeout", json!(-1), false),
            ("log_min_duration_statement", json!(-1), true),
            ("wal_keep_size", json!("128MB"), true),
            ("wal_keep_size", json!("1GB"), true),
            ("wal_keep_size", json!("8MB"), false),
            ("wal_level", json!("replica"), true),
            ("wal_level", json!("LOGICAL"), true),
            ("wal_level", json!("hot_standby"), true),
            ("wal_level", json!("minimal"), false),
            ("hot_standby", json!("on"), true),
            ("wal_log_hints", json!(true), true),
            ("wal_log_hints", json!("of"), true),
            ("wal_log_hints", json!("o"), false),
            ("wal_log_hints", json!("t"), true),
            ("wal_log_hints", json!(1), true),
            ("wal_log_hints", json!(2), false),
            ("wal_log_hints", json!("maybe"), false),
            ("track_commit_timestamp", json!(""), false),
            ("checkpoint_completion_target", json!(0.9), true),
            ("checkpoint_completion_target", json!("0.9"), true),
            ("checkpoint_completion_target", json!(1.5), false),
            ("random_page_cost", json!("1.1"), true),
            ("random_page_cost", json!("inf"), false),
            ("random_page_cost", json!("nan"), false),
            ("autovacuum_vacuum_cost_delay", json!("2ms"), true),
            ("synchronous_commit", json!(true), true),
            ("synchronous_commit", json!("remote_apply"), true),
            ("synchronous_commit", json!("sometimes"), false),
            (
                "default_transaction_isolation",
                json!("read committed"),
                true,
            ),
            ("archive_mode", json!("always"), true),
            ("password_encryption", json!("scram-sha-256"), true),
            ("password_encryption", json!("plain"), false),
            // Not in the table: PostgreSQL checks it.
            ("application_name", json!("anything"), true),
            (
                "shared_preload_libraries",
                json!("pg_stat_statements"),
                true,
            ),
            ("some_extension.setting", json!({"a": 1}), false),
        ];
        for (name, value, ok) in cases {
            assert_eq!(check(name, value).is_ok(), *ok, "{name} = {value}");
        }
    }

    #[test]
    fn expected_names_type_and_range() {
        let e = check("max_connections", &json!("abc")).unwrap_err();
        assert_eq!(
            e,
            "an integer from 25 to 262143 (Patroni's minimum for a replicated cluster)"
        );
        let e = check("shared_buffers", &json!("x")).unwrap_err();
        assert!(e.contains("blocks of 8 kB") && e.contains("MB"), "{e}");
        let e = check("wal_level", &json!("minimal")).unwrap_err();
        assert!(e.starts_with("one of replica, logical, hot_standby"), "{e}");
        let e = check("synchronous_commit", &json!("x")).unwrap_err();
        assert!(!e.contains("yes"), "aliases are not listed: {e}");
        let e = check("wal_log_hints", &json!("x")).unwrap_err();
        assert!(e.starts_with("a boolean"), "{e}");
    }

    #[test]
    fn unit_conversion() {
        assert_eq!(parse_int("1GB", Unit::Blocks8k), Some(131_072.0));
        assert_eq!(parse_int("2h", Unit::S), Some(7200.0));
        assert_eq!(parse_int("1500us", Unit::Ms), Some(2.0));
        assert_eq!(parse_int("0x10kB", Unit::Kb), Some(16.0));
        assert_eq!(parse_int("12", Unit::Mb), Some(12.0));
        assert_eq!(parse_int("5e", Unit::None), None);
        assert_eq!(parse_int("1e3", Unit::None), Some(1000.0));
        assert_eq!(parse_int("-", Unit::None), None);
        assert_eq!(parse_int("0x", Unit::None), None);
        assert_eq!(parse_real(".5", Unit::None), Some(0.5));
        assert_eq!(parse_real("5.", Unit::None), Some(5.0));
    }

    #[test]
    fn every_row_is_reachable_and_sane() {
        for p in TABLE {
            assert_eq!(lookup(p.name).map(|r| r.name), Some(p.name));
            assert_eq!(p.name, p.name.to_ascii_lowercase());
            match p.kind {
                Kind::Int { min, max, .. } => assert!(min <= max, "{}", p.name),
                Kind::Real { min, max, .. } => assert!(min <= max, "{}", p.name),
                Kind::Enum(v) => assert!(!v.is_empty()),
                Kind::Bool => {}
            }
        }
        let mut names: Vec<&str> = TABLE.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len(), "a parameter listed twice");
    }
}
