//! Network namespaces for the partition test (shared/notes/multihost-testing.md): a switch
//! namespace with bridge `br0`, host namespaces `h1..hN` with `eth0` = 10.99.0.(11+i)/24 (i from
//! 0), and a client namespace with 10.99.0.15. Nothing is created in the root namespace, and no
//! lab address is used from it: clients run in threads that entered a lab namespace.
//!
//! Names are `tpart-<pid>-<n>-…` (the temporary directory `/tmp/tpart-<pid>-<n>` too), so
//! parallel runs never collide. `Drop` kills every process in the lab's namespaces (SIGCONT, then
//! SIGKILL, by the PIDs `ip netns pids` lists), waits for them, and deletes the namespaces and the
//! directory, pass or fail; a start-up sweep removes what a killed harness left behind. The same
//! ideas as crates/vip/tests/common/mod.rs, cut down to what this test needs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "tpart";
/// The nft table that cuts a host off.
const CUT_TABLE: &str = "tpart_cut";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip args…`; stdout, or the command and its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args, None)
}

fn must(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `prog args…` (with `stdin` fed in when given) and returns stdout, or an error naming the
/// command with its stderr.
fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let what = format!("{prog} {}", args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the test can run here: root, `ip netns`, nftables inside a namespace, etcd and
/// PostgreSQL. Outside CI a missing requirement skips the test with a message; with CI=true it
/// fails it, so CI never silently runs nothing.
pub fn can_run(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match requirement_missing() {
        None => true,
        Some(r) if ci => panic!(
            "{test}: {r} (CI=true: this test must run; run CI as root after scripts/install-deps.sh)"
        ),
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            false
        }
    }
}

fn requirement_missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".into());
    }
    if let Err(e) = tandem::lab::find_etcd().and(tandem::lab::find_pg_bin(None)) {
        return Some(format!("{e:#}"));
    }
    let probe = format!(
        "{PREFIX}-probe-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("`ip netns` is unavailable: {e}"));
    }
    let nft = run(
        "ip",
        &["netns", "exec", &probe, "nft", "-f", "-"],
        Some("table inet probe { }\n"),
    );
    let _ = ip(&["netns", "del", &probe]);
    nft.err()
        .map(|e| format!("nftables does not work in a namespace (apt-get install nftables): {e}"))
}

/// PIDs of the processes in namespace `ns` (never this test process).
fn pids_in(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .filter(|&p: &i32| p as u32 != std::process::id())
        .collect()
}

fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// SIGCONT then SIGKILL to every process in `ns`; waits (5 s at most) until they are gone.
fn kill_all_in(ns: &str) {
    let pids = pids_in(ns);
    for &p in &pids {
        // SAFETY: kill(2) on single positive PIDs listed for our own namespace.
        unsafe {
            libc::kill(p, libc::SIGCONT);
            libc::kill(p, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&p| gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The PID in a `tpart-<pid>-…` name, when that process is gone (so its lab is stale).
fn stale_pid(name: &str) -> Option<u32> {
    let pid: u32 = name
        .strip_prefix(&format!("{PREFIX}-"))?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    (pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

/// Removes the namespaces and directories of labs whose test process is gone (killed with
/// SIGKILL, so no Drop ran).
fn sweep() {
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if stale_pid(&name).is_some() {
            kill_all_in(&name);
            let _ = ip(&["netns", "del", &name]);
        }
    }
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if stale_pid(&name).is_some() && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A switch, `hosts` hosts and a client, each its own network namespace.
pub struct NetLab {
    pub prefix: String,
    /// `/tmp/<prefix>`: a place for the test's files, removed with the lab.
    pub dir: PathBuf,
    pub hosts: usize,
}

impl NetLab {
    pub fn new(hosts: usize) -> NetLab {
        sweep();
        let prefix = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = NetLab {
            dir: PathBuf::from(format!("/tmp/{prefix}")),
            prefix,
            hosts,
        };
        std::fs::create_dir_all(&lab.dir).expect("the lab's directory");
        let sw = lab.switch();
        must(&["netns", "add", &sw]);
        must(&["-n", &sw, "link", "set", "lo", "up"]);
        must(&[
            "-n",
            &sw,
            "link",
            "add",
            "name",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]);
        must(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            lab.plug(&lab.ns(i), &format!("h{}", i + 1), lab.ip(i));
        }
        lab.plug(&lab.client(), "c", lab.client_ip());
        lab
    }

    /// A namespace `ns` whose `eth0` (address `addr`/24) is port `port` of the switch.
    fn plug(&self, ns: &str, port: &str, addr: Ipv4Addr) {
        let sw = self.switch();
        must(&["netns", "add", ns]);
        must(&["-n", ns, "link", "set", "lo", "up"]);
        must(&[
            "link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
            "netns", &sw,
        ]);
        must(&["-n", &sw, "link", "set", port, "master", "br0", "up"]);
        must(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        must(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    pub fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Host `i`'s namespace (i from 0: `<prefix>-h1` is host 0).
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{}", self.prefix, i + 1)
    }

    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, 11 + i as u8)
    }

    pub fn client(&self) -> String {
        format!("{}-c", self.prefix)
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, 15)
    }

    fn all_namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.hosts).map(|i| self.ns(i)).collect();
        v.push(self.client());
        v.push(self.switch());
        v
    }

    /// Cuts host `i` off: every packet in or out of its `eth0` is dropped (not refused), so
    /// connections go half-dead and requests time out. Traffic inside the host (to its own
    /// address, over `lo`) still flows.
    pub fn cut(&self, i: usize) {
        let rules = format!(
            "table inet {CUT_TABLE} {{\n\
             \x20 chain cut_in {{ type filter hook input priority -300; policy accept; iifname \"eth0\" drop; }}\n\
             \x20 chain cut_out {{ type filter hook output priority -300; policy accept; oifname \"eth0\" drop; }}\n\
             }}\n"
        );
        run(
            "ip",
            &["netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(&rules),
        )
        .unwrap_or_else(|e| panic!("cutting host {i} off: {e}"));
    }

    /// Undoes [`NetLab::cut`].
    pub fn heal(&self, i: usize) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns(i),
                "nft",
                "delete",
                "table",
                "inet",
                CUT_TABLE,
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("healing host {i}: {e}"));
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let all = self.all_namespaces();
        for ns in &all {
            kill_all_in(ns);
        }
        for ns in &all {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("lab {}: {e}", self.prefix);
            }
        }
        if std::env::var_os("TANDEM_KEEP_LAB").is_some() {
            eprintln!("lab {}: files kept in {}", self.prefix, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
