//! Tracking, keepalived-style, pure: each check (a script or an interface) turns a stream of
//! results into an up/down state with `fall` / `rise` hysteresis, and [`health`] turns the states
//! into the effective priority and a fault.
//!
//! Weights follow keepalived's `vrrp_script`: `weight > 0` adds to the priority while the check
//! succeeds, `weight < 0` subtracts while it fails, and `weight 0` puts the router in FAULT while
//! it fails. The result is clamped to 1..=254; an address owner (255) keeps 255 unless faulted.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub fall: u32,
    pub rise: u32,
    pub weight: i32,
    up: bool,
    fails: u32,
    successes: u32,
}

impl Check {
    /// A new check starts up: a router is not held out of the election before its first result.
    pub fn new(name: impl Into<String>, fall: u32, rise: u32, weight: i32) -> Check {
        Check {
            name: name.into(),
            fall: fall.max(1),
            rise: rise.max(1),
            weight,
            up: true,
            fails: 0,
            successes: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Record one result; returns true when the up/down state changed.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok {
            self.fails = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.up && self.successes >= self.rise {
                self.up = true;
                return true;
            }
        } else {
            self.successes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.up && self.fails >= self.fall {
                self.up = false;
                return true;
            }
        }
        false
    }
}

/// The effective priority, and the reason for a fault if one check with weight 0 is down.
pub fn health(base: u8, checks: &[Check]) -> (u8, Option<String>) {
    let down: Vec<&str> = checks
        .iter()
        .filter(|c| !c.up && c.weight == 0)
        .map(|c| c.name.as_str())
        .collect();
    let fault = if down.is_empty() {
        None
    } else {
        Some(format!("tracked check failed: {}", down.join(", ")))
    };
    if base == 255 {
        return (255, fault);
    }
    let mut p = i32::from(base);
    for c in checks {
        if c.weight > 0 && c.up {
            p += c.weight;
        }
        if c.weight < 0 && !c.up {
            p += c.weight;
        }
    }
    (p.clamp(1, 254) as u8, fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_and_rise() {
        let mut c = Check::new("s", 3, 2, 0);
        assert!(c.is_up());
        assert!(!c.record(false));
        assert!(!c.record(false));
        assert!(!c.record(true), "a success resets the failure count");
        assert!(!c.record(false));
        assert!(!c.record(false));
        assert!(c.record(false));
        assert!(!c.is_up());
        assert!(!c.record(true));
        assert!(!c.record(false));
        assert!(!c.record(true));
        assert!(c.record(true));
        assert!(c.is_up());
    }

    #[test]
    fn weights() {
        let mut plus = Check::new("plus", 1, 1, 20);
        let mut minus = Check::new("minus", 1, 1, -30);
        let mut zero = Check::new("zero", 1, 1, 0);
        assert_eq!(health(100, &[plus.clone(), minus.clone()]), (120, None));
        plus.record(false);
        minus.record(false);
        assert_eq!(health(100, &[plus.clone(), minus.clone()]), (70, None));
        assert_eq!(health(20, &[minus.clone()]), (1, None), "clamped to 1");
        assert_eq!(health(250, &[Check::new("p", 1, 1, 50)]), (254, None));
        zero.record(false);
        let (p, f) = health(100, &[zero.clone()]);
        assert_eq!(p, 100);
        assert_eq!(f.as_deref(), Some("tracked check failed: zero"));
        assert_eq!(health(255, &[minus]).0, 255, "owner keeps 255");
    }
}
