//! Stand-alone `tandem-vip -c router.yml` (the same code as `tandem vip`), used by the tests.

fn usage() -> ! {
    eprintln!("usage: tandem-vip -c router.yml   (or: tandem-vip --check -c router.yml)");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut check = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" | "--config-file" => config = Some(args.next().unwrap_or_else(|| usage())),
            "--check" => check = true,
            _ => usage(),
        }
    }
    let Some(config) = config else { usage() };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .init();
    let path = std::path::Path::new(&config);
    let r = if check {
        tandem_vip::config::VipConfig::load(path).map(|c| {
            for w in &c.warnings {
                println!("warning: {w}");
            }
            println!("{}: vip section is valid", path.display());
        })
    } else {
        tandem_vip::main_entry(path)
    };
    if let Err(e) = r {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
