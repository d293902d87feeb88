//! ISO-8601 / RFC 3339 timestamps as Patroni writes them (`2024-01-01T10:00:00+00:00`,
//! optional fraction, `Z` accepted), converted to Unix milliseconds without a clock.

/// Unix milliseconds of `text`; `None` when malformed or without a time zone.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, rest) = t.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    // Split the zone off: Z, +HH:MM, -HH:MM, +HHMM.
    let (clock, offset_min) =
        if let Some(c) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
            (c, 0)
        } else {
            let pos = rest.rfind(['+', '-'])?;
            let (c, z) = rest.split_at(pos);
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            if digits.len() != 4 && digits.len() != 2 {
                return None;
            }
            let h: i64 = digits[..2].parse().ok()?;
            let m: i64 = if digits.len() == 4 {
                digits[2..].parse().ok()?
            } else {
                0
            };
            (c, sign * (h * 60 + m))
        };
    let mut c = clock.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let mi: i64 = c.next()?.parse().ok()?;
    let sec_text = c.next().unwrap_or("0");
    let (s, frac) = sec_text.split_once('.').unwrap_or((sec_text, ""));
    let s: i64 = s.parse().ok()?;
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?
    };
    let days = days_from_civil(y, mo, da);
    Some(((days * 86400 + h * 3600 + mi * 60 + s) - offset_min * 60) * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp_ms;

    #[test]
    fn parses_patroni_forms() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00+00:00"), Some(0));
        assert_eq!(parse_timestamp_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2024-01-01T10:00:00Z"),
            Some(1704103200000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01T10:00:00.250+00:00"),
            Some(1704103200250)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01 05:00:00-05:00"),
            Some(1704103200000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01T10:00:00"),
            None,
            "a time zone is required"
        );
        assert_eq!(parse_timestamp_ms("garbage"), None);
        assert_eq!(parse_timestamp_ms("2024-13-01T10:00:00Z"), None);
    }
}
