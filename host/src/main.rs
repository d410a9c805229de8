//! The `plugboard` command: parses the command line, sets up logging, reads the configuration,
//! binds the listeners and hands them to [`plugboard::Server`], printing the bound addresses
//! (the first stdout line is the STOMP address) once it is ready; runs until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::info;

use plugboard::config::LogFormat;
use plugboard::http::client::TraceSwitch;
use plugboard::{Config, Listeners, ReloadSource, Server};

/// glibc's allocator with large freed blocks (read buffers) kept for reuse: see `memory`.
#[global_allocator]
static ALLOCATOR: plugboard::memory::BrokerAllocator = plugboard::memory::BrokerAllocator;

/// A STOMP 1.0/1.1/1.2 broker with WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (every key is documented in examples/plugboard.toml). Without
    /// it, the embedded default runs: 127.0.0.1:61613, anonymous login, no plugins. Changes to
    /// its plugins (and to their component files) apply live; SIGHUP also reloads.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the configuration (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// No plain STOMP listener (as `listen = "off"`): e.g. a TLS-only broker.
    #[arg(long)]
    no_tcp: bool,
    /// Address of the STOMP-over-TLS listener, overriding `tls.listen` (61614 is the usual
    /// port). Needs a certificate and key (`--tls-cert`, `--tls-key` or `[tls]`).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// The TLS server certificate chain (PEM), overriding `tls.cert`.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The TLS server private key (PEM), overriding `tls.key`.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to (mutual TLS), overriding
    /// `tls.client_ca`; `tls.client_auth` says whether a certificate is required (default).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Address of the status endpoint, overriding `admin_listen`.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Address of the STOMP over WebSocket listener, overriding `[websocket] listen` (usual
    /// port 15674; the path is `[websocket] path`, `/ws` by default).
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<SocketAddr>,
    /// Address of the WSS listener (WebSocket over TLS with the `[tls]` certificates, also
    /// `--tls-cert`/`--tls-key`), overriding `[websocket] tls_listen` (usual port 15673).
    #[arg(long, value_name = "ADDR")]
    wss_listen: Option<SocketAddr>,
    /// Directory of the message store (journal of persistent messages), overriding
    /// `store.data_dir`; default `plugboard-data` in the working directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Directory of the compiled-plugin cache, overriding `plugin_cache_dir` (default:
    /// `plugin-cache` in the data directory). It must be private to the broker's user.
    #[arg(long, value_name = "DIR")]
    plugin_cache_dir: Option<PathBuf>,
    /// Cluster mode with these NATS servers (comma-separated `nats://HOST:PORT` URLs),
    /// replacing `[cluster] nats`; without `[cluster]` in the config, its defaults apply.
    /// See docs/cluster.md.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    cluster_nats: Option<Vec<String>>,
    /// Validate the configuration and load its plugins, then exit without serving.
    #[arg(long)]
    check_config: bool,
    /// Log lines as `text` or `json` (one JSON object per line), overriding `log_format`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the status of a running broker (plugins, versions, counters, last reload error).
    Status {
        /// The broker's status endpoint; defaults to `admin_listen` of `--config`. The token, if
        /// the endpoint needs one, comes from `$PLUGBOARD_ADMIN_TOKEN` or `admin_token` of
        /// `--config`.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Read a password from stdin (one line; a trailing line break is dropped) and print its
    /// argon2id PHC string, for `password_hash` in the static-auth plugin's users. Never pass
    /// the password as an argument: pipe it in, e.g. `plugboard hash-password < file`.
    HashPassword {
        /// Memory cost m, KiB (at least 8192, static-auth's floor).
        #[arg(short = 'm', long, value_name = "KIB", default_value_t = plugboard::password::DEFAULT_M_KIB)]
        memory_kib: u32,
        /// Time cost t: passes over the memory.
        #[arg(short = 't', long, value_name = "T", default_value_t = plugboard::password::DEFAULT_T)]
        passes: u32,
        /// Parallelism p: lanes (the plugin computes them one after the other).
        #[arg(short = 'p', long, value_name = "P", default_value_t = plugboard::password::DEFAULT_P)]
        lanes: u32,
    },
    /// Plugin authoring: check a component, start a new plugin project.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load FILE.wasm as the broker would, report the hooks it implements against the current
    /// WIT and run it on sample frames; exit status 0 only when the broker would load it.
    Check {
        /// The plugin component.
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
        /// Sample frames and plugin settings (TOML; see docs/writing-plugins.md).
        #[arg(long, value_name = "FILE")]
        samples: Option<PathBuf>,
        /// Compiled-artifact cache (default: `$XDG_CACHE_HOME` or `~/.cache`, `plugboard/check`).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Show a running broker's recent decisions of plugin NAME (see "Plugin decision traces" in
    /// docs/operations.md), after switching its tracing when `--sample` or `--off` says so.
    /// The admin listener is `--admin` or `admin_listen` of `--config`; the token comes from
    /// `$PLUGBOARD_ADMIN_TOKEN` or `admin_token` of `--config` (switching needs one).
    Trace {
        /// The plugin's name in its `[[plugins]]` entry.
        name: String,
        /// Trace this share of its calls from now on (0 to 1; 1 = every call).
        #[arg(long, value_name = "RATE", conflicts_with = "off")]
        sample: Option<f64>,
        /// Stop tracing it (the decisions recorded stay listed).
        #[arg(long)]
        off: bool,
        /// How many of the most recent decisions to print.
        #[arg(long, value_name = "N", default_value_t = 20)]
        last: usize,
        /// The broker's admin listener.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Start a plugin project NAME from a template.
    New {
        /// The plugin's name (lowercase letters, digits and `-`).
        name: String,
        /// rust, js or python.
        #[arg(long, value_name = "LANG")]
        lang: plugboard::plugin::template::Lang,
        /// The directory to create the project in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The plugboard-sdk crate a Rust project depends on (path).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::HashPassword {
        memory_kib,
        passes,
        lanes,
    }) = cli.command
    {
        let cost = plugboard::password::Cost {
            m_kib: memory_kib,
            t: passes,
            p: lanes,
        };
        return hash_password(cost);
    }
    if let Some(Command::Plugin {
        command: PluginCommand::Trace { .. },
    }) = &cli.command
    {
        // The configuration only for the admin address and token.
        let config = cli.config.as_deref().map(Config::from_file).transpose()?;
        return trace_command(cli.command, config);
    }
    // The configuration is read before logging starts: it says how to log.
    let config = match (&cli.command, &cli.config) {
        (Some(Command::Plugin { .. }), _) => None,
        (_, Some(path)) => Some(Config::from_file(path)?),
        (_, None) => Some(Config::default()),
    };
    let format = cli
        .log_format
        .or(config.as_ref().map(|config| config.log_format))
        .unwrap_or(LogFormat::Text);
    plugboard::logging::init(format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker out of work hands its batch of memory-budget changes over, so that an idle
        // broker's count is exact.
        .on_thread_park(plugboard::budget::flush_thread)
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async_main(cli, config))
}

async fn async_main(cli: Cli, config: Option<Config>) -> anyhow::Result<()> {
    let Some(mut config) = config else {
        let Some(Command::Plugin { command }) = cli.command else {
            unreachable!("only plugin commands run without a configuration")
        };
        return plugin_command(command).await;
    };
    if let Some(Command::Status { admin }) = cli.command {
        let address = admin.or(config.admin_listen).context(
            "no status endpoint: pass --admin ADDR, or --config FILE with admin_listen set",
        )?;
        let token = std::env::var("PLUGBOARD_ADMIN_TOKEN")
            .ok()
            .or(config.admin_token.clone());
        let status = plugboard::http::fetch(address, token.as_deref()).await?;
        // A closed pipe (`| head`) is not an error worth a panic.
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&status)?
        );
        return Ok(());
    }
    let overrides = plugboard::reload::Overrides {
        listen: cli.listen,
        admin_listen: cli.admin_listen,
        ws_listen: cli.ws_listen,
        wss_listen: cli.wss_listen,
        data_dir: absolute(cli.data_dir.as_deref())?,
        plugin_cache_dir: absolute(cli.plugin_cache_dir.as_deref())?,
        log_format: cli.log_format,
        no_tcp: cli.no_tcp,
        tls_listen: cli.tls_listen,
        tls_cert: absolute(cli.tls_cert.as_deref())?,
        tls_key: absolute(cli.tls_key.as_deref())?,
        tls_client_ca: absolute(cli.tls_client_ca.as_deref())?,
        cluster_nats: cli.cluster_nats,
    };
    overrides.apply(&mut config);
    config.check_listeners()?;
    if let Some(cluster) = &config.cluster {
        cluster.validate()?;
    }
    if cli.check_config {
        plugboard::broker::load_policy(&config).await?;
        println!(
            "configuration OK: {} plugin(s) loaded",
            config.plugins.len()
        );
        return Ok(());
    }
    let listeners = Listeners::bind(&config).await?;
    let (stop, shutdown) = watch::channel(false);
    let reload = cli
        .config
        .clone()
        .map(|path| ReloadSource { path, overrides });
    let server = Server::start(config, listeners, reload, shutdown).await?;
    // The first stdout line: tests and scripts read the bound address from it (the plain
    // listener's; when that is off, the first line is the next listener's), then one line per
    // listener in a fixed order: ws, wss, stomp+ssl. Live reload is in place by now: from here on a
    // SIGHUP or an edit of the files is never missed.
    if let Some(address) = server.local_addr() {
        println!("listening on {address}");
    }
    if let Some(ws) = server.websocket_addr() {
        println!(
            "listening on ws://{ws}{}",
            server.broker().config.websocket.path
        );
    }
    if let Some(wss) = server.secure_websocket_addr() {
        println!(
            "listening on wss://{wss}{}",
            server.broker().config.websocket.path
        );
    }
    if let Some(address) = server.tls_addr() {
        println!("listening on stomp+ssl://{address}");
    }
    if let Some(admin) = server.admin_addr() {
        println!("status on http://{admin}/status");
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received: shutting down");
        let _ = stop.send(true);
    });
    server.run().await
}

/// A command-line path made absolute against the working directory.
fn absolute(path: Option<&std::path::Path>) -> anyhow::Result<Option<PathBuf>> {
    path.map(|path| {
        Ok(std::env::current_dir()
            .context("reading the working directory")?
            .join(path))
    })
    .transpose()
}

async fn plugin_command(command: PluginCommand) -> anyhow::Result<()> {
    use plugboard::plugin::{check, template};
    match command {
        PluginCommand::Check {
            file,
            samples,
            cache_dir,
        } => {
            let cache = cache_dir.unwrap_or_else(check::default_cache_dir);
            let report = check::check(&file, samples.as_deref(), &cache).await;
            print!("{}", report.text);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            if !report.ok {
                std::process::exit(1);
            }
        }
        PluginCommand::Trace { .. } => unreachable!("run before the runtime starts"),
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let sdk = sdk.unwrap_or_else(template::default_sdk_path);
            let (root, files) =
                template::new_project(&name, lang, &dir, &sdk).map_err(anyhow::Error::msg)?;
            println!("created {}:", root.display());
            for f in files {
                println!("  {}", f.display());
            }
        }
    }
    Ok(())
}

/// `plugboard plugin trace`: asks the admin listener (of `config` unless `--admin` names it).
fn trace_command(command: Option<Command>, config: Option<Config>) -> anyhow::Result<()> {
    let Some(Command::Plugin {
        command:
            PluginCommand::Trace {
                name,
                sample,
                off,
                last,
                admin,
            },
    }) = command
    else {
        unreachable!("called for `plugin trace` only")
    };
    let address = admin
        .or(config.as_ref().and_then(|c| c.admin_listen))
        .context("no admin listener: pass --admin ADDR, or --config FILE with admin_listen set")?;
    let token = std::env::var("PLUGBOARD_ADMIN_TOKEN")
        .ok()
        .or(config.and_then(|c| c.admin_token));
    let switch = match (sample, off) {
        (Some(rate), _) => {
            plugboard::plugin::trace::check_rate(rate).map_err(anyhow::Error::msg)?;
            TraceSwitch::Sample(rate)
        }
        (None, true) => TraceSwitch::Sample(0.0),
        (None, false) => TraceSwitch::Keep,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let text = runtime.block_on(plugboard::http::client::plugin_trace(
        address,
        token.as_deref(),
        &name,
        switch,
        last,
    ))?;
    // A closed pipe (`| head`) is not an error worth a panic.
    use std::io::Write;
    let _ = write!(std::io::stdout(), "{text}");
    Ok(())
}

/// `plugboard hash-password`: the password from stdin, its PHC string on stdout.
fn hash_password(cost: plugboard::password::Cost) -> anyhow::Result<()> {
    use plugboard::password;
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let at_terminal = stdin.is_terminal();
    if at_terminal {
        eprint!("password (it shows as you type; end with Enter): ");
    }
    let password =
        password::read_password(stdin.lock(), at_terminal).map_err(anyhow::Error::msg)?;
    let phc = password::hash(&password, cost).map_err(anyhow::Error::msg)?;
    println!("{phc}");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
