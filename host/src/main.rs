//! The `grok2api` binary: command line, logging, the runtime, and the subcommands.
//!
//! Exit codes scripts can rely on: 0 success, 1 a runtime failure (storage, network, bind), 2 bad usage or
//! bad settings. `plugin check`: 1 when the plugin fails a step, 2 when the file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use grok2api::config::{Settings, Startup};
use grok2api::storage::{FileStorage, Storage, StorageError, TokenFile};
use grok2api::tokens::{TokenKind, TokenPool};
use tracing_subscriber::EnvFilter;

// glibc malloc was about a sixth of the per-request instructions in profiles; mimalloc is built for many small,
// short-lived allocations like a request's. (Its effect on the soak's RSS growth is not yet measured.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its arenas up front; where transparent huge pages are "always" (a common default) each
/// first touch then makes 2 MiB resident. Idle RSS was 27.5 MB with them and 20.8 MB without, at no measured
/// cost in throughput. `MIMALLOC_ALLOW_THP=1` in the environment keeps them.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process; no memory is touched.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "grok2api",
    version,
    about = "OpenAI-compatible gateway in front of Grok"
)]
struct Cli {
    /// Directory of state files and setting.toml (env DATA_DIR; default `data`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Settings file (default DATA_DIR/setting.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Check a settings file and print what would be used; exit 2 when it is invalid.
    CheckConfig {
        /// The file to check (default: the one `serve` would read).
        path: Option<PathBuf>,
    },
    /// Manage the token pool offline (while the gateway is stopped; a running one uses the admin API).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Copy all state (tokens, proxies, bindings, sessions, call log) from the configured store
    /// (STORAGE_MODE, DATABASE_URL) to files in a directory.
    Export {
        /// Directory to write (default: the data directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replace all state in the configured store with the files of a directory.
    Import {
        /// Directory to read (default: the data directory).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Check WASM plugins before deploying them.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Internal: the gateway runs this to compile a plugin (the component on stdin) into `out`, so compiling
    /// leaves nothing behind in the gateway's memory.
    #[command(name = "__compile-plugin", hide = true)]
    CompilePlugin {
        #[arg(long)]
        memory_bytes: usize,
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a component with the gateway's engine and limits ([plugins] timeout_ms, memory_mb), print the hook
    /// it implements and its metadata, run `init` and one trial call. Exit 0 ok, 1 the plugin failed, 2 bad
    /// usage or an unreadable file.
    Check {
        file: PathBuf,
        /// JSON given to the plugin's `init` (default: its [plugins.config.NAME] table, else `{}`).
        /// (`--config` names the settings file.)
        #[arg(long, value_name = "JSON")]
        init_config: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Import tokens from a file: one per line, or a Grok2API token.json.
    Import {
        file: PathBuf,
        /// Pool for one-per-line files: sso (normal) or ssoSuper.
        #[arg(long, default_value = "sso")]
        token_type: String,
    },
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let data_dir = cli.data_dir.clone();
    let config = cli.config.clone();
    let env = move |k: &str| match k {
        "DATA_DIR" if data_dir.is_some() => data_dir.as_ref().map(|d| d.display().to_string()),
        "SETTINGS_FILE" if config.is_some() => config.as_ref().map(|c| c.display().to_string()),
        _ => std::env::var(k).ok(),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&env),
        Command::CheckConfig { path } => check_config(&env, path),
        Command::Tokens {
            command: TokensCommand::Import { file, token_type },
        } => import_tokens(&env, &file, &token_type),
        Command::Export { out } => transfer(&env, out, true),
        Command::Import { from } => transfer(&env, from, false),
        Command::Plugin {
            command: PluginCommand::Check { file, init_config },
        } => plugin_check(&env, &file, init_config),
        Command::CompilePlugin { memory_bytes, out } => compile_plugin(memory_bytes, &out),
    }
}

fn compile_plugin(memory_bytes: usize, out: &std::path::Path) -> ExitCode {
    use std::io::Read;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read the component: {e}");
        return ExitCode::from(2);
    }
    match grok2api::plugins::compile_child(memory_bytes, &input, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Startup, ExitCode> {
    Startup::load(env).map_err(|e| {
        eprintln!("grok2api: cannot start: {e}");
        ExitCode::from(2)
    })
}

/// `WORKERS=1` gets a single-threaded runtime: with one worker, the multi-threaded scheduler's stealing and
/// parking machinery is pure overhead (measured: +21–30 % requests/s at c=64 on one pinned core).
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == Some(1) {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = workers {
        rt.worker_threads(n);
    }
    rt.build()
}

fn serve(env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    let startup = match load(env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Held until exit: dropping it flushes the log lines still queued.
    let (_log_guard, log_level) = init_logging(
        &startup.settings.global.log_level,
        &startup.settings.global.log_format,
    );
    for w in &startup.warnings {
        tracing::warn!("{w}");
    }
    if let Ok(exe) = std::env::current_exe() {
        grok2api::plugins::compile_in_child_process(exe);
    }
    let rt = match runtime(startup.workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grok2api: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match grok2api::server::run_with(startup, shutdown_signal(), log_level).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("grok2api: {e}");
                match e {
                    grok2api::server::ServerError::Storage(StorageError::Config(_)) => {
                        ExitCode::from(2)
                    }
                    _ => ExitCode::from(1),
                }
            }
        }
    })
}

fn check_config(env: &dyn Fn(&str) -> Option<String>, path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        return match load(env) {
            Ok(s) => {
                for w in &s.warnings {
                    println!("warning: {w}");
                }
                println!(
                    "ok: {} (storage: {})",
                    s.settings_path.display(),
                    s.storage_mode.as_str()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        };
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("grok2api: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    match Settings::from_toml(&text, &path).and_then(|(s, w)| {
        s.validate(&path.display().to_string())?;
        Ok(w)
    }) {
        Ok(warnings) => {
            for w in warnings {
                println!("warning: {w}");
            }
            println!("ok: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("grok2api: {e}");
            ExitCode::from(2)
        }
    }
}

fn import_tokens(
    env: &dyn Fn(&str) -> Option<String>,
    file: &PathBuf,
    token_type: &str,
) -> ExitCode {
    let startup = match load(env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(kind) = TokenKind::parse(token_type) else {
        eprintln!("grok2api: --token-type must be sso or ssoSuper, got `{token_type}`");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("grok2api: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    // A Grok2API token.json brings its own pools; anything else is one token per line.
    let batches: Vec<(TokenKind, Vec<String>)> = match serde_json::from_str::<TokenFile>(&text) {
        Ok(mut f) if text.trim_start().starts_with('{') => {
            f.migrate_legacy();
            vec![
                (TokenKind::Normal, f.sso_normal.into_keys().collect()),
                (TokenKind::Super, f.sso_super.into_keys().collect()),
            ]
        }
        _ if text.trim_start().starts_with('{') => {
            eprintln!(
                "grok2api: {} looks like JSON but is not a token.json",
                file.display()
            );
            return ExitCode::from(2);
        }
        _ => vec![(kind, text.lines().map(str::to_string).collect())],
    };
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grok2api: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let storage = match open_store(&startup).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let pool = match TokenPool::load(storage).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("grok2api: {e}");
                return ExitCode::from(1);
            }
        };
        let (mut added, mut existing, mut invalid) = (0, 0, 0);
        for (kind, secrets) in batches {
            let r = pool.add(&secrets, kind).await;
            added += r.added;
            existing += r.existing;
            invalid += r.skipped_invalid;
        }
        if invalid > 0 {
            eprintln!(
                "grok2api: skipped {invalid} tokens with characters an HTTP header cannot carry"
            );
        }
        if let Err(e) = pool.save_if_dirty().await {
            eprintln!("grok2api: saving tokens failed: {e}");
            return ExitCode::from(1);
        }
        println!(
            "imported {added} tokens ({existing} already present); pool now has {}",
            pool.len()
        );
        ExitCode::SUCCESS
    })
}

async fn open_store(startup: &Startup) -> Result<Arc<dyn Storage>, ExitCode> {
    grok2api::storage::open(
        startup.storage_mode,
        startup.database_url.as_ref().map(|u| u.expose()),
        &startup.data_dir,
        startup.settings.global.log_max_count,
    )
    .await
    .map_err(|e| {
        eprintln!("grok2api: {e}");
        match e {
            StorageError::Config(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    })
}

fn plugin_check(
    env: &dyn Fn(&str) -> Option<String>,
    file: &std::path::Path,
    init_config: Option<String>,
) -> ExitCode {
    let startup = match load(env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let plugins = &startup.settings.plugins;
    let config = match init_config {
        Some(c) => match serde_json::from_str::<serde_json::Value>(&c) {
            Ok(v) => v.to_string(),
            Err(e) => {
                eprintln!("grok2api: --init-config is not JSON: {e}");
                return ExitCode::from(2);
            }
        },
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|name| plugins.config_json(name))
            .unwrap_or_else(|| "{}".into()),
    };
    println!("file: {}", file.display());
    match grok2api::plugins::check_file(file, plugins, &config) {
        Ok(r) => {
            println!("sha256: {}", r.sha256);
            println!(
                "world: {} (hook: {})",
                r.world,
                match r.kind {
                    grok2api::plugins::Kind::Selector => "plugins.selector",
                    grok2api::plugins::Kind::PoolParser => "plugins.pool_parser",
                    grok2api::plugins::Kind::LogWebhook => "plugins.webhooks",
                }
            );
            println!("name: {}", r.info.name);
            println!("version: {}", r.info.version);
            println!("description: {}", r.info.description);
            println!("init: ok (config {config})");
            println!("compile: {} ms", r.compile_ms);
            println!("trial call: ok ({} ms)", r.trial_ms);
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(grok2api::plugins::CheckError::Unreadable(e)) => {
            eprintln!("grok2api: cannot read the plugin: {e}");
            ExitCode::from(2)
        }
        Err(grok2api::plugins::CheckError::Plugin(e)) => {
            println!("failed: {e}");
            eprintln!("grok2api: plugin check failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `export` (store → directory) and `import` (directory → store).
fn transfer(env: &dyn Fn(&str) -> Option<String>, dir: Option<PathBuf>, export: bool) -> ExitCode {
    let startup = match load(env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let dir = dir.unwrap_or_else(|| startup.data_dir.clone());
    if startup.storage_mode == grok2api::config::StorageMode::File && dir == startup.data_dir {
        eprintln!(
            "grok2api: STORAGE_MODE=file already keeps its state in {}; name another directory",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grok2api: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        if !export && !dir.is_dir() {
            eprintln!("grok2api: {} is not a directory", dir.display());
            return ExitCode::from(2);
        }
        let files: Arc<dyn Storage> = match FileStorage::new(&dir) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("grok2api: {e}");
                return ExitCode::from(1);
            }
        };
        let store = match open_store(&startup).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let (from, to) = if export {
            (store.as_ref(), files.as_ref())
        } else {
            (files.as_ref(), store.as_ref())
        };
        match grok2api::storage::transfer::copy_all(from, to).await {
            Ok(n) => {
                let verb = if export {
                    "exported to"
                } else {
                    "imported from"
                };
                println!("{verb} {}: {n}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("grok2api: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// `global.log_level` as a filter: our names (`WARNING`) mapped to tracing's.
fn level_filter(level: &str) -> EnvFilter {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        other => other.to_string(),
    };
    EnvFilter::new(format!("{level},hyper=warn,reqwest=warn"))
}

/// Log lines go through a bounded queue to a writer thread, so a request never waits on stdout. The filter sits
/// in a `reload` layer so `global.log_level` changes apply live (unless RUST_LOG decides).
fn init_logging(
    level: &str,
    format: &str,
) -> (
    tracing_appender::non_blocking::WorkerGuard,
    Option<grok2api::live::LogLevelHook>,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // RUST_LOG, when set, wins: it allows per-module filters.
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| level_filter(level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colour only for a person at a terminal; files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    let hook: grok2api::live::LogLevelHook = Box::new(move |level: &str| {
        if fixed {
            return Err("RUST_LOG is set and decides the log filter".into());
        }
        handle
            .reload(level_filter(level))
            .map_err(|e| e.to_string())
    });
    (guard, Some(hook))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
