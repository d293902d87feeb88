//! A lab of network namespaces for the VRRP tests and the benchmark (see
//! shared/notes/multihost-testing.md): a switch namespace with bridge `br0`, host namespaces
//! `h1..hN` each with `eth0` = 10.99.0.(10+i)/24. Nothing is created in the root namespace and no
//! lab address is ever used from it: clients and servers run in threads that entered a host
//! namespace with setns(2). Names are `tvip-<pid>-<n>-…`, so parallel runs never collide; `Drop`
//! kills every process of the lab's namespaces (by PID) and deletes them, even when a test panics;
//! a start-up sweep removes what a killed harness left behind.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
pub const PORT: u16 = 7100;
/// Modes of [`Lab::serve_ready`].
pub const READY: u8 = 0;
pub const NOT_READY: u8 = 1;
pub const REFUSE: u8 = 2;
const PREFIX: &str = "tvip";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ip_cmd(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) -> String {
    ip_cmd(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the namespace tests can run here. Outside CI a missing requirement skips the test
/// with a message; with CI=true it fails it, so CI never silently runs nothing.
pub fn can_run(test: &str, need_keepalived: bool) -> bool {
    let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
    let reason = requirement_missing(need_keepalived);
    match reason {
        None => true,
        Some(r) if ci => panic!("{test}: {r} (CI=true: the namespace tests must run; run CI as root with iproute2 and keepalived installed)"),
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            false
        }
    }
}

fn requirement_missing(need_keepalived: bool) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".into());
    }
    let probe = format!(
        "{PREFIX}-probe-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    if let Err(e) = ip_cmd(&["netns", "add", &probe]) {
        return Some(format!("`ip netns` is unavailable: {e}"));
    }
    let _ = ip_cmd(&["netns", "del", &probe]);
    if need_keepalived
        && !Path::new("/usr/sbin/keepalived").exists()
        && which("keepalived").is_none()
    {
        return Some("keepalived is not installed (apt-get install keepalived)".into());
    }
    None
}

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|f| f.is_file())
    })
}

fn pids_in(ns: &str) -> Vec<i32> {
    ip_cmd(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .filter(|&p: &i32| p as u32 != std::process::id())
        .collect()
}

fn kill_all_in(ns: &str) {
    let pids = pids_in(ns);
    for &p in &pids {
        // SAFETY: signalling a PID listed by `ip netns pids` for our own namespace.
        unsafe {
            libc::kill(p, libc::SIGCONT);
            libc::kill(p, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids
        .iter()
        .all(|p| !Path::new(&format!("/proc/{p}")).exists() || is_zombie(*p))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
                .unwrap_or(true)
        })
        .unwrap_or(true)
}

/// Remove labs whose harness process is gone (killed with SIGKILL, so no Drop ran).
fn sweep() {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_all_in(&name);
            let _ = ip_cmd(&["netns", "del", &name]);
        }
    }
}

/// Run `f` in a new thread that has entered network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with an fd we hold open.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    pub hosts: usize,
    children: Vec<Child>,
    listeners: Vec<Listener>,
}

impl Lab {
    /// A switch and `hosts` hosts.
    pub fn new(hosts: usize) -> Lab {
        sweep();
        let prefix = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = PathBuf::from(format!("/tmp/{prefix}"));
        let lab = Lab {
            prefix,
            dir,
            hosts,
            children: Vec::new(),
            listeners: Vec::new(),
        };
        std::fs::create_dir_all(&lab.dir).unwrap();
        let sw = lab.sw();
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
        for i in 1..=hosts {
            let ns = lab.ns(i);
            let port = format!("h{i}");
            must(&["netns", "add", &ns]);
            must(&["-n", &ns, "link", "set", "lo", "up"]);
            must(&[
                "link", "add", "name", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            must(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            must(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.ip(i)),
                "dev",
                "eth0",
            ]);
            must(&["-n", &ns, "link", "set", "eth0", "up"]);
            std::fs::create_dir_all(lab.host_dir(i)).unwrap();
        }
        lab
    }

    pub fn sw(&self) -> String {
        format!("{}-sw", self.prefix)
    }
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, 10 + i as u8)
    }
    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{i}"))
    }

    pub fn write(&self, i: usize, name: &str, content: &str) -> PathBuf {
        let p = self.host_dir(i).join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Start `program args…` in host `i`; its output goes to `h<i>/<log>`. Returns the PID.
    #[allow(clippy::zombie_processes)] // the Child is kept in self.children and reaped
    pub fn spawn(&mut self, i: usize, log: &str, program: &str, args: &[&str]) -> u32 {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.host_dir(i).join(log))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i), program])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        // If the harness dies (SIGKILL), its routers die with it; `ip netns exec` execs the
        // program, which keeps the death signal.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    pub fn log(&self, i: usize, log: &str) -> String {
        let mut s = Vec::new();
        if let Ok(mut f) = File::open(self.host_dir(i).join(log)) {
            let _ = f.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    pub fn signal(&self, pid: u32, sig: i32) {
        // SAFETY: pid is a process this lab started.
        unsafe { libc::kill(pid as i32, sig) };
    }

    /// Wait (bounded) for a process this lab started to exit, and reap it.
    #[allow(clippy::zombie_processes)] // try_wait() returned Some: it is reaped
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            loop {
                if let Ok(Some(_)) = self.children[pos].try_wait() {
                    self.children.remove(pos);
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Not our child (e.g. keepalived's VRRP process): poll /proc.
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid as i32) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// The hosts among `1..=hosts` that hold `addr` on eth0.
    pub fn holders(&self, addr: impl Into<IpAddr>) -> Vec<usize> {
        let addr: IpAddr = addr.into();
        let needle = format!(" {addr}/");
        let fam = if addr.is_ipv6() { "-6" } else { "-4" };
        (1..=self.hosts)
            .filter(|&i| {
                ip_cmd(&["-n", &self.ns(i), "-o", fam, "addr", "show", "dev", "eth0"])
                    .map(|s| s.contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Pull (`up` false) or plug back host `i`'s cable: its port on the switch.
    pub fn cable(&self, i: usize, up: bool) {
        must(&[
            "-n",
            &self.sw(),
            "link",
            "set",
            &format!("h{i}"),
            if up { "up" } else { "down" },
        ]);
    }

    /// Give host `i` the address 2001:db8::(10+i)/64 (without duplicate address detection).
    pub fn add_v6(&self, i: usize) {
        let a = format!("2001:db8::{}/64", 10 + i);
        must(&["-n", &self.ns(i), "addr", "add", &a, "dev", "eth0", "nodad"]);
    }

    pub fn del_addr(&self, i: usize, addr: Ipv4Addr) {
        let _ = ip_cmd(&[
            "-n",
            &self.ns(i),
            "addr",
            "del",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        let _ = ip_cmd(&[
            "-n",
            &self.ns(i),
            "addr",
            "del",
            &format!("{addr}/32"),
            "dev",
            "eth0",
        ]);
    }

    /// A TCP server on 0.0.0.0:PORT in host `i` that answers its host name (`h<i>`).
    pub fn serve_name(&mut self, i: usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let name = format!("h{i}\n");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = in_ns(&self.ns(i), move || {
            // Dual-stack where IPv6 is there, so one server answers on the v4 and the v6 VIP.
            let l = TcpListener::bind(("::", PORT))
                .or_else(|_| TcpListener::bind(("0.0.0.0", PORT)))
                .expect("bind name server");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(name.as_bytes());
                    }
                    Err(_) => {
                        let mut pfd = libc::pollfd {
                            fd: l.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe { libc::poll(&mut pfd, 1, 100) };
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("name server started");
        self.listeners.push(Listener {
            stop,
            thread: Some(thread),
        });
    }

    /// A stand-in for the router's status endpoint on 127.0.0.1:`port` inside host `i`: it
    /// answers `GET` with 200 `{"ready":true}` while the returned switch holds [`READY`], 503
    /// with a reason at [`NOT_READY`], and refuses connections (no listener) at [`REFUSE`].
    pub fn serve_ready(&mut self, i: usize, port: u16) -> Arc<AtomicU8> {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(AtomicU8::new(READY));
        let (stop2, mode2) = (stop.clone(), mode.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = in_ns(&self.ns(i), move || {
            let bind = || {
                let l = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake /ready");
                l.set_nonblocking(true).unwrap();
                l
            };
            let mut l = Some(bind());
            tx.send(()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                let m = mode2.load(Ordering::SeqCst);
                if m == REFUSE {
                    l = None;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let lis = l.get_or_insert_with(bind);
                match lis.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut req = [0u8; 1024];
                        let _ = s.read(&mut req);
                        let answer = if m == READY {
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"ready\":true}\n".to_string()
                        } else {
                            let body = "{\"ready\":false,\"reason\":\"primary listener: no leader in etcd\"}\n";
                            format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                        };
                        let _ = s.write_all(answer.as_bytes());
                    }
                    Err(_) => {
                        let mut pfd = libc::pollfd {
                            fd: lis.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe { libc::poll(&mut pfd, 1, 5) };
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("fake /ready started");
        self.listeners.push(Listener {
            stop,
            thread: Some(thread),
        });
        mode
    }

    /// From host `from`, connect to VIP:PORT and read the answer (`h<i>`), or None.
    pub fn ask(&self, from: usize, timeout: Duration) -> Option<String> {
        self.ask_at(from, SocketAddr::from((VIP, PORT)), timeout)
    }

    /// From host `from`, connect to `addr` and read the answer.
    pub fn ask_at(&self, from: usize, addr: SocketAddr, timeout: Duration) -> Option<String> {
        in_ns(&self.ns(from), move || {
            let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
            s.set_read_timeout(Some(timeout)).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out.trim().to_string())
        })
        .join()
        .unwrap()
    }

    /// Poll `cond` every 20 ms until it holds (returns the time it took) or `timeout` passes.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Option<Duration> {
        let t0 = Instant::now();
        loop {
            if cond() {
                return Some(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until exactly `want` holds the VIP; panics with the logs after `timeout`.
    pub fn expect_holders(&self, want: &[usize], timeout: Duration, what: &str) -> Duration {
        match self.wait_until(timeout, || self.holders(VIP) == want) {
            Some(d) => d,
            None => panic!(
                "{what}: VIP held by {:?}, expected {want:?} within {timeout:?}\n{}",
                self.holders(VIP),
                self.all_logs()
            ),
        }
    }

    /// Wait until the client in host `from` is answered by `want`.
    pub fn expect_answer(
        &self,
        from: usize,
        want: &str,
        timeout: Duration,
        what: &str,
    ) -> Duration {
        let mut last = None;
        match self.wait_until(timeout, || {
            last = self.ask(from, Duration::from_millis(200));
            last.as_deref() == Some(want)
        }) {
            Some(d) => d,
            None => panic!(
                "{what}: the client got {last:?}, expected {want:?}\n{}",
                self.all_logs()
            ),
        }
    }

    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.hosts {
            if let Ok(rd) = std::fs::read_dir(self.host_dir(i)) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().map(|x| x == "log").unwrap_or(false) {
                        let text = std::fs::read(&p).unwrap_or_default();
                        s.push_str(&format!(
                            "---- {} ----\n{}\n",
                            p.display(),
                            String::from_utf8_lossy(&text)
                        ));
                    }
                }
            }
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.stop.store(true, Ordering::SeqCst);
        }
        for l in &mut self.listeners {
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 1..=self.hosts {
            kill_all_in(&self.ns(i));
        }
        for i in 1..=self.hosts {
            let _ = ip_cmd(&["netns", "del", &self.ns(i)]);
        }
        kill_all_in(&self.sw());
        let _ = ip_cmd(&["netns", "del", &self.sw()]);
        if std::thread::panicking() || std::env::var_os("VIP_KEEP_LOGS").is_some() {
            eprintln!("lab {}: logs kept in {}", self.prefix, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `router.yml` for tandem vip.
pub fn tandem_config(
    vrid: u8,
    priority: u8,
    version: u8,
    auth_pass: Option<&str>,
    extra: &str,
) -> String {
    let auth = auth_pass
        .map(|p| format!("  auth_pass: {p}\n"))
        .unwrap_or_default();
    format!(
        "vip:\n  interface: eth0\n  virtual_router_id: {vrid}\n  priority: {priority}\n  advert_int: 1\n  version: {version}\n{auth}  preempt: true\n  addresses: [{VIP}/24]\n{extra}"
    )
}

/// A keepalived.conf as in the seed (and notes §4), VRRP only.
pub fn keepalived_config(
    id: &str,
    vrid: u8,
    priority: u8,
    version: u8,
    auth_pass: Option<&str>,
    vip: Ipv4Addr,
) -> String {
    let auth = match auth_pass {
        Some(p) if version == 2 => format!(
            "    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}\n"
        ),
        _ => String::new(),
    };
    format!(
        "global_defs {{\n    router_id {id}\n    vrrp_version {version}\n    vrrp_garp_master_delay 1\n    vrrp_garp_master_repeat 1\n    script_user root\n    enable_script_security\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority {priority}\n    advert_int 1\n{auth}    virtual_ipaddress {{\n        {vip}/24 dev eth0\n    }}\n}}\n"
    )
}

/// The processes of one router: tandem (one PID) or keepalived (parent and VRRP child).
pub struct Router {
    pub host: usize,
    pub pids: Vec<u32>,
}

pub fn start_tandem(lab: &mut Lab, i: usize, config: &str) -> Router {
    let cfg = lab.write(i, "router.yml", config);
    // option_env!: this module is also compiled into the tandem crate's tests, which have no
    // tandem-vip binary (they start `tandem vip`).
    let bin = option_env!("CARGO_BIN_EXE_tandem-vip").unwrap_or("tandem-vip");
    let pid = lab.spawn(i, "tandem.log", bin, &["-c", cfg.to_str().unwrap()]);
    Router {
        host: i,
        pids: vec![pid],
    }
}

pub fn start_keepalived(lab: &mut Lab, i: usize, config: &str) -> Router {
    let cfg = lab.write(i, "keepalived.conf", config);
    let d = lab.host_dir(i);
    let pidf = d.join("keepalived.pid");
    let vrrpf = d.join("vrrp.pid");
    let _ = std::fs::remove_file(&vrrpf);
    let id = lab.ns(i);
    let bin = which("keepalived")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/usr/sbin/keepalived".into());
    let parent = lab.spawn(
        i,
        "keepalived.log",
        &bin,
        &[
            "-n",
            "-l",
            "-D",
            "-G",
            "-R",
            "-P",
            "-f",
            cfg.to_str().unwrap(),
            "-p",
            pidf.to_str().unwrap(),
            "-r",
            vrrpf.to_str().unwrap(),
            "-i",
            &id,
        ],
    );
    let mut child = None;
    lab.wait_until(Duration::from_secs(10), || {
        child = std::fs::read_to_string(&vrrpf)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        child.is_some()
    });
    let child = child.unwrap_or_else(|| {
        panic!(
            "keepalived in h{i} did not start its VRRP process\n{}",
            lab.all_logs()
        )
    });
    Router {
        host: i,
        pids: vec![child, parent],
    }
}

/// SIGKILL every process of the router (a crash), and wait for them.
pub fn crash(lab: &mut Lab, r: &Router) {
    for &p in &r.pids {
        lab.signal(p, libc::SIGKILL);
    }
    for &p in &r.pids {
        assert!(
            lab.wait_exit(p, Duration::from_secs(5)),
            "pid {p} survived SIGKILL"
        );
    }
}

/// SIGTERM the router's main process (a clean stop); waiting for exit is the caller's choice.
pub fn stop(lab: &mut Lab, r: &Router) {
    let main = *r.pids.last().unwrap();
    lab.signal(main, libc::SIGTERM);
}
