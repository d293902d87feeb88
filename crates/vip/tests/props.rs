//! Property tests: the decoder never panics and round-trips; the state machine keeps its
//! invariants under any sequence of events. Bounded (proptest's default 256 cases per property,
//! raise with PROPTEST_CASES) so CI runs them in seconds.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use tandem_vip::machine::{Action, Event, Machine, Params, State};
use tandem_vip::packet::{decode, encode, parse_ipv4, Advert, Auth, Version};
use tandem_vip::receive::{check, Expect};

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<u32>().prop_map(|x| IpAddr::V4(Ipv4Addr::from(x)))
}
fn v6() -> impl Strategy<Value = IpAddr> {
    any::<u128>().prop_map(|x| IpAddr::V6(Ipv6Addr::from(x)))
}

fn advert_v4() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    (
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
        1u16..=255,
        1u16..=4095,
        prop::collection::vec(v4(), 0..40),
        prop_oneof![
            Just(Auth::None),
            any::<[u8; 8]>().prop_map(Auth::Simple),
            (2u8.., any::<[u8; 8]>()).prop_map(|(kind, data)| Auth::Other { kind, data }),
        ],
        v4(),
        v4(),
    )
        .prop_map(
            |(v2, vrid, priority, secs, cs, addresses, auth, src, dst)| {
                let a = if v2 {
                    Advert {
                        version: Version::V2,
                        vrid,
                        priority,
                        interval_cs: secs * 100,
                        addresses,
                        auth,
                    }
                } else {
                    Advert {
                        version: Version::V3,
                        vrid,
                        priority,
                        interval_cs: cs,
                        addresses,
                        auth: Auth::None,
                    }
                };
                (a, src, dst)
            },
        )
}

fn advert_v6() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    (
        any::<u8>(),
        any::<u8>(),
        1u16..=4095,
        prop::collection::vec(v6(), 0..20),
        v6(),
        v6(),
    )
        .prop_map(|(vrid, priority, cs, addresses, src, dst)| {
            (
                Advert {
                    version: Version::V3,
                    vrid,
                    priority,
                    interval_cs: cs,
                    addresses,
                    auth: Auth::None,
                },
                src,
                dst,
            )
        })
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200), s in v4(), d in v4(), s6 in v6(), d6 in v6()) {
        let _ = decode(&bytes, s, d);
        let _ = decode(&bytes, s6, d6);
        let _ = decode(&bytes, s, d6);
        let _ = parse_ipv4(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic_and_reencode((a, src, dst) in advert_v4(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), cut in any::<prop::sample::Index>(), do_cut in any::<bool>()) {
        let mut m = encode(&a, src, dst).unwrap();
        for (i, x) in flips {
            let i = i.index(m.len());
            m[i] ^= x;
        }
        if do_cut {
            let n = cut.index(m.len() + 1);
            m.truncate(n);
        }
        if let Ok(d) = decode(&m, src, dst) {
            // Whatever decodes, re-encodes to something that decodes the same.
            let again = encode(&d, src, dst).unwrap();
            prop_assert_eq!(decode(&again, src, dst).unwrap(), d);
        }
    }

    #[test]
    fn round_trip_v4((a, src, dst) in advert_v4()) {
        let m = encode(&a, src, dst).unwrap();
        prop_assert_eq!(decode(&m, src, dst).unwrap(), a);
    }

    #[test]
    fn round_trip_v6((a, src, dst) in advert_v6()) {
        let m = encode(&a, src, dst).unwrap();
        prop_assert_eq!(decode(&m, src, dst).unwrap(), a);
    }

    #[test]
    fn receive_check_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), ttl in any::<u8>(), s in v4()) {
        let e = Expect {
            version: Version::V2, vrid: 51, auth: Auth::simple("pw"), interval_cs: 100,
            addresses: vec!["10.0.0.100".parse().unwrap()], own: vec![], peers: vec![],
        };
        let _ = check(s, "224.0.0.18".parse().unwrap(), ttl, &bytes, &e);
    }

    /// Any sequence of events: the addresses are held exactly while Master, priority 0 is sent
    /// only when leaving Master, and a Master or Backup always has a timer running.
    #[test]
    fn machine_invariants(
        prio in 1u8..=255,
        v2 in any::<bool>(),
        preempt in any::<bool>(),
        fast in any::<bool>(),
        delay_ms in prop_oneof![Just(0u64), 0u64..5000],
        events in prop::collection::vec((0u64..2000, 0u8..6, any::<u8>(), 1u8..4, 1u64..300), 1..120),
    ) {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            version: if v2 { Version::V2 } else { Version::V3 },
            priority: prio,
            advert_int: Duration::from_secs(1),
            preempt,
            preempt_delay: Duration::from_millis(delay_ms),
            primary: "10.0.0.2".parse().unwrap(),
            fast,
            reannounce_after: Some(Duration::from_secs(1)),
        });
        let mut now = t0;
        let mut held = false;
        let mut faulted = false;
        for (dt, kind, p, from, int_cs) in events {
            now += Duration::from_millis(dt);
            let ev = match kind {
                0 => Event::Startup,
                1 => Event::Shutdown,
                2 | 3 => Event::Advert {
                    from: IpAddr::V4(Ipv4Addr::new(10, 0, 0, from)),
                    priority: p,
                    interval: Duration::from_millis(int_cs * 10),
                },
                4 => Event::Tick,
                _ => {
                    faulted = !faulted;
                    Event::Health { priority: if prio == 255 { 255 } else { p.clamp(1, 254) }, fault: faulted.then(|| "x".to_string()) }
                }
            };
            let was = m.state();
            for a in m.step(now, ev) {
                match a {
                    Action::AddAddresses => { prop_assert!(!held); held = true; }
                    Action::RemoveAddresses => { prop_assert!(held); held = false; }
                    Action::Send { priority: 0 } => prop_assert_eq!(was, State::Master),
                    _ => {}
                }
            }
            prop_assert_eq!(held, m.state() == State::Master);
            if matches!(m.state(), State::Master | State::Backup) {
                prop_assert!(m.next_deadline().is_some());
            }
            // Fire due timers as the host loop would.
            while let Some(d) = m.next_deadline() {
                if d > now { break; }
                for a in m.step(d, Event::Tick) {
                    match a {
                        Action::AddAddresses => { prop_assert!(!held); held = true; }
                        Action::RemoveAddresses => { prop_assert!(held); held = false; }
                        _ => {}
                    }
                }
            }
            prop_assert_eq!(held, m.state() == State::Master);
        }
    }
}
