//! `mock-upstream [--port N] [--host H]`: serves the mock until SIGINT/SIGTERM.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use mock_upstream::MockServer;

const USAGE: &str =
    "usage: mock-upstream [--port N] [--host H]   (env MOCK_PORT; default 127.0.0.1:9000)";

struct Args {
    host: String,
    port: u16,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut port = match std::env::var("MOCK_PORT") {
        Ok(p) if !p.trim().is_empty() => p.trim().parse().context("invalid MOCK_PORT")?,
        _ => 9000,
    };
    let mut host = "127.0.0.1".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--port" | "-p" => port = value()?.parse().context("invalid --port")?,
            "--host" => host = value()?,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    Ok(Args { host, port })
}

async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .with_context(|| format!("cannot resolve host {host}"))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let addr = resolve(&args.host, args.port).await?;
    let server = MockServer::start_on(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    {
        // Scripts wait for this line, so it must not sit in a buffer.
        let mut out = std::io::stdout().lock();
        writeln!(out, "mock-upstream listening on {}", server.base_url())?;
        out.flush()?;
    }
    shutdown_signal().await?;
    server.stop().await;
    Ok(())
}
