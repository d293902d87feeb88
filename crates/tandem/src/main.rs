//! The `tandem` binary: a thin layer of command-line parsing over the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "PostgreSQL high availability in one binary (Patroni-compatible)"
)]
struct Cli {
    /// Configuration file (Patroni's YAML format), or a directory of YAML files.
    #[arg(
        short = 'c',
        long = "config-file",
        global = true,
        env = "TANDEM_CONFIG"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HA agent beside one PostgreSQL server.
    Agent {
        /// Configuration file (same as the global -c).
        #[arg(value_name = "CONFIG")]
        file: Option<PathBuf>,
    },
    /// Show the cluster's members (like `patronictl list`).
    List {
        /// Output format: pretty, tsv, json, yaml.
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: String,
        /// Show every column.
        #[arg(short = 'e', long = "extended")]
        extended: bool,
        /// Refresh every N seconds.
        #[arg(short = 'w', long = "watch")]
        watch: Option<f64>,
        /// Refresh every 2 seconds.
        #[arg(short = 'W')]
        watch_default: bool,
        /// Cluster name (defaults to the configuration's scope).
        cluster: Option<String>,
    },
    /// Check a configuration file and print the warnings.
    Validate {
        #[arg(value_name = "CONFIG")]
        file: Option<PathBuf>,
    },
    /// Start or stop a local demonstration cluster (etcd, three PostgreSQL nodes under tandem).
    Demo {
        #[command(subcommand)]
        action: DemoAction,
    },
}

#[derive(Subcommand)]
enum DemoAction {
    /// Start etcd and three agents on loopback, wait for 1 leader + 2 streaming replicas.
    Up {
        #[arg(long, default_value = "/tmp/tandem-demo")]
        dir: PathBuf,
    },
    /// Stop everything the demo started (by PID) and remove its directory.
    Down {
        #[arg(long, default_value = "/tmp/tandem-demo")]
        dir: PathBuf,
    },
}

fn config_path(cli: &Option<PathBuf>, local: &Option<PathBuf>) -> Result<PathBuf> {
    local
        .clone()
        .or_else(|| cli.clone())
        .context("no configuration file: pass -c /path/to/node.yml")
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

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // A current-thread runtime keeps the agent small; blocking work runs in child processes.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Agent { file } => {
            init_logging();
            let path = config_path(&cli.config, file)?;
            let cfg = tandem::config::Config::load(&path)?;
            runtime()?.block_on(tandem::agent::run_with_path(cfg, Some(path)))
        }
        Command::Validate { file } => {
            let path = config_path(&cli.config, file)?;
            let cfg = tandem::config::Config::load(&path)?;
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            let (d, warnings) = tandem_core::dynamic::DynamicConfig::from_json(
                &tandem::agent::bootstrap_dynamic(&cfg),
            );
            for w in warnings {
                println!("warning: bootstrap.dcs: {w}");
            }
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
        Command::List {
            format,
            extended,
            watch,
            watch_default,
            cluster,
        } => {
            let path = config_path(&cli.config, &None)?;
            let mut cfg = tandem::config::Config::load(&path)?;
            if let Some(c) = cluster {
                cfg.scope = c.clone();
            }
            let fmt: tandem::listing::ListFormat =
                format.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let every = watch.or(if *watch_default { Some(2.0) } else { None });
            runtime()?.block_on(async {
                let dcs =
                    tandem::dcs::Dcs::connect(&cfg.etcd3, &cfg.base_path(), Duration::from_secs(5))
                        .await?;
                loop {
                    let (view, _) = dcs.read_cluster().await?;
                    if every.is_some() {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!(
                        "{}",
                        tandem::listing::render(&view, &cfg.scope, fmt, *extended)
                    );
                    match every {
                        Some(s) => tokio::time::sleep(Duration::from_secs_f64(s.max(0.1))).await,
                        None => return Ok(()),
                    }
                }
            })
        }
        Command::Demo { action } => match action {
            DemoAction::Up { dir } => tandem::demo::up(dir),
            DemoAction::Down { dir } => tandem::demo::down(dir),
        },
    }
}
