//! Takeover benchmark (not a test: `#[ignore]`, run by bench/vip/run.sh): three routers with the
//! seed's settings (VRRPv2, auth PASS, VRID 51, priorities 100/90/80, advert_int 1) and a client,
//! in namespaces. For each implementation and fault, N runs of: steady state (h1 Master, the
//! client answered by h1) → wait a varying fraction of the advert interval → fault on h1 → time
//! until the VIP is on h2 and until the client (new TCP connection every ≤ 50 ms) is answered
//! by h2. Prints a Markdown table.

mod common;
use common::*;
use std::time::{Duration, Instant};

const CLIENT: usize = 4;
const PASS: &str = "fzsecret";

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Tandem,
    Keepalived,
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Term,
    Check,
    /// `track_router` (interval 1, fall 2, rise 1, weight 0) against a fake `/ready` that turns
    /// to 503: tandem only (keepalived has no built-in HTTP check).
    Router,
}

fn name(i: Impl) -> &'static str {
    match i {
        Impl::Tandem => "tandem vip",
        Impl::Keepalived => "keepalived 2.2",
    }
}

fn fault_name(f: Fault) -> &'static str {
    match f {
        Fault::Kill => "SIGKILL of the Master",
        Fault::Term => "SIGTERM (priority 0)",
        Fault::Check => "check fails (interval 1, fall 2)",
        Fault::Router => "router /ready answers 503 (interval 1, fall 2)",
    }
}

const TRACK_ROUTER: &str =
    "  track_router: {url: 'http://127.0.0.1:8008/ready', interval: 1, fall: 2, rise: 1}\n";

fn start(lab: &mut Lab, im: Impl, host: usize, prio: u8, check_file: Option<&str>) -> Router {
    match im {
        Impl::Tandem => {
            let extra = match check_file {
                Some("router") => TRACK_ROUTER.to_string(),
                Some(f) => format!("  track_script:\n    script: \"test -e {f}\"\n    interval: 1\n    fall: 2\n    rise: 1\n"),
                None => String::new(),
            };
            start_tandem(lab, host, &tandem_config(51, prio, 2, Some(PASS), &extra))
        }
        Impl::Keepalived => {
            let mut conf = keepalived_config(&format!("r{host}"), 51, prio, 2, Some(PASS), VIP);
            if let Some(f) = check_file {
                conf = conf.replace(
                    "vrrp_instance VI_1 {",
                    &format!("vrrp_script chk {{\n    script \"/usr/bin/test -e {f}\"\n    interval 1\n    fall 2\n    rise 1\n}}\nvrrp_instance VI_1 {{\n    track_script {{\n        chk\n    }}"),
                );
            }
            start_keepalived(lab, host, &conf)
        }
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    (median, *v.last().unwrap())
}

fn fmt(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn run_series(im: Impl, fault: Fault, runs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut lab = Lab::new(4);
    for i in 1..=3 {
        lab.serve_name(i);
    }
    let flag = lab.write(1, "healthy", "");
    let flag_s = flag.to_string_lossy().into_owned();
    let ready = (fault == Fault::Router).then(|| lab.serve_ready(1, 8008));
    let check = match fault {
        Fault::Check => Some(flag_s.as_str()),
        Fault::Router => Some("router"),
        _ => None,
    };
    let mut r1 = start(&mut lab, im, 1, 100, check);
    let _r2 = start(&mut lab, im, 2, 90, None);
    let _r3 = start(&mut lab, im, 3, 80, None);
    let (mut vip_t, mut client_t) = (Vec::new(), Vec::new());
    let long = Duration::from_secs(20);
    for k in 0..runs {
        lab.expect_holders(&[1], long, "steady state");
        lab.expect_answer(CLIENT, "h1", long, "steady state client");
        // Vary the phase of the fault against the Master's advert timer.
        std::thread::sleep(Duration::from_millis((k as u64 * 370) % 1000));
        let t0 = Instant::now();
        match fault {
            Fault::Kill => crash(&mut lab, &r1),
            Fault::Term => stop(&mut lab, &r1),
            Fault::Check => std::fs::remove_file(&flag).unwrap(),
            Fault::Router => ready
                .as_ref()
                .unwrap()
                .store(NOT_READY, std::sync::atomic::Ordering::SeqCst),
        }
        let (v, c) = std::thread::scope(|s| {
            let lab = &lab;
            let v = s.spawn(move || {
                lab.wait_until(long, || lab.holders(VIP).contains(&2))
                    .map(|_| t0.elapsed())
            });
            let c = lab
                .wait_until(long, || {
                    lab.ask(CLIENT, Duration::from_millis(50)).as_deref() == Some("h2")
                })
                .map(|_| t0.elapsed());
            (v.join().unwrap(), c)
        });
        let (v, c) = (
            v.expect("VIP moved to h2"),
            c.expect("client answered by h2"),
        );
        eprintln!(
            "{} / {}: run {}: VIP {} client {}",
            name(im),
            fault_name(fault),
            k + 1,
            fmt(v),
            fmt(c)
        );
        vip_t.push(v);
        client_t.push(c);
        // Back to the steady state.
        match fault {
            Fault::Kill | Fault::Term => {
                for &p in &r1.pids {
                    assert!(lab.wait_exit(p, Duration::from_secs(10)));
                }
                lab.del_addr(1, VIP); // a crashed router leaves it: as if its host restarted
                r1 = start(&mut lab, im, 1, 100, check);
            }
            Fault::Check => std::fs::write(&flag, "").unwrap(),
            Fault::Router => ready
                .as_ref()
                .unwrap()
                .store(READY, std::sync::atomic::Ordering::SeqCst),
        }
    }
    (vip_t, client_t)
}

#[test]
#[ignore = "benchmark: run bench/vip/run.sh (root, keepalived installed)"]
fn takeover_bench() {
    if !can_run("takeover_bench", true) {
        return;
    }
    let runs: usize = std::env::var("VIP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rows = Vec::new();
    for fault in [Fault::Kill, Fault::Term, Fault::Check] {
        for im in [Impl::Tandem, Impl::Keepalived] {
            let (v, c) = run_series(im, fault, runs);
            let (vm, vx) = stats(v);
            let (cm, cx) = stats(c);
            rows.push(format!(
                "| {} | {} | {runs} | {} | {} | {} | {} |",
                fault_name(fault),
                name(im),
                fmt(vm),
                fmt(vx),
                fmt(cm),
                fmt(cx)
            ));
        }
    }
    print_table(rows);
}

fn print_table(rows: Vec<String>) {
    println!("\n| fault on h1 (Master, priority 100) | implementation | runs | VIP on h2, median | max | client answered by h2, median | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
}

/// The router-readiness fault alone (tandem only): `bench/vip/run.sh router`.
#[test]
#[ignore = "benchmark: run bench/vip/run.sh router (root)"]
fn router_readiness_bench() {
    if !can_run("router_readiness_bench", false) {
        return;
    }
    let runs: usize = std::env::var("VIP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let (v, c) = run_series(Impl::Tandem, Fault::Router, runs);
    let (vm, vx) = stats(v);
    let (cm, cx) = stats(c);
    print_table(vec![format!(
        "| {} | {} | {runs} | {} | {} | {} | {} |",
        fault_name(Fault::Router),
        name(Impl::Tandem),
        fmt(vm),
        fmt(vx),
        fmt(cm),
        fmt(cx)
    )]);
}
