//! Write-ahead-log positions. Patroni stores them in etcd as absolute byte positions (integers);
//! PostgreSQL prints them as `X/Y` (two 32-bit hex halves).

use std::fmt;

/// An absolute WAL byte position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` form.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return None;
        }
        Some(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// The replication slot name Patroni uses for a member: lower-case, `-` and `.` become `_`,
/// any other character outside `[a-z0-9_]` becomes `u` + its 4-digit code point, at most 63 chars.
pub fn slot_name(member: &str) -> String {
    let mut out = String::new();
    for c in member.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => out.push(c),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.chars().take(63).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for (text, value) in [
            ("0/0", 0u64),
            ("0/40004E8", 0x40004E8),
            ("1/0", 1 << 32),
            ("A/FF", (10 << 32) | 255),
        ] {
            assert_eq!(Lsn::parse(text), Some(Lsn(value)), "{text}");
            assert_eq!(Lsn(value).to_string(), text);
        }
        assert_eq!(Lsn::parse("nope"), None);
        assert_eq!(Lsn::parse("1/"), None);
        assert_eq!(Lsn::parse("100000000/0"), None);
    }

    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(slot_name("postgresql-01"), "postgresql_01");
        assert_eq!(slot_name("Node.A"), "node_a");
        assert_eq!(slot_name("n@1"), "nu00641");
        assert_eq!(slot_name(&"x".repeat(80)).len(), 63);
    }
}
