//! `tandem demo up|down`: a whole local cluster on loopback, for a first look.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::lab::{wait_until, Lab, LabOptions};

/// Leader index and replica indexes, when the cluster has one leader and every other node streams.
pub fn healthy_roles(lab: &Lab) -> Option<(usize, Vec<usize>)> {
    let mut leader = None;
    let mut replicas = vec![];
    for i in 0..lab.nodes.len() {
        if matches!(lab.api_get(i, "/primary"), Ok((200, _))) {
            if leader.replace(i).is_some() {
                return None;
            }
        } else if matches!(
            lab.api_get(i, "/replica?replication_state=streaming"),
            Ok((200, _))
        ) {
            replicas.push(i);
        }
    }
    let leader = leader?;
    (replicas.len() + 1 == lab.nodes.len()).then_some((leader, replicas))
}

/// `pg_bin`: PostgreSQL's bin directory (`--pg-bin`); `None` finds one. `tls`: every
/// connection over TLS with verification (`--no-tls` clears it).
pub fn up(dir: &Path, pg_bin: Option<&Path>, tls: bool) -> Result<()> {
    let started = Instant::now();
    let mut opts = LabOptions::new(dir);
    opts.router = true;
    opts.tls = tls;
    opts.pg_bin = pg_bin.map(Path::to_path_buf);
    let mut lab = Lab::prepare(opts)
        .with_context(|| format!("cannot prepare the demo in {}", dir.display()))?;
    println!("Starting etcd ({} members) ...", lab.etcd.len());
    lab.start_etcd()?;
    for i in 0..lab.nodes.len() {
        lab.start_agent(i)?;
        println!(
            "Started tandem agent {} (config {})",
            lab.nodes[i].name,
            lab.nodes[i].config_path.display()
        );
    }
    if let Err(e) = lab.start_router() {
        lab.stop_all();
        return Err(e);
    }
    if let Some(r) = &lab.router {
        println!("Started tandem proxy (config {})", r.config_path.display());
    }
    lab.save()?;
    println!(
        "Waiting for one leader and {} streaming replicas ...",
        lab.nodes.len() - 1
    );
    let (leader, _) = match wait_until(
        Duration::from_secs(120),
        "one leader and streaming replicas",
        || healthy_roles(&lab),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "The cluster did not form: see the logs in {}/logs. Stopping it.",
                lab.dir.display()
            );
            lab.stop_all();
            return Err(e);
        }
    };
    if let Err(e) = wait_until(
        Duration::from_secs(30),
        "the router to route to the leader",
        || lab.router_routes_primary().then_some(()),
    ) {
        eprintln!(
            "The router does not route to the leader: see {}/logs/router.log. Stopping the demo.",
            lab.dir.display()
        );
        lab.stop_all();
        return Err(e);
    }
    lab.owned = false; // keep it running after this process exits
    println!(
        "Cluster ready in {:.1} s.\n",
        started.elapsed().as_secs_f64()
    );
    if let Some(t) = &lab.tls {
        println!(
            "TLS everywhere, verified against the lab's CA {}: etcd clients and peers (client \
             certificates), the REST API (client certificates for changes), PostgreSQL clients \
             and replication (hostssl only, sslmode=verify-full). Certificates: {}/\n",
            t.ca().display(),
            t.dir.display()
        );
    }
    let exe = lab.tandem_bin.display().to_string();
    let cfg = lab.nodes[leader].config_path.display().to_string();
    let out = std::process::Command::new(&exe)
        .args(["-c", &cfg, "list"])
        .output();
    if let Ok(out) = out {
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    if let Some(r) = &lab.router {
        println!(
            "\nConnect through the router (follows the leader across failovers):\n  \
             read-write (the leader):  {}\n  read-only (replicas):     {}",
            lab.psql_line_port(r.primary_port),
            lab.psql_line_port(r.replicas_port)
        );
        println!(
            "Routing table:      {} proxy status -c {}",
            lab.tandem_bin.display(),
            r.config_path.display()
        );
    }
    println!(
        "\nConnect to the leader ({}) directly:\n  {}",
        lab.nodes[leader].name,
        lab.psql_line(leader)
    );
    println!("\nList the cluster:   {exe} -c {cfg} list");
    println!("Logs:               {}/logs/", lab.dir.display());
    println!(
        "Stop and remove it: {} demo down --dir {}",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or("tandem".into()),
        lab.dir.display()
    );
    Ok(())
}

pub fn down(dir: &Path) -> Result<()> {
    let mut lab =
        Lab::load(dir).with_context(|| format!("no demo cluster in {}", dir.display()))?;
    lab.stop_all();
    std::fs::remove_dir_all(&lab.dir)
        .with_context(|| format!("cannot remove {}", lab.dir.display()))?;
    println!("Stopped the demo cluster and removed {}", lab.dir.display());
    Ok(())
}
