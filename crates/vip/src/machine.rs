//! The VRRP state machine of RFC 5798 §6.4 (and RFC 3768 §6.4 for v2), pure: it is stepped
//! with events and the current time, and hands back the actions the host carries out. It never
//! reads a clock, a socket or a file.
//!
//! States: Initialize, Backup, Master (§6.4.1–§6.4.3), plus Fault (keepalived's extension: a
//! failed tracked check with weight 0 takes the router out of the election until it recovers).
//!
//! Timers (§6.1, §6.4):
//! - v3: `Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256`,
//!   `Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time`; a Backup learns
//!   `Master_Adver_Interval` from the Master's advertisements.
//! - v2 (RFC 3768 §6.1): `Skew_Time = (256 − Priority) / 256` seconds,
//!   `Master_Down_Interval = 3 × Advertisement_Interval + Skew_Time`.
//!
//! tandem's deviations when `fast` is on (the default; each keeps the RFC's outcome, only sooner,
//! and stays interoperable because every router still ends with the highest priority as Master):
//! 1. A Backup that receives priority 0 waits `min(Skew_Time, (256 − Priority) ms)` instead of
//!    `Skew_Time`: the order between backups is kept, the wait drops from ~0.65 s to ~0.17 s.
//! 2. A preempting Backup that hears a lower-priority Master does not wait for the Master-Down timer
//!    to run out (up to 3 × interval + skew) but takes over after that same short skew; a
//!    higher-priority Backup does so first and the others hear it and stand down.
//! 3. A Master that hears a lower-priority Master (both became Master at once) re-advertises and
//!    re-announces its addresses at once, so the last gratuitous ARP clients see is the winner's.
//!
//! `preempt_delay` (keepalived's, not in the RFC): after startup or after first hearing a
//! lower-priority Master, a preempting Backup waits this long before it preempts.

use crate::packet::Version;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    /// Configured priority, 1..=255 (255: the address owner).
    pub priority: u8,
    /// Advertisement_Interval.
    pub advert_int: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// This router's primary address on the interface: the tie-break of §6.4.3.
    pub primary: IpAddr,
    /// tandem's faster takeover (see the module docs). Off: RFC timers exactly.
    pub fast: bool,
    /// After becoming Master, announce the addresses once more after this long.
    pub reannounce_after: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A valid advertisement of our VRID (already checked by [`crate::receive`]).
    Advert {
        from: IpAddr,
        priority: u8,
        interval: Duration,
    },
    /// Time passed: fire the timers that are due.
    Tick,
    /// Tracking changed: the effective priority, and a fault (a reason) or none.
    Health {
        priority: u8,
        fault: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Log the change of state (with one sentence saying why) and run the notify commands.
    Transition { from: State, to: State, why: String },
    /// Send one advertisement with this priority.
    Send { priority: u8 },
    /// Put the virtual addresses on the interface.
    AddAddresses,
    /// Take them off.
    RemoveAddresses,
    /// Gratuitous ARP / unsolicited neighbour advertisement for every virtual address.
    Announce,
}

#[derive(Clone, Debug)]
pub struct Machine {
    p: Params,
    state: State,
    priority: u8,
    fault: Option<String>,
    master_adver_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    reannounce_at: Option<Instant>,
    /// When this Backup first heard a lower-priority Master (for preempt_delay), or startup.
    lower_since: Option<Instant>,
    started_at: Option<Instant>,
    master: Option<IpAddr>,
    /// Why the Master-Down timer is set to what it is: the sentence logged when it fires.
    down_why: DownWhy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DownWhy {
    Silence,
    Shutdown(IpAddr),
    Preempt(IpAddr, u8),
}

fn ms(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

impl Machine {
    pub fn new(p: Params) -> Machine {
        Machine {
            priority: p.priority,
            master_adver_interval: p.advert_int,
            p,
            state: State::Initialize,
            fault: None,
            adver_timer: None,
            master_down_timer: None,
            reannounce_at: None,
            lower_since: None,
            started_at: None,
            master: None,
            down_why: DownWhy::Silence,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn priority(&self) -> u8 {
        self.priority
    }
    pub fn params(&self) -> &Params {
        &self.p
    }
    /// The Master this Backup last heard, if any.
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// Skew_Time (RFC 5798 §6.1; RFC 3768 §6.1 for v2).
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u32::from(self.priority);
        match self.p.version {
            Version::V3 => self.master_adver_interval * weight / 256,
            Version::V2 => Duration::from_secs(1) * weight / 256,
        }
    }

    /// Master_Down_Interval.
    pub fn master_down_interval(&self) -> Duration {
        let mai = match self.p.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => self.p.advert_int,
        };
        mai * 3 + self.skew_time()
    }

    /// The short wait of the `fast` deviations: the skew, capped at (256 − priority) ms.
    fn short_skew(&self) -> Duration {
        let cap = Duration::from_millis(256 - u64::from(self.priority));
        if self.p.fast {
            self.skew_time().min(cap)
        } else {
            self.skew_time()
        }
    }

    /// When the host must step the machine with [`Event::Tick`] next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.adver_timer, self.master_down_timer, self.reannounce_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => self.startup(now, &mut out),
            Event::Shutdown => self.shutdown(&mut out),
            Event::Tick => self.tick(now, &mut out),
            Event::Advert {
                from,
                priority,
                interval,
            } => self.advert(now, from, priority, interval, &mut out),
            Event::Health { priority, fault } => self.health(now, priority, fault, &mut out),
        }
        out
    }

    fn go(&mut self, to: State, why: String, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        out.push(Action::Transition { from, to, why });
    }

    fn startup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            return;
        }
        self.started_at = Some(now);
        if let Some(reason) = self.fault.clone() {
            self.go(State::Fault, reason, out);
        } else if self.priority == 255 {
            self.become_master(
                now,
                "priority 255: this router owns the addresses".into(),
                out,
            );
        } else {
            self.enter_backup(now, "startup".into(), true, out);
        }
    }

    fn enter_backup(&mut self, now: Instant, why: String, starting: bool, out: &mut Vec<Action>) {
        let was_master = self.state == State::Master;
        self.adver_timer = None;
        self.reannounce_at = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.down_why = DownWhy::Silence;
        // preempt_delay counts from startup too.
        self.lower_since = if starting { Some(now) } else { None };
        if was_master {
            self.go(State::Backup, why, out);
            out.push(Action::RemoveAddresses);
        } else {
            self.go(State::Backup, why, out);
        }
    }

    fn become_master(&mut self, now: Instant, why: String, out: &mut Vec<Action>) {
        self.go(State::Master, why, out);
        out.push(Action::AddAddresses);
        out.push(Action::Send {
            priority: self.priority,
        });
        out.push(Action::Announce);
        self.adver_timer = Some(now + self.p.advert_int);
        self.master_down_timer = None;
        self.reannounce_at = self.p.reannounce_after.map(|d| now + d);
        self.lower_since = None;
        self.master = Some(self.p.primary);
    }

    fn leave(&mut self, to: State, why: String, out: &mut Vec<Action>) {
        let was_master = self.state == State::Master;
        if was_master {
            // §6.4.3: on Shutdown, send an advertisement with priority 0.
            out.push(Action::Send { priority: 0 });
        }
        self.go(to, why, out);
        if was_master {
            out.push(Action::RemoveAddresses);
        }
        self.adver_timer = None;
        self.master_down_timer = None;
        self.reannounce_at = None;
        self.lower_since = None;
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            self.leave(State::Initialize, "shutting down".into(), out);
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Master => {
                if self.adver_timer.is_some_and(|t| t <= now) {
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    self.adver_timer = Some(now + self.p.advert_int);
                }
                if self.reannounce_at.is_some_and(|t| t <= now) {
                    out.push(Action::Announce);
                    self.reannounce_at = None;
                }
            }
            State::Backup => {
                if self.master_down_timer.is_some_and(|t| t <= now) {
                    let why = match (self.down_why, self.master) {
                        (DownWhy::Shutdown(m), _) => {
                            format!("master {m} is shutting down (it sent priority 0)")
                        }
                        (DownWhy::Preempt(m, p), _) => {
                            format!("preempting master {m}, whose priority {p} is lower than ours")
                        }
                        (DownWhy::Silence, Some(m)) => format!(
                            "no advertisement from master {m} within the master-down interval ({})",
                            ms(self.master_down_interval())
                        ),
                        (DownWhy::Silence, None) => format!(
                            "no master heard within the master-down interval ({})",
                            ms(self.master_down_interval())
                        ),
                    };
                    self.become_master(now, why, out);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn advert(
        &mut self,
        now: Instant,
        from: IpAddr,
        priority: u8,
        interval: Duration,
        out: &mut Vec<Action>,
    ) {
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // §6.4.2: the Master is leaving; take over after the skew.
                    self.master_down_timer = Some(now + self.short_skew());
                    self.down_why = DownWhy::Shutdown(from);
                } else if !self.p.preempt || priority >= self.priority {
                    self.master = Some(from);
                    if self.p.version == Version::V3 {
                        self.master_adver_interval = interval;
                    }
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.down_why = DownWhy::Silence;
                    self.lower_since = None;
                } else {
                    // A lower-priority Master and we preempt.
                    self.master = Some(from);
                    let since = *self.lower_since.get_or_insert(now);
                    if now.saturating_duration_since(since) < self.p.preempt_delay {
                        // Hold back: treat it as a Master until the delay has passed.
                        self.master_down_timer = Some(now + self.master_down_interval());
                        self.down_why = DownWhy::Silence;
                    } else if self.p.fast {
                        let soon = now + self.short_skew();
                        if self.master_down_timer.is_none_or(|t| soon < t) {
                            self.master_down_timer = Some(soon);
                            self.down_why = DownWhy::Preempt(from, priority);
                        }
                    }
                    // Otherwise (RFC): discard; the Master-Down timer runs out.
                }
            }
            State::Master => {
                if priority == 0 {
                    // §6.4.3: another router gave up the VRID: assert ourselves now.
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    self.adver_timer = Some(now + self.p.advert_int);
                } else if priority > self.priority
                    || (priority == self.priority && from > self.p.primary)
                {
                    if self.p.version == Version::V3 {
                        self.master_adver_interval = interval;
                    }
                    self.master = Some(from);
                    let why = if priority > self.priority {
                        format!(
                            "{from} advertises priority {priority}, higher than ours ({})",
                            self.priority
                        )
                    } else {
                        format!(
                            "{from} advertises the same priority {priority} and a higher address than ours ({})",
                            self.p.primary
                        )
                    };
                    self.enter_backup(now, why, false, out);
                } else if self.p.fast {
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    out.push(Action::Announce);
                    self.adver_timer = Some(now + self.p.advert_int);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn health(&mut self, now: Instant, priority: u8, fault: Option<String>, out: &mut Vec<Action>) {
        let changed = priority != self.priority;
        self.priority = priority;
        match (self.fault.is_some(), fault) {
            (false, Some(reason)) => {
                self.fault = Some(reason.clone());
                if matches!(self.state, State::Master | State::Backup) {
                    self.leave(State::Fault, reason, out);
                }
            }
            (true, None) => {
                self.fault = None;
                if self.state == State::Fault {
                    self.state = State::Initialize;
                    let mut sub = Vec::new();
                    self.startup(now, &mut sub);
                    // Report the change as FAULT → BACKUP/MASTER, not via INIT.
                    for a in &mut sub {
                        if let Action::Transition { from, why, .. } = a {
                            *from = State::Fault;
                            *why = format!("tracked checks recovered ({why})");
                        }
                    }
                    out.extend(sub);
                }
            }
            (true, Some(reason)) => self.fault = Some(reason),
            (false, None) => {
                if changed && self.state == State::Master {
                    // Tell the Backups now, so a higher one can preempt without waiting.
                    out.push(Action::Send { priority });
                    self.adver_timer = Some(now + self.p.advert_int);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop, clippy::collapsible_if)]
mod tests {
    use super::*;

    fn params(priority: u8, version: Version) -> Params {
        Params {
            version,
            priority,
            advert_int: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: "10.0.0.2".parse().unwrap(),
            fast: true,
            reannounce_after: Some(Duration::from_secs(1)),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn adv(from: &str, priority: u8) -> Event {
        Event::Advert {
            from: ip(from),
            priority,
            interval: Duration::from_secs(1),
        }
    }

    fn states(actions: &[Action]) -> Vec<State> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Transition { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }

    /// Run until `until`, stepping Tick at every deadline; returns (time, action) pairs.
    fn run(m: &mut Machine, now: &mut Instant, until: Instant) -> Vec<(Duration, Action)> {
        let start = *now;
        let mut out = Vec::new();
        while let Some(d) = m.next_deadline() {
            if d > until {
                break;
            }
            *now = d;
            for a in m.step(d, Event::Tick) {
                out.push((d - start, a));
            }
        }
        *now = until;
        out
    }

    #[test]
    fn skew_and_master_down_follow_the_rfc() {
        // v3 (RFC 5798 §6.1) with a 1 s interval, priority 90: skew 166/256 s.
        let m = Machine::new(params(90, Version::V3));
        assert_eq!(m.skew_time(), Duration::from_secs(1) * 166 / 256);
        assert_eq!(
            m.master_down_interval(),
            Duration::from_secs(3) + Duration::from_secs(1) * 166 / 256
        );
        // v3 with a 0.5 s interval scales the skew too.
        let mut p = params(128, Version::V3);
        p.advert_int = Duration::from_millis(500);
        let m = Machine::new(p);
        assert_eq!(m.skew_time(), Duration::from_millis(250));
        assert_eq!(m.master_down_interval(), Duration::from_millis(1750));
        // v2 (RFC 3768 §6.1): skew in seconds regardless of the interval.
        let mut p = params(128, Version::V2);
        p.advert_int = Duration::from_secs(2);
        let m = Machine::new(p);
        assert_eq!(m.skew_time(), Duration::from_millis(500));
        assert_eq!(m.master_down_interval(), Duration::from_millis(6500));
    }

    #[test]
    fn backup_becomes_master_after_master_down_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, Version::V3));
        assert_eq!(states(&m.step(t0, Event::Startup)), vec![State::Backup]);
        let mdi = m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(t0 + mdi));
        let mut now = t0;
        let acts = run(&mut m, &mut now, t0 + mdi - Duration::from_millis(1));
        assert!(acts.is_empty());
        let acts = m.step(t0 + mdi, Event::Tick);
        assert_eq!(
            acts[1..],
            [
                Action::AddAddresses,
                Action::Send { priority: 100 },
                Action::Announce
            ]
        );
        assert_eq!(m.state(), State::Master);
        // Then one advert per interval, and one re-announcement after 1 s.
        let mut now = t0 + mdi;
        let acts = run(&mut m, &mut now, t0 + mdi + Duration::from_millis(3500));
        let sends = acts
            .iter()
            .filter(|(_, a)| matches!(a, Action::Send { priority: 100 }))
            .count();
        let announces = acts.iter().filter(|(_, a)| *a == Action::Announce).count();
        assert_eq!((sends, announces), (3, 1));
    }

    #[test]
    fn owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255, Version::V2));
        let acts = m.step(t0, Event::Startup);
        assert_eq!(states(&acts), vec![State::Master]);
        assert!(acts.contains(&Action::Send { priority: 255 }));
    }

    /// The table of §6.4.2 / §6.4.3: (our priority, preempt, state, advert from, advert priority)
    /// → the state after, and whether a Send happened at once.
    #[test]
    fn advert_decision_table() {
        struct Case {
            name: &'static str,
            ours: u8,
            preempt: bool,
            master: bool,
            from: &'static str,
            theirs: u8,
            state_after: State,
            sends: bool,
        }
        let cases = [
            Case {
                name: "backup hears higher",
                ours: 90,
                preempt: true,
                master: false,
                from: "10.0.0.1",
                theirs: 100,
                state_after: State::Backup,
                sends: false,
            },
            Case {
                name: "backup hears lower, no preempt",
                ours: 90,
                preempt: false,
                master: false,
                from: "10.0.0.1",
                theirs: 80,
                state_after: State::Backup,
                sends: false,
            },
            Case {
                name: "master hears higher",
                ours: 90,
                preempt: true,
                master: true,
                from: "10.0.0.1",
                theirs: 100,
                state_after: State::Backup,
                sends: false,
            },
            Case {
                name: "master hears equal from higher address",
                ours: 90,
                preempt: true,
                master: true,
                from: "10.0.0.3",
                theirs: 90,
                state_after: State::Backup,
                sends: false,
            },
            Case {
                name: "master hears equal from lower address",
                ours: 90,
                preempt: true,
                master: true,
                from: "10.0.0.1",
                theirs: 90,
                state_after: State::Master,
                sends: true,
            },
            Case {
                name: "master hears lower (re-asserts)",
                ours: 90,
                preempt: true,
                master: true,
                from: "10.0.0.1",
                theirs: 80,
                state_after: State::Master,
                sends: true,
            },
            Case {
                name: "master hears priority 0",
                ours: 90,
                preempt: true,
                master: true,
                from: "10.0.0.1",
                theirs: 0,
                state_after: State::Master,
                sends: true,
            },
        ];
        for c in cases {
            let t0 = Instant::now();
            let mut p = params(c.ours, Version::V3);
            p.preempt = c.preempt;
            let mut m = Machine::new(p);
            m.step(t0, Event::Startup);
            let mut now = t0;
            if c.master {
                run(&mut m, &mut now, t0 + Duration::from_secs(4));
                assert_eq!(m.state(), State::Master, "{}", c.name);
            }
            let acts = m.step(now, adv(c.from, c.theirs));
            assert_eq!(m.state(), c.state_after, "{}", c.name);
            assert_eq!(
                acts.iter().any(|a| matches!(a, Action::Send { .. })),
                c.sends,
                "{}: {acts:?}",
                c.name
            );
            if c.master && c.state_after == State::Backup {
                assert!(acts.contains(&Action::RemoveAddresses), "{}", c.name);
            }
        }
    }

    #[test]
    fn adverts_from_a_master_keep_a_backup_down() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(90, Version::V3));
        m.step(t0, Event::Startup);
        for i in 1..=20 {
            let now = t0 + Duration::from_secs(i);
            assert!(m.step(now, adv("10.0.0.1", 100)).is_empty());
            assert!(m.step(now, Event::Tick).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master(), Some(ip("10.0.0.1")));
    }

    #[test]
    fn priority_zero_means_takeover_after_skew() {
        for (fast, expect) in [
            (true, Duration::from_millis(166)),
            (false, Duration::from_secs(1) * 166 / 256),
        ] {
            let t0 = Instant::now();
            let mut p = params(90, Version::V3);
            p.fast = fast;
            let mut m = Machine::new(p);
            m.step(t0, Event::Startup);
            m.step(t0, adv("10.0.0.1", 100));
            let t1 = t0 + Duration::from_millis(500);
            m.step(t1, adv("10.0.0.1", 0));
            assert_eq!(m.next_deadline(), Some(t1 + expect), "fast={fast}");
        }
    }

    #[test]
    fn shutdown_of_master_sends_priority_zero_and_removes() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255, Version::V3));
        m.step(t0, Event::Startup);
        let acts = m.step(t0, Event::Shutdown);
        assert_eq!(acts[0], Action::Send { priority: 0 });
        assert_eq!(states(&acts), vec![State::Initialize]);
        assert!(acts.contains(&Action::RemoveAddresses));
        assert_eq!(m.next_deadline(), None);
        // A backup leaves quietly.
        let mut b = Machine::new(params(90, Version::V3));
        b.step(t0, Event::Startup);
        let acts = b.step(t0, Event::Shutdown);
        assert_eq!(states(&acts), vec![State::Initialize]);
        assert!(!acts.iter().any(|a| matches!(a, Action::Send { .. })));
    }

    #[test]
    fn preemption_of_a_lower_master() {
        // fast: takes over after the short skew; RFC: after the master-down interval since the
        // last accepted advert (lower adverts are discarded).
        for (fast, after) in [
            (true, Duration::from_millis(156)),
            (
                false,
                Duration::from_secs(3) + Duration::from_secs(1) * 156 / 256,
            ),
        ] {
            let t0 = Instant::now();
            let mut p = params(100, Version::V3);
            p.fast = fast;
            let mut m = Machine::new(p);
            m.step(t0, Event::Startup);
            m.step(t0, adv("10.0.0.1", 90));
            // Further lower adverts do not push the takeover back.
            m.step(t0 + Duration::from_millis(100), adv("10.0.0.1", 90));
            assert_eq!(m.state(), State::Backup);
            let expect = if fast {
                t0 + after
            } else {
                t0 + m.master_down_interval()
            };
            assert_eq!(m.next_deadline(), Some(expect), "fast={fast}");
            let d = m.next_deadline().unwrap();
            let acts = m.step(d, Event::Tick);
            assert_eq!(states(&acts), vec![State::Master], "fast={fast}");
        }
    }

    #[test]
    fn preempt_delay_holds_back_preemption() {
        let t0 = Instant::now();
        let mut p = params(100, Version::V3);
        p.preempt_delay = Duration::from_secs(5);
        let mut m = Machine::new(p);
        m.step(t0, Event::Startup);
        let mut became = None;
        for i in 0..100 {
            let now = t0 + Duration::from_millis(200 * i);
            if m.state() == State::Backup {
                m.step(now, adv("10.0.0.1", 90));
            }
            if !states(&m.step(now, Event::Tick)).is_empty() {
                became = Some(now - t0);
                break;
            }
            if let Some(d) = m.next_deadline() {
                if d < now + Duration::from_millis(200) {
                    if !states(&m.step(d, Event::Tick)).is_empty() {
                        became = Some(d - t0);
                        break;
                    }
                }
            }
        }
        let became = became.expect("preempted eventually");
        assert!(
            became >= Duration::from_secs(5) && became < Duration::from_millis(5400),
            "{became:?}"
        );
    }

    #[test]
    fn no_preempt_keeps_a_lower_master() {
        let t0 = Instant::now();
        let mut p = params(100, Version::V3);
        p.preempt = false;
        let mut m = Machine::new(p);
        m.step(t0, Event::Startup);
        for i in 0..30 {
            let now = t0 + Duration::from_millis(500 * i);
            m.step(now, adv("10.0.0.1", 50));
            assert!(m.step(now, Event::Tick).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn backup_learns_master_adver_interval_in_v3_only() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(90, Version::V3));
        m.step(t0, Event::Startup);
        m.step(
            t0,
            Event::Advert {
                from: ip("10.0.0.1"),
                priority: 100,
                interval: Duration::from_millis(200),
            },
        );
        assert_eq!(
            m.master_down_interval(),
            Duration::from_millis(600) + Duration::from_millis(200) * 166 / 256
        );
        let mut m = Machine::new(params(90, Version::V2));
        m.step(t0, Event::Startup);
        m.step(
            t0,
            Event::Advert {
                from: ip("10.0.0.1"),
                priority: 100,
                interval: Duration::from_secs(2),
            },
        );
        assert_eq!(
            m.master_down_interval(),
            Duration::from_secs(3) + Duration::from_secs(1) * 166 / 256
        );
    }

    #[test]
    fn fault_and_recovery() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, Version::V3));
        m.step(t0, Event::Startup);
        let mut now = t0;
        run(&mut m, &mut now, t0 + Duration::from_secs(4));
        assert_eq!(m.state(), State::Master);
        let acts = m.step(
            now,
            Event::Health {
                priority: 100,
                fault: Some("track script haproxy failed".into()),
            },
        );
        assert_eq!(acts[0], Action::Send { priority: 0 });
        assert_eq!(states(&acts), vec![State::Fault]);
        assert!(acts.contains(&Action::RemoveAddresses));
        assert_eq!(m.next_deadline(), None);
        // Adverts and ticks do nothing in Fault.
        assert!(m.step(now, adv("10.0.0.1", 90)).is_empty());
        let acts = m.step(
            now,
            Event::Health {
                priority: 100,
                fault: None,
            },
        );
        assert_eq!(
            acts,
            vec![Action::Transition {
                from: State::Fault,
                to: State::Backup,
                why: "tracked checks recovered (startup)".into()
            }]
        );
    }

    #[test]
    fn lowered_priority_is_advertised_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, Version::V3));
        m.step(t0, Event::Startup);
        let mut now = t0;
        run(&mut m, &mut now, t0 + Duration::from_secs(4));
        let acts = m.step(
            now,
            Event::Health {
                priority: 70,
                fault: None,
            },
        );
        assert_eq!(acts, vec![Action::Send { priority: 70 }]);
        // The backup at 90 then preempts after its short skew.
        let mut b = Machine::new(params(90, Version::V3));
        b.step(t0, Event::Startup);
        b.step(now, adv("10.0.0.9", 100));
        b.step(now, adv("10.0.0.9", 70));
        assert_eq!(b.next_deadline(), Some(now + Duration::from_millis(166)));
    }

    /// Three routers on a simulated wire with no loss: whatever the start order, exactly one
    /// Master at the end and it is the highest priority.
    #[test]
    fn three_routers_converge_on_the_highest() {
        for fast in [true, false] {
            let t0 = Instant::now();
            let prios = [80u8, 100, 90];
            let mut ms: Vec<Machine> = prios
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let mut pp = params(p, Version::V3);
                    pp.primary = ip(&format!("10.0.0.{}", i + 1));
                    pp.fast = fast;
                    Machine::new(pp)
                })
                .collect();
            for (i, m) in ms.iter_mut().enumerate() {
                m.step(t0 + Duration::from_millis(300 * i as u64), Event::Startup);
            }
            let mut now = t0;
            let end = t0 + Duration::from_secs(20);
            let mut wire: Vec<(usize, u8)> = Vec::new();
            while now < end {
                let next = ms.iter().filter_map(|m| m.next_deadline()).min().unwrap();
                now = next;
                for i in 0..ms.len() {
                    let acts = ms[i].step(now, Event::Tick);
                    for a in acts {
                        if let Action::Send { priority } = a {
                            wire.push((i, priority));
                        }
                    }
                }
                while let Some((from, priority)) = wire.pop() {
                    let src = ms[from].params().primary;
                    for j in 0..ms.len() {
                        if j != from {
                            for a in ms[j].step(
                                now,
                                Event::Advert {
                                    from: src,
                                    priority,
                                    interval: Duration::from_secs(1),
                                },
                            ) {
                                if let Action::Send { priority } = a {
                                    wire.push((j, priority));
                                }
                            }
                        }
                    }
                }
            }
            let masters: Vec<u8> = ms
                .iter()
                .filter(|m| m.state() == State::Master)
                .map(|m| m.priority())
                .collect();
            assert_eq!(masters, vec![100], "fast={fast}");
        }
    }
}
