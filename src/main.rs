//! The `clawgate` command line.

use clap::{Args, Parser, Subcommand};
use clawgate::admin::keys as admin;
use clawgate::runtime::{self, Config};
use clawgate::{process, server, starter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;

#[derive(Parser)]
#[command(
    name = "clawgate",
    version,
    about = "API gateway for AI-agent traffic, on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// The configuration file (YAML).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration and prepare what it names (log and pid folders, key store);
    /// without --config, write a commented starter ./clawgate.yaml.
    Init {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration; exit 0 when valid, 2 with the error otherwise.
    Check(ConfigArg),
    /// Run the gateway.
    Start {
        #[command(flatten)]
        config: ConfigArg,
        /// Stay attached to the terminal (the default).
        #[arg(long, conflicts_with = "daemon")]
        foreground: bool,
        /// Detach and run in the background.
        #[arg(long)]
        daemon: bool,
        /// Take the listening sockets over from a running instance.
        #[arg(long)]
        upgrade: bool,
    },
    /// Show whether the gateway is running (exit 0) or not (exit 3).
    Status(ConfigArg),
    /// Stop the gateway gracefully: finish in-flight requests, then exit.
    Stop(ConfigArg),
    /// Check the configuration, then have the running gateway load it (SIGHUP) without
    /// dropping a request.
    Reload(ConfigArg),
    /// Replace the running gateway with a new process of this binary: the new one takes the
    /// listening sockets over, the old one finishes its requests and exits.
    Upgrade(ConfigArg),
    /// Mint a JWT for an agent with the configured key (for testing and bootstrapping).
    Token {
        #[command(flatten)]
        config: ConfigArg,
        /// The agent id (the token's `sub`).
        #[arg(long, value_name = "ID")]
        agent: String,
        /// Lifetime, at most auth.jwt.expiry (the default).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Manage the API keys of the key store (auth.api_key.keys_store).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Act on the response cache of the running gateway.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Purge every entry of a route, or the entry of one URL (asks the running gateway over
    /// its listener from this host, which caching.admin_networks allows by default).
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// A route's label (its name, else its path as written).
        #[arg(
            long,
            value_name = "LABEL",
            required_unless_present = "url",
            conflicts_with = "url"
        )]
        route: Option<String>,
        /// A path and query whose GET entry goes.
        #[arg(long, value_name = "PATH")]
        url: Option<String>,
        /// With --url: the agent whose entry goes (else the shared or anonymous one).
        #[arg(long, value_name = "ID", requires = "url")]
        agent: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a random key for an agent; it is printed once, and only its SHA-256 is stored.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "ID")]
        agent: String,
        /// A path glob the key may call (repeatable); none: the agent's registry scopes.
        #[arg(long = "scope", value_name = "GLOB")]
        scopes: Vec<String>,
        /// The key's own rate limit, e.g. 100/minute.
        #[arg(long, value_name = "RATE")]
        rate_limit: Option<String>,
        /// When the key stops working: an RFC 3339 time or a duration from now (30d).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
    },
    /// List the keys (digest prefixes, never keys).
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
    },
    /// Revoke an agent's keys (or one, by the start of its SHA-256).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "ID")]
        agent: String,
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("clawgate: internal error: {msg}");
    }));
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            eprintln!("clawgate: {msg}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<u8, (u8, String)>;

fn load(path: &Path) -> Result<Config, (u8, String)> {
    runtime::load(path).map_err(|e| (EXIT_USAGE, e.to_string()))
}

/// What `status` and `stop` need (pid file, listeners, timings), without compiling the rest.
fn read_process(path: &Path) -> Result<runtime::process::Light, (u8, String)> {
    runtime::Process::read(path).map_err(|e| (EXIT_USAGE, e.to_string()))
}

fn run(command: Command) -> CmdResult {
    match command {
        Command::Init { config: None } => init_starter(Path::new("clawgate.yaml")),
        Command::Init { config: Some(path) } => init(&path),
        Command::Check(c) => {
            let cfg = load(&c.config)?;
            for w in warnings(&cfg) {
                eprintln!("warning: {w}");
            }
            println!("{}: ok ({})", c.config.display(), summary(&cfg));
            Ok(0)
        }
        Command::Start {
            config: c,
            daemon,
            upgrade,
            foreground: _,
        } => {
            let cfg = load(&c.config)?;
            init_logging(cfg.log_level);
            if daemon {
                return start_daemon(&c.config, &cfg, upgrade);
            }
            server::run(cfg, server::StartOptions { upgrade })
                .map(|_| 0)
                .map_err(|e| (EXIT_RUNTIME, e))
        }
        Command::Status(c) => status(&read_process(&c.config)?),
        Command::Stop(c) => stop(&read_process(&c.config)?.process),
        Command::Reload(c) => reload(&load(&c.config)?),
        Command::Upgrade(c) => upgrade(&c.config, &load(&c.config)?),
        Command::Token { config, agent, ttl } => {
            let cfg = load(&config.config)?;
            let token = admin::token(&cfg, &agent, ttl.as_deref()).map_err(|m| (EXIT_USAGE, m))?;
            println!("{token}");
            Ok(0)
        }
        Command::Keys { action } => keys(action),
        Command::Cache {
            action:
                CacheAction::Purge {
                    config,
                    route,
                    url,
                    agent,
                },
        } => {
            let cfg = load(&config.config)?;
            let target = match (route, url) {
                (Some(r), _) => clawgate::admin::purge::Target::Route(r),
                (None, Some(u)) => clawgate::admin::purge::Target::Url(u, agent),
                (None, None) => return Err((EXIT_USAGE, "give --route or --url".into())),
            };
            let (code, body) =
                clawgate::admin::purge::ask(&cfg, &target).map_err(|m| (EXIT_RUNTIME, m))?;
            println!("{body}");
            Ok(if code == 200 { 0 } else { EXIT_RUNTIME })
        }
    }
}

fn keys(action: KeysAction) -> CmdResult {
    match action {
        KeysAction::Add {
            config,
            agent,
            scopes,
            rate_limit,
            expires,
        } => {
            let cfg = load(&config.config)?;
            let new = admin::NewKey {
                agent: &agent,
                scopes,
                rate_limit: rate_limit.as_deref(),
                expires: expires.as_deref(),
            };
            let key = admin::add(&cfg, new).map_err(|m| (EXIT_USAGE, m))?;
            println!("{key}");
            eprintln!(
                "added a key for {agent} to {}; it is shown only this once",
                cfg.keys_store.as_deref().unwrap_or_default()
            );
            Ok(0)
        }
        KeysAction::List { config, agent } => {
            let cfg = load(&config.config)?;
            print!(
                "{}",
                admin::list(&cfg, agent.as_deref()).map_err(|m| (EXIT_USAGE, m))?
            );
            Ok(0)
        }
        KeysAction::Revoke {
            config,
            agent,
            sha256,
        } => {
            let cfg = load(&config.config)?;
            let n =
                admin::revoke(&cfg, &agent, sha256.as_deref()).map_err(|m| (EXIT_RUNTIME, m))?;
            println!("revoked {n} key(s) of {agent}");
            Ok(0)
        }
    }
}

/// The gateway's own log on stderr, at the configured level; `RUST_LOG` overrides it.
fn init_logging(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    // Only clawgate's own messages go below info: Pingora's debug and trace messages print
    // request heads and bodies (credentials included), which cannot be redacted. RUST_LOG
    // overrides this for whoever asks for them explicitly.
    builder.filter_level(level.min(log::LevelFilter::Info));
    builder.filter_module("clawgate", level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.init();
}

fn summary(cfg: &Config) -> String {
    format!(
        "{} listener(s): {}{}; {} route(s); {} agent(s)",
        cfg.process.listen.len(),
        cfg.process.listen.join(", "),
        if cfg.process.tls.is_some() {
            " (TLS)"
        } else {
            ""
        },
        cfg.routes.len(),
        cfg.agent_count
    )
}

fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(store) = &cfg.keys_store {
        if !Path::new(store).exists() {
            w.push(format!(
                "the API-key store {store} does not exist yet (clawgate init creates an empty one)"
            ));
        }
    }
    if !cfg.pending_features.is_empty() {
        w.push(format!(
            "this build does not provide {} yet; `start` will refuse this configuration",
            cfg.pending_features.join(", ")
        ));
    }
    w
}

fn init_starter(path: &Path) -> CmdResult {
    if path.exists() {
        return Err((
            EXIT_USAGE,
            format!("{} already exists; not overwriting it", path.display()),
        ));
    }
    std::fs::write(path, starter::STARTER).map_err(|e| {
        (
            EXIT_RUNTIME,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    println!(
        "wrote {}; check it with: clawgate check --config {}",
        path.display(),
        path.display()
    );
    Ok(0)
}

fn init(path: &Path) -> CmdResult {
    let cfg = load(path)?;
    let mut dirs: Vec<&str> = vec![cfg.process.pid_file.as_str()];
    dirs.extend(cfg.log_output.as_deref());
    dirs.extend(cfg.process.error_log.as_deref());
    for file in dirs {
        if let Some(dir) = Path::new(file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                (
                    EXIT_RUNTIME,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
    }
    if let Some(store) = &cfg.keys_store {
        let p = Path::new(store);
        if !p.exists() {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    (
                        EXIT_RUNTIME,
                        format!("cannot create {}: {e}", dir.display()),
                    )
                })?;
            }
            // Owner-only, written atomically, like every later edit by `clawgate keys`.
            clawgate::auth::keys::write_store(p, &Default::default())
                .map_err(|e| (EXIT_RUNTIME, format!("cannot create the key store: {e}")))?;
            println!("created an empty API-key store at {store}");
        }
    }
    println!("{}: ok", path.display());
    println!("  name:      {} (config version {})", cfg.name, cfg.version);
    println!(
        "  listeners: {}{}",
        cfg.process.listen.join(", "),
        if cfg.process.tls.is_some() {
            " (TLS)"
        } else {
            ""
        }
    );
    println!("  routes:    {}", cfg.routes.len());
    for r in &cfg.routes {
        println!("    {} -> {}", r.pattern.source(), r.backends.describe());
    }
    println!("  agents:    {}", cfg.agent_count);
    if let Some(store) = &cfg.keys_store {
        println!("  key store: {store}");
    }
    println!("  pid file:  {}", cfg.process.pid_file);
    for w in warnings(&cfg) {
        eprintln!("warning: {w}");
    }
    Ok(0)
}

fn start_daemon(path: &Path, cfg: &Config, upgrade: bool) -> CmdResult {
    if !upgrade {
        if let Some(pid) = process::running_pid(&cfg.process.pid_file) {
            return Err((
                EXIT_RUNTIME,
                format!(
                    "clawgate is already running with pid {pid} (pid file {})",
                    cfg.process.pid_file
                ),
            ));
        }
    }
    let log = process::daemon_log_path(cfg.process.error_log.as_deref(), &cfg.process.pid_file);
    let pid = process::spawn_daemon(
        path,
        upgrade,
        &cfg.process.pid_file,
        &cfg.process.listen,
        &log,
    )
    .map_err(|e| (EXIT_RUNTIME, e))?;
    println!("clawgate started in the background (pid {pid}, log {log})");
    Ok(0)
}

fn status(cfg: &runtime::process::Light) -> CmdResult {
    let Some(pid) = process::running_pid(&cfg.process.pid_file) else {
        println!(
            "clawgate is not running (pid file {})",
            cfg.process.pid_file
        );
        return Ok(EXIT_NOT_RUNNING);
    };
    println!("clawgate is running");
    println!("  pid:       {pid}");
    if let Some(age) = process::pid_file_age(&cfg.process.pid_file) {
        println!(
            "  uptime:    {}",
            clawgate::respond::human_uptime(age.as_secs())
        );
    }
    println!(
        "  version:   clawgate {} (config {} version {})",
        env!("CARGO_PKG_VERSION"),
        cfg.name,
        cfg.version
    );
    println!(
        "  listeners: {}{}",
        cfg.process.listen.join(", "),
        if cfg.process.tls.is_some() {
            " (TLS)"
        } else {
            ""
        }
    );
    match (&cfg.process.tls, cfg.process.listen.first()) {
        (None, Some(addr)) => {
            match clawgate::probe::health(addr, &cfg.health_path, Duration::from_secs(2)) {
                Ok(body) => println!("  health:    {body}"),
                Err(e) => println!("  health:    not answering ({e})"),
            }
        }
        _ => println!("  health:    not probed (TLS listener)"),
    }
    Ok(0)
}

fn upgrade(path: &Path, cfg: &Config) -> CmdResult {
    let old = running_for_change(cfg)?;
    let done =
        clawgate::admin::upgrade::run(path, &cfg.process, old).map_err(|e| (EXIT_RUNTIME, e))?;
    println!("{done}");
    Ok(0)
}

/// The running gateway's pid, for a configuration it can take (reload or upgrade).
fn running_for_change(cfg: &Config) -> Result<i32, (u8, String)> {
    if !cfg.pending_features.is_empty() {
        return Err((
            EXIT_USAGE,
            format!(
                "{}: this build does not provide {} yet",
                cfg.source.display(),
                cfg.pending_features.join(", ")
            ),
        ));
    }
    process::running_pid(&cfg.process.pid_file).ok_or_else(|| {
        (
            EXIT_NOT_RUNNING,
            format!(
                "clawgate is not running (pid file {})",
                cfg.process.pid_file
            ),
        )
    })
}

fn reload(cfg: &Config) -> CmdResult {
    let pid = running_for_change(cfg)?;
    process::signal(pid, libc::SIGHUP)
        .map_err(|e| (EXIT_RUNTIME, format!("cannot signal pid {pid}: {e}")))?;
    println!(
        "clawgate (pid {pid}) is reloading {}; its log says what changed",
        cfg.source.display()
    );
    Ok(0)
}

fn stop(cfg: &runtime::Process) -> CmdResult {
    let Some(pid) = process::running_pid(&cfg.pid_file) else {
        println!("clawgate is not running (pid file {})", cfg.pid_file);
        return Ok(0);
    };
    process::signal(pid, libc::SIGTERM)
        .map_err(|e| (EXIT_RUNTIME, format!("cannot signal pid {pid}: {e}")))?;
    let limit = cfg.grace_period + cfg.shutdown_timeout + Duration::from_secs(5);
    if process::wait_gone(pid, limit) {
        println!("clawgate (pid {pid}) stopped");
        Ok(0)
    } else {
        Err((
            EXIT_RUNTIME,
            format!(
                "clawgate (pid {pid}) did not stop within {}s",
                limit.as_secs()
            ),
        ))
    }
}
