//! The `grok2api` binary: read settings and environment, set up logging and the runtime, serve.

use anyhow::Context;
use grok2api::config::Startup;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let startup = match Startup::load(&|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("grok2api: cannot start: {e}");
            std::process::exit(2);
        }
    };
    init_logging(
        &startup.settings.global.log_level,
        &startup.settings.global.log_format,
    );
    for w in &startup.warnings {
        tracing::warn!("{w}");
    }

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = startup.workers {
        rt.worker_threads(n);
    }
    let rt = rt.build().context("cannot start the async runtime")?;
    rt.block_on(async {
        if let Err(e) = grok2api::server::run(startup, shutdown_signal()).await {
            tracing::error!("{e}");
            eprintln!("grok2api: {e}");
            std::process::exit(1);
        }
    });
    Ok(())
}

fn init_logging(level: &str, format: &str) {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        other => other.to_string(),
    };
    // RUST_LOG, when set, wins: it allows per-module filters.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hyper=warn,reqwest=warn")));
    // Colour only for a person at a terminal; files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
