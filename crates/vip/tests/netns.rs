//! tandem vip in network namespaces: three routers h1..h3 (priorities 100/90/80), a client h4.
//! Skipped (with a message) when not root or without `ip netns`; with CI=true they must run.
//! Every wait is a poll with a deadline; the deadlines are generous (2 shared cores), the
//! takeover bounds are asserted separately and printed.

mod common;
use common::*;
use std::time::{Duration, Instant};

const CLIENT: usize = 4;
/// Scheduling noise allowed on top of a protocol bound (2 cores shared with cargo builds).
const SLACK: Duration = Duration::from_millis(1000);

/// RFC 5798 §6.1 with advert_int 1 s: 3 × 1 s + (256 − priority)/256 s.
fn master_down(priority: u32) -> Duration {
    Duration::from_secs(3) + Duration::from_secs(1) * (256 - priority) / 256
}

const T: Duration = Duration::from_secs(12);

#[test]
fn tandem_three_routers_failover_preemption_and_clients() {
    if !can_run("tandem_three_routers_failover_preemption_and_clients", false) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=3 {
        lab.serve_name(i);
    }
    let prios = [100u8, 90, 80];
    let mut routers: Vec<Router> = (1..=3)
        .map(|i| start_tandem(&mut lab, i, &tandem_config(51, prios[i - 1], 2, Some("fzsecret"), "")))
        .collect();

    // The VIP lands on the highest priority, and only there.
    lab.expect_holders(&[1], T, "cold start");
    lab.expect_answer(CLIENT, "h1", T, "client before failover");

    // SIGKILL of the Master: h2 takes over within the master-down interval. The dead router's
    // host keeps the address (a crash leaves it), so the client only moves thanks to h2's
    // gratuitous ARP.
    let t0 = Instant::now();
    crash(&mut lab, &routers[0]);
    lab.wait_until(T, || lab.holders(VIP).contains(&2))
        .unwrap_or_else(|| panic!("no takeover after SIGKILL\n{}", lab.all_logs()));
    let took = t0.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after SIGKILL");
    let answered = t0.elapsed();
    eprintln!("SIGKILL: VIP on h2 after {took:?}, client answered by h2 after {answered:?}");
    assert!(took <= master_down(90) + SLACK, "takeover took {took:?}, bound {:?}", master_down(90));
    assert!(!lab.holders(VIP).contains(&3), "h3 must stay Backup");

    // The old Master returns: it drops its stale copy, then preempts h2.
    let t1 = Instant::now();
    routers[0] = start_tandem(&mut lab, 1, &tandem_config(51, 100, 2, Some("fzsecret"), ""));
    lab.expect_holders(&[1], T, "preemption by the returning h1");
    eprintln!("preemption: h1 Master again {:?} after its restart", t1.elapsed());
    lab.expect_answer(CLIENT, "h1", Duration::from_secs(3), "client after preemption");

    // Graceful stop: priority 0, h2 takes over at once and h1 gives the address up.
    let t2 = Instant::now();
    stop(&mut lab, &routers[0]);
    lab.expect_holders(&[2], T, "after SIGTERM of h1");
    let took = t2.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after SIGTERM");
    eprintln!("SIGTERM: VIP on h2 alone after {took:?}, client after {:?}", t2.elapsed());
    assert!(took < Duration::from_millis(200) + SLACK, "graceful takeover took {took:?}");
    assert!(lab.wait_exit(routers[0].pids[0], Duration::from_secs(5)), "tandem exits on SIGTERM");
    let log = lab.log(1, "tandem.log");
    assert!(log.contains("MASTER -> INIT (priority 100): shutting down"), "{log}");

    // Stats are printed on SIGUSR1.
    lab.signal(routers[1].pids[0], libc::SIGUSR1);
    lab.wait_until(Duration::from_secs(5), || lab.log(2, "tandem.log").contains("stats: received"))
        .expect("stats on SIGUSR1");
    drop(routers);
}

#[test]
fn failing_track_script_moves_the_vip_and_back() {
    if !can_run("failing_track_script_moves_the_vip_and_back", false) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=2 {
        lab.serve_name(i);
    }
    let flag = lab.write(1, "healthy", "");
    let track = format!(
        "  track_script:\n    name: haproxy\n    script: \"test -e {}\"\n    interval: 0.5\n    fall: 2\n    rise: 1\n",
        flag.display()
    );
    start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, &track));
    start_tandem(&mut lab, 2, &tandem_config(51, 90, 3, None, ""));
    lab.expect_holders(&[1], T, "cold start");
    lab.expect_answer(CLIENT, "h1", T, "client before");

    let t0 = Instant::now();
    std::fs::remove_file(&flag).unwrap();
    lab.expect_holders(&[2], T, "after the track script failed");
    let took = t0.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after the check failed");
    eprintln!("track script: VIP on h2 alone {took:?} after the check began to fail");
    // fall × interval, + up to one interval of phase, + the short skew.
    let bound = Duration::from_millis(2 * 500 + 500 + 200);
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
    let log = lab.log(1, "tandem.log");
    assert!(log.contains("-> FAULT"), "{log}");

    std::fs::write(&flag, "").unwrap();
    lab.expect_holders(&[1], T, "after the check recovered");
    lab.expect_answer(CLIENT, "h1", Duration::from_secs(3), "client after recovery");
}

/// keepalived (priority 100) and tandem (90) in one VRRPv2 group with the seed's `auth_type PASS`
/// and a 10-character password that both cut to 8: keepalived is Master; tandem takes over when
/// keepalived crashes, and gives the VIP back when it returns.
#[test]
fn keepalived_v2_master_tandem_backup() {
    if !can_run("keepalived_v2_master_tandem_backup", true) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=2 {
        lab.serve_name(i);
    }
    let pass = "fzsecret99";
    let ka = keepalived_config("r1", 51, 100, 2, Some(pass), VIP);
    let k = start_keepalived(&mut lab, 1, &ka);
    let t = start_tandem(&mut lab, 2, &tandem_config(51, 90, 2, Some(pass), ""));
    lab.expect_holders(&[1], T, "keepalived (100) is Master");
    lab.expect_answer(CLIENT, "h1", T, "client before");
    let log = lab.log(2, "tandem.log");
    assert!(log.contains("auth_pass is 10 characters"), "warning about keepalived's cut: {log}");
    assert!(!log.contains("dropped VRRP packet"), "tandem accepts keepalived's adverts: {log}");

    let t0 = Instant::now();
    crash(&mut lab, &k);
    lab.wait_until(T, || lab.holders(VIP).contains(&2))
        .unwrap_or_else(|| panic!("tandem did not take over\n{}", lab.all_logs()));
    let took = t0.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after keepalived crashed");
    eprintln!("keepalived SIGKILL: tandem holds the VIP after {took:?}");
    assert!(took <= master_down(90) + SLACK, "took {took:?}");

    // A crashed keepalived leaves its address behind: take it off (host powered off and back).
    lab.del_addr(1, VIP);
    let _k = start_keepalived(&mut lab, 1, &ka);
    lab.expect_holders(&[1], Duration::from_secs(15), "keepalived preempts tandem");
    lab.expect_answer(CLIENT, "h1", Duration::from_secs(3), "client after keepalived returned");
    let log = lab.log(2, "tandem.log");
    assert!(log.contains("MASTER -> BACKUP"), "{log}");
    drop(t);
}

/// tandem (priority 100) and keepalived (90) in one VRRPv3 group: tandem is Master; keepalived
/// takes over on tandem's crash; tandem preempts it on return; and on tandem's clean stop
/// keepalived takes over at once.
#[test]
fn tandem_v3_master_keepalived_backup() {
    if !can_run("tandem_v3_master_keepalived_backup", true) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=2 {
        lab.serve_name(i);
    }
    let mut t = start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, ""));
    let _k = start_keepalived(&mut lab, 2, &keepalived_config("r2", 51, 90, 3, None, VIP));
    lab.expect_holders(&[1], T, "tandem (100) is Master");
    lab.expect_answer(CLIENT, "h1", T, "client before");

    let t0 = Instant::now();
    crash(&mut lab, &t);
    lab.wait_until(T, || lab.holders(VIP).contains(&2))
        .unwrap_or_else(|| panic!("keepalived did not take over\n{}", lab.all_logs()));
    let took = t0.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after tandem crashed");
    eprintln!("tandem SIGKILL: keepalived holds the VIP after {took:?}");

    t = start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, ""));
    lab.expect_holders(&[1], T, "tandem preempts keepalived");
    lab.expect_answer(CLIENT, "h1", Duration::from_secs(3), "client after tandem returned");
    let ka = lab.log(2, "keepalived.log");
    assert!(ka.contains("BACKUP"), "{ka}");

    let t1 = Instant::now();
    stop(&mut lab, &t);
    lab.expect_holders(&[2], T, "keepalived after tandem's clean stop");
    eprintln!("tandem SIGTERM: keepalived alone holds the VIP after {:?}", t1.elapsed());
}

/// A keepalived with another auth_pass and one with another virtual_router_id: tandem reports
/// both in its log and does not join either group (it becomes Master of its own).
#[test]
fn mismatched_auth_pass_and_vrid_are_reported() {
    if !can_run("mismatched_auth_pass_and_vrid_are_reported", true) {
        return;
    }
    let mut lab = Lab::new(3);
    start_keepalived(&mut lab, 1, &keepalived_config("r1", 51, 100, 2, Some("otherpw"), VIP));
    start_tandem(&mut lab, 2, &tandem_config(51, 90, 2, Some("fzsecret"), ""));
    let other_vip = std::net::Ipv4Addr::new(10, 99, 0, 101);
    start_keepalived(&mut lab, 3, &keepalived_config("r3", 52, 100, 2, Some("fzsecret"), other_vip));
    let ok = lab.wait_until(T, || {
        let log = lab.log(2, "tandem.log");
        log.contains("from 10.99.0.11: wrong auth_pass")
            && log.contains("from 10.99.0.13: advert for virtual_router_id 52")
    });
    assert!(ok.is_some(), "mismatches not reported\n{}", lab.all_logs());
    // Not joined: tandem does not defer to the priority-100 router with the wrong password.
    lab.wait_until(T, || lab.holders(VIP).contains(&2))
        .unwrap_or_else(|| panic!("tandem should be Master of its own group\n{}", lab.all_logs()));
    let log = lab.log(2, "tandem.log");
    assert!(!log.contains("otherpw") && !log.contains("fzsecret"), "no password in the log");
}
