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
    if !can_run(
        "tandem_three_routers_failover_preemption_and_clients",
        false,
    ) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=3 {
        lab.serve_name(i);
    }
    let prios = [100u8, 90, 80];
    let mut routers: Vec<Router> = (1..=3)
        .map(|i| {
            start_tandem(
                &mut lab,
                i,
                &tandem_config(51, prios[i - 1], 2, Some("fzsecret"), ""),
            )
        })
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
    assert!(
        took <= master_down(90) + SLACK,
        "takeover took {took:?}, bound {:?}",
        master_down(90)
    );
    assert!(!lab.holders(VIP).contains(&3), "h3 must stay Backup");

    // The old Master returns: it drops its stale copy, then preempts h2.
    let t1 = Instant::now();
    routers[0] = start_tandem(
        &mut lab,
        1,
        &tandem_config(51, 100, 2, Some("fzsecret"), ""),
    );
    lab.expect_holders(&[1], T, "preemption by the returning h1");
    eprintln!(
        "preemption: h1 Master again {:?} after its restart",
        t1.elapsed()
    );
    lab.expect_answer(
        CLIENT,
        "h1",
        Duration::from_secs(3),
        "client after preemption",
    );

    // Graceful stop: priority 0, h2 takes over at once and h1 gives the address up.
    let t2 = Instant::now();
    stop(&mut lab, &routers[0]);
    lab.expect_holders(&[2], T, "after SIGTERM of h1");
    let took = t2.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after SIGTERM");
    eprintln!(
        "SIGTERM: VIP on h2 alone after {took:?}, client after {:?}",
        t2.elapsed()
    );
    assert!(
        took < Duration::from_millis(200) + SLACK,
        "graceful takeover took {took:?}"
    );
    assert!(
        lab.wait_exit(routers[0].pids[0], Duration::from_secs(5)),
        "tandem exits on SIGTERM"
    );
    let log = lab.log(1, "tandem.log");
    assert!(
        log.contains("MASTER -> INIT (priority 100): shutting down"),
        "{log}"
    );

    // Stats are printed on SIGUSR1.
    lab.signal(routers[1].pids[0], libc::SIGUSR1);
    lab.wait_until(Duration::from_secs(5), || {
        lab.log(2, "tandem.log").contains("stats: received")
    })
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
    lab.expect_answer(
        CLIENT,
        "h2",
        Duration::from_secs(3),
        "client after the check failed",
    );
    eprintln!("track script: VIP on h2 alone {took:?} after the check began to fail");
    // fall × interval, + up to one interval of phase, + the short skew.
    let bound = Duration::from_millis(2 * 500 + 500 + 200);
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
    let log = lab.log(1, "tandem.log");
    assert!(log.contains("-> FAULT"), "{log}");

    std::fs::write(&flag, "").unwrap();
    lab.expect_holders(&[1], T, "after the check recovered");
    lab.expect_answer(
        CLIENT,
        "h1",
        Duration::from_secs(3),
        "client after recovery",
    );
}

/// A pulled cable: the Master sees its interface lose carrier, goes to FAULT and gives the address
/// up (so no duplicate is left when the cable returns); the Backup takes over; on return the
/// Master leaves FAULT and preempts.
#[test]
fn cable_pull_faults_the_master() {
    if !can_run("cable_pull_faults_the_master", false) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=2 {
        lab.serve_name(i);
    }
    start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, ""));
    start_tandem(&mut lab, 2, &tandem_config(51, 90, 3, None, ""));
    lab.expect_holders(&[1], T, "cold start");
    let t0 = Instant::now();
    lab.cable(1, false);
    lab.expect_holders(&[2], T, "after the cable pull");
    eprintln!("cable pull: VIP on h2 alone after {:?}", t0.elapsed());
    lab.expect_answer(
        CLIENT,
        "h2",
        Duration::from_secs(3),
        "client after the cable pull",
    );
    assert!(
        lab.log(1, "tandem.log").contains("MASTER -> FAULT"),
        "{}",
        lab.log(1, "tandem.log")
    );
    lab.cable(1, true);
    lab.expect_holders(&[1], T, "after the cable returned");
    lab.expect_answer(
        CLIENT,
        "h1",
        Duration::from_secs(3),
        "client after the cable returned",
    );
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
    assert!(
        log.contains("auth_pass is 10 characters"),
        "warning about keepalived's cut: {log}"
    );
    assert!(
        !log.contains("dropped VRRP packet"),
        "tandem accepts keepalived's adverts: {log}"
    );

    let t0 = Instant::now();
    crash(&mut lab, &k);
    lab.wait_until(T, || lab.holders(VIP).contains(&2))
        .unwrap_or_else(|| panic!("tandem did not take over\n{}", lab.all_logs()));
    let took = t0.elapsed();
    lab.expect_answer(
        CLIENT,
        "h2",
        Duration::from_secs(3),
        "client after keepalived crashed",
    );
    eprintln!("keepalived SIGKILL: tandem holds the VIP after {took:?}");
    assert!(took <= master_down(90) + SLACK, "took {took:?}");

    // A crashed keepalived leaves its address behind: take it off (host powered off and back).
    lab.del_addr(1, VIP);
    let _k = start_keepalived(&mut lab, 1, &ka);
    lab.expect_holders(&[1], Duration::from_secs(15), "keepalived preempts tandem");
    lab.expect_answer(
        CLIENT,
        "h1",
        Duration::from_secs(3),
        "client after keepalived returned",
    );
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
    lab.expect_answer(
        CLIENT,
        "h2",
        Duration::from_secs(3),
        "client after tandem crashed",
    );
    eprintln!("tandem SIGKILL: keepalived holds the VIP after {took:?}");

    t = start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, ""));
    lab.expect_holders(&[1], T, "tandem preempts keepalived");
    lab.expect_answer(
        CLIENT,
        "h1",
        Duration::from_secs(3),
        "client after tandem returned",
    );
    let ka = lab.log(2, "keepalived.log");
    assert!(ka.contains("BACKUP"), "{ka}");

    let t1 = Instant::now();
    stop(&mut lab, &t);
    lab.expect_holders(&[2], T, "keepalived after tandem's clean stop");
    eprintln!(
        "tandem SIGTERM: keepalived alone holds the VIP after {:?}",
        t1.elapsed()
    );
}

/// A keepalived with another auth_pass and one with another virtual_router_id: tandem reports
/// both in its log and does not join either group (it becomes Master of its own). Then malformed
/// packets from a fourth host: each is dropped and counted, and tandem carries on.
#[test]
fn mismatched_and_malformed_packets_are_dropped_counted_and_reported() {
    let name = "mismatched_and_malformed_packets_are_dropped_counted_and_reported";
    if !can_run(name, true) {
        return;
    }
    let mut lab = Lab::new(4);
    start_keepalived(
        &mut lab,
        1,
        &keepalived_config("r1", 51, 100, 2, Some("otherpw"), VIP),
    );
    let t = start_tandem(&mut lab, 2, &tandem_config(51, 90, 2, Some("fzsecret"), ""));
    let other_vip = std::net::Ipv4Addr::new(10, 99, 0, 101);
    start_keepalived(
        &mut lab,
        3,
        &keepalived_config("r3", 52, 100, 2, Some("fzsecret"), other_vip),
    );
    let ok = lab.wait_until(T, || {
        let log = lab.log(2, "tandem.log");
        log.contains("from 10.99.0.11: wrong auth_pass")
            && log.contains("from 10.99.0.13: advert for virtual_router_id 52")
    });
    assert!(ok.is_some(), "mismatches not reported\n{}", lab.all_logs());
    // Not joined: tandem does not defer to the priority-100 router with the wrong password.
    lab.wait_until(T, || lab.holders(VIP).contains(&2))
        .unwrap_or_else(|| {
            panic!(
                "tandem should be Master of its own group\n{}",
                lab.all_logs()
            )
        });
    let log = lab.log(2, "tandem.log");
    assert!(
        !log.contains("otherpw") && !log.contains("fzsecret"),
        "no password in the log"
    );

    // Malformed packets, sent from h4 straight to tandem's address.
    use tandem_vip::packet::{encode, ipv4_datagram, Advert, Auth, Version};
    let src = lab.ip(4);
    let dst = lab.ip(2);
    let good = Advert {
        version: Version::V2,
        vrid: 51,
        priority: 200,
        interval_cs: 100,
        addresses: vec![VIP.into()],
        auth: Auth::simple("fzsecret"),
    };
    let msg = encode(&good, src.into(), dst.into()).unwrap();
    let mut ttl64 = ipv4_datagram(src, dst, &msg);
    ttl64[8] = 64;
    let mut bad_sum = msg.clone();
    bad_sum[6] ^= 0x55;
    let mut v4 = msg.clone();
    v4[0] = 0x41;
    let mut long = msg.clone();
    long.extend_from_slice(&[0; 4]);
    let packets: Vec<Vec<u8>> = vec![
        ttl64,
        ipv4_datagram(src, dst, &bad_sum),
        ipv4_datagram(src, dst, &msg[..10]),
        ipv4_datagram(src, dst, &long),
        ipv4_datagram(src, dst, &v4),
        ipv4_datagram(src, dst, &[0xa5; 1400]),
    ];
    in_ns(&lab.ns(4), move || {
        // SAFETY: a raw socket in this thread's namespace, closed below.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from(dst).to_be();
            for p in &packets {
                let n = libc::sendto(
                    fd,
                    p.as_ptr() as *const libc::c_void,
                    p.len(),
                    0,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                assert_eq!(n as usize, p.len(), "{}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    })
    .join()
    .unwrap();
    let want = [
        "bad_ttl=1",
        "bad_checksum=1",
        "truncated=1",
        "oversized=1",
        "bad_version=",
    ];
    let ok = lab.wait_until(T, || {
        lab.signal(t.pids[0], libc::SIGUSR1);
        let log = lab.log(2, "tandem.log");
        log.lines()
            .rev()
            .find(|l| l.contains("stats: received"))
            .is_some_and(|l| want.iter().all(|w| l.contains(w)))
    });
    assert!(
        ok.is_some(),
        "drops not counted\n{}",
        lab.log(2, "tandem.log")
    );
    // Still running, still Master: the priority-200 advert with TTL 64 was not obeyed.
    assert!(lab.holders(VIP).contains(&2));
    let log = lab.log(2, "tandem.log");
    assert!(
        log.contains("dropped VRRP packet from 10.99.0.14: TTL 64"),
        "{log}"
    );
}

/// VRRPv3 over IPv6: adverts from the link-local address to ff02::12, the VIP moves with an
/// unsolicited neighbour advertisement (the crashed Master's host keeps its copy of the address).
#[test]
fn tandem_v3_ipv6() {
    if !can_run("tandem_v3_ipv6", false) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=4 {
        lab.add_v6(i);
    }
    for i in 1..=2 {
        lab.serve_name(i);
    }
    let cfg = |p: u8| {
        format!(
            "vip:\n  interface: eth0\n  virtual_router_id: 61\n  priority: {p}\n  version: 3\n  advert_int: 1\n  addresses: ['{VIP6}/64']\n"
        )
    };
    let r1 = start_tandem(&mut lab, 1, &cfg(100));
    start_tandem(&mut lab, 2, &cfg(90));
    let at = std::net::SocketAddr::from((VIP6, PORT));
    match lab.wait_until(T, || lab.holders(VIP6) == [1]) {
        Some(_) => {}
        None => panic!("cold start: {:?}\n{}", lab.holders(VIP6), lab.all_logs()),
    }
    lab.wait_until(T, || {
        lab.ask_at(CLIENT, at, Duration::from_millis(200))
            .as_deref()
            == Some("h1")
    })
    .unwrap_or_else(|| panic!("client before\n{}", lab.all_logs()));

    let t0 = Instant::now();
    crash(&mut lab, &r1);
    lab.wait_until(T, || lab.holders(VIP6).contains(&2))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.all_logs()));
    let took = t0.elapsed();
    lab.wait_until(Duration::from_secs(3), || {
        lab.ask_at(CLIENT, at, Duration::from_millis(200))
            .as_deref()
            == Some("h2")
    })
    .unwrap_or_else(|| {
        panic!(
            "client did not follow the neighbour advertisement\n{}",
            lab.all_logs()
        )
    });
    eprintln!(
        "IPv6 SIGKILL: VIP on h2 after {took:?}, client after {:?}",
        t0.elapsed()
    );
    assert!(took <= master_down(90) + SLACK, "took {took:?}");
}

/// keepalived and tandem in one VRRPv3 IPv6 group: keepalived (100) is Master, tandem (90) takes
/// over when it crashes.
#[test]
fn keepalived_v3_ipv6_interop() {
    if !can_run("keepalived_v3_ipv6_interop", true) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=4 {
        lab.add_v6(i);
    }
    for i in 1..=2 {
        lab.serve_name(i);
    }
    let ka = keepalived_config("r1", 61, 100, 3, None, VIP)
        .replace(&format!("{VIP}/24"), &format!("{VIP6}/64"));
    let k = start_keepalived(&mut lab, 1, &ka);
    start_tandem(
        &mut lab,
        2,
        &format!("vip:\n  interface: eth0\n  virtual_router_id: 61\n  priority: 90\n  version: 3\n  addresses: ['{VIP6}/64']\n"),
    );
    let at = std::net::SocketAddr::from((VIP6, PORT));
    lab.wait_until(T, || lab.holders(VIP6) == [1])
        .unwrap_or_else(|| {
            panic!(
                "keepalived Master: {:?}\n{}",
                lab.holders(VIP6),
                lab.all_logs()
            )
        });
    lab.wait_until(T, || {
        lab.ask_at(CLIENT, at, Duration::from_millis(200))
            .as_deref()
            == Some("h1")
    })
    .unwrap_or_else(|| panic!("client before\n{}", lab.all_logs()));
    let log = lab.log(2, "tandem.log");
    assert!(!log.contains("dropped VRRP packet"), "{log}");
    let t0 = Instant::now();
    crash(&mut lab, &k);
    lab.wait_until(T, || lab.holders(VIP6).contains(&2))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.all_logs()));
    lab.wait_until(Duration::from_secs(3), || {
        lab.ask_at(CLIENT, at, Duration::from_millis(200))
            .as_deref()
            == Some("h2")
    })
    .unwrap_or_else(|| panic!("client after\n{}", lab.all_logs()));
    eprintln!(
        "keepalived IPv6 SIGKILL: tandem holds the VIP after {:?}",
        t0.elapsed()
    );
}

/// `track_router`: each router polls its own (fake) router status endpoint on 127.0.0.1:8008
/// inside its namespace. With weight 0, a 503 puts the Master in FAULT and the VIP moves within
/// fall × interval + the short skew; back after rise × interval. With weight -50 a refused
/// connection (the router is gone) lowers the priority below the Backup's, which preempts.
#[test]
fn router_readiness_moves_the_vip_and_back() {
    if !can_run("router_readiness_moves_the_vip_and_back", false) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 1..=2 {
        lab.serve_name(i);
    }
    let ready1 = lab.serve_ready(1, 8008);
    let _ready2 = lab.serve_ready(2, 8008);
    let (interval_ms, fall, rise) = (500u64, 2u64, 2u64);
    let track = |weight: i32| {
        format!(
            "  track_router: {{url: 'http://127.0.0.1:8008/ready', interval: {}, fall: {fall}, rise: {rise}, weight: {weight}}}\n",
            interval_ms as f64 / 1000.0
        )
    };
    let h1 = start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, &track(0)));
    start_tandem(&mut lab, 2, &tandem_config(51, 90, 3, None, &track(0)));
    lab.expect_holders(&[1], T, "cold start");
    lab.expect_answer(CLIENT, "h1", T, "client before");

    // The brief's bound: fall × interval (the first failing probe comes at most one interval
    // after the flip) + 0.2 s for the Backup's short skew.
    let down_bound = Duration::from_millis(fall * interval_ms + 200);
    let up_bound = Duration::from_millis(rise * interval_ms + 200);

    let t0 = Instant::now();
    ready1.store(NOT_READY, std::sync::atomic::Ordering::SeqCst);
    lab.expect_holders(&[2], T, "after h1's router became not ready (503)");
    let took = t0.elapsed();
    lab.expect_answer(CLIENT, "h2", Duration::from_secs(3), "client after 503");
    eprintln!(
        "router readiness 503 (weight 0): VIP on h2 alone after {took:?} (bound {down_bound:?})"
    );
    assert!(
        took <= down_bound + SLACK,
        "took {took:?}, bound {down_bound:?}"
    );
    let log = lab.log(1, "tandem.log");
    assert!(log.contains("-> FAULT"), "{log}");
    assert!(
        log.contains("answered 503") && log.contains("no leader in etcd"),
        "{log}"
    );

    let t1 = Instant::now();
    ready1.store(READY, std::sync::atomic::Ordering::SeqCst);
    lab.expect_holders(&[1], T, "after h1's router became ready again");
    let took = t1.elapsed();
    eprintln!(
        "router readiness back (rise {rise}): VIP on h1 alone after {took:?} (bound {up_bound:?})"
    );
    assert!(
        took <= up_bound + SLACK,
        "took {took:?}, bound {up_bound:?}"
    );
    lab.expect_answer(
        CLIENT,
        "h1",
        Duration::from_secs(3),
        "client after recovery",
    );

    // Weight -50: h1 (100 → 50) stays out of FAULT but below h2 (90).
    stop(&mut lab, &h1);
    assert!(
        lab.wait_exit(h1.pids[0], Duration::from_secs(5)),
        "h1 exits on SIGTERM"
    );
    lab.expect_holders(&[2], T, "h2 while h1 restarts");
    start_tandem(&mut lab, 1, &tandem_config(51, 100, 3, None, &track(-50)));
    lab.expect_holders(&[1], T, "h1 (weight -50) preempts");
    let t2 = Instant::now();
    ready1.store(REFUSE, std::sync::atomic::Ordering::SeqCst);
    lab.expect_holders(&[2], T, "after h1's router stopped listening");
    let took = t2.elapsed();
    eprintln!("router readiness refused (weight -50): VIP on h2 alone after {took:?} (bound {down_bound:?})");
    assert!(
        took <= down_bound + SLACK,
        "took {took:?}, bound {down_bound:?}"
    );
    let log = lab.log(1, "tandem.log");
    assert!(log.contains("cannot connect"), "{log}");
    assert!(log.contains("MASTER -> BACKUP"), "{log}");
    ready1.store(READY, std::sync::atomic::Ordering::SeqCst);
    lab.expect_holders(&[1], T, "h1 back at priority 100");
    lab.expect_answer(CLIENT, "h1", Duration::from_secs(3), "client at the end");
}
