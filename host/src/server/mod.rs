//! Wiring and lifecycle: build the services from the settings, serve, and shut down in order
//! (stop accepting → drain in-flight requests, bounded → stop background tasks → flush state).

mod conn;

#[doc(hidden)]
pub use conn::check_request_head;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use thiserror::Error;

use crate::api::{App, AppInner, AppState};
use crate::auth::Sessions;
use crate::calllog::{CallLog, CallLogOptions};
use crate::config::{Live, Startup};
use crate::proxy::{PoolOptions, ProxyPool};
use crate::storage::{FileStorage, Storage, StorageError};
use crate::tokens::TokenPool;
use crate::upstream::{Forwarder, UpstreamConfig};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("egress: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("plugins: {0}")]
    Plugins(#[from] crate::plugins::PluginError),
    #[error("settings: {0}")]
    Settings(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Runs the gateway until `shutdown` resolves, then drains and flushes.
pub async fn run(
    startup: Startup,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with(startup, shutdown, None).await
}

/// [`run`] with a hook that changes the log level when `global.log_level` changes at run time.
pub async fn run_with(
    startup: Startup,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    log_level: Option<crate::live::LogLevelHook>,
) -> Result<(), ServerError> {
    let settings = Arc::new(startup.settings.clone());
    let live = Arc::new(Live::new(startup.settings.clone()));
    let metrics = crate::telemetry::install();
    let storage: Arc<dyn Storage> = crate::storage::open(
        startup.storage_mode,
        startup.database_url.as_ref().map(|u| u.expose()),
        &startup.data_dir,
        settings.global.log_max_count,
    )
    .await?;
    if let Some(shared) = storage.shared() {
        // Disaster recovery: an empty shared store starts from the snapshot under `data/`.
        if shared.claim_first_start().await? {
            let files = FileStorage::new(&startup.data_dir)?;
            let copied = crate::storage::transfer::copy_all(&files, storage.as_ref()).await?;
            tracing::info!(%copied, dir = %startup.data_dir.display(), "empty shared store: imported the data directory");
        }
    }

    let tokens = Arc::new(TokenPool::load(storage.clone()).await?);
    let sessions = Sessions::load(storage.clone()).await?;
    let proxies = Arc::new(ProxyPool::new(
        PoolOptions::from_settings(&settings.grok)?,
        storage.clone(),
    )?);
    {
        let tokens = tokens.clone();
        proxies
            .load_state(&move |key: &str| tokens.find(key).map(|t| t.id.clone()))
            .await?;
    }
    if storage.shared().is_some() {
        // Sets the merge bases, so the first push writes only real changes.
        tokens.pull_shared().await?;
        proxies.pull_shared().await?;
    }
    // The webhooks' channel exists before the call log starts, so no entry is missed; the dispatcher reading
    // it starts once the plugins are loaded.
    let webhook_policy = settings
        .global
        .webhook_policy()
        .map_err(|e| ServerError::Settings(format!("global.webhook_allow/deny: {e}")))?;
    let (feed, feed_rx) = if settings.global.log_webhook_url.expose().trim().is_empty()
        && settings.plugins.webhooks.is_empty()
    {
        (None, None)
    } else {
        let (f, r) = crate::webhook::feed();
        (Some(f), Some(r))
    };
    let calllog = CallLog::start(
        storage.clone(),
        &tokens,
        CallLogOptions {
            max_count: settings.global.log_max_count,
            flush_interval: settings.global.log_flush_every(),
            log_models_calls: settings.global.log_models_calls,
            metrics_per_token: settings.global.metrics_per_token,
            webhooks: feed,
        },
    )
    .await?;
    // Plugins load before serving, so a configured hook is active from the first request; the watcher then
    // swaps versions as files change.
    let plugins = crate::plugins::Registry::new(&settings.plugins, &startup.data_dir)?;
    {
        let plugins = plugins.clone();
        tokio::task::spawn_blocking(move || plugins.load_all())
            .await
            .map_err(|e| ServerError::Settings(format!("plugin loading failed: {e}")))?;
    }
    // The hooks' handles always call the version currently loaded, so they are installed once; while a plugin
    // is missing, failing or disabled its slot answers an error and the built-in decides.
    proxies.set_selector(plugins.selector());
    proxies.set_parser(plugins.pool_parser());
    plugins.set_direct_allowed(proxies.direct_allowed());
    let webhooks = match feed_rx {
        Some(rx) => {
            let sinks = crate::webhook::sinks(&settings.global, plugins.webhooks());
            let d = crate::webhook::Dispatcher::start(
                &startup.data_dir,
                rx,
                sinks,
                webhook_policy,
                crate::webhook::Options::from_settings(&settings.global),
                settings.global.log_webhook_url.expose().trim(),
            )?;
            let names: Vec<String> = d.status().sinks.into_iter().map(|s| s.name).collect();
            tracing::info!(webhooks = ?names, "call-log webhooks on");
            Some(d)
        }
        None => None,
    };
    // Without a watcher plugins still load at start-up and on POST /api/plugins/reload.
    let plugin_watcher = match crate::plugins::Watcher::start(plugins.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "plugin hot reload is off: cannot watch the plugin directory");
            None
        }
    };
    let upstream = UpstreamConfig::new(live.get()).map_err(ServerError::Settings)?;
    let forwarder = Forwarder::new(upstream, tokens.clone(), proxies.clone(), calllog.clone());

    let settings_manager = crate::live::Manager::new(
        live.clone(),
        startup.settings_path.clone(),
        startup.overrides.clone(),
        log_level,
    );
    let rate_limit = crate::api::ratelimit::ClientRateLimit::from_settings(&live.get().global);
    let _rate_limit_cleanup = rate_limit.as_ref().map(|l| l.spawn_cleanup());
    let state = AppState(Arc::new(AppInner {
        settings: live.clone(),
        settings_manager,
        forwarder,
        tokens: tokens.clone(),
        sessions,
        calllog: calllog.clone(),
        metrics,
        plugins,
        webhooks: webhooks.clone(),
        storage_mode: startup.storage_mode,
        started: Instant::now(),
        rate_limit: rate_limit.clone(),
    }));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = vec![tokio::spawn(
        tokens
            .clone()
            .run_saver(settings.global.batch_save_every(), stop_rx.clone()),
    )];
    background
        .extend(proxies.spawn_background(settings.global.batch_save_every(), stop_rx.clone()));
    if storage.shared().is_some() {
        background.push(tokio::spawn(crate::sync::run(
            storage.clone(),
            tokens.clone(),
            proxies.clone(),
            stop_rx.clone(),
        )));
    }

    // setting.toml edits apply live; without a watcher the admin API still does.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<()>(1);
    let settings_watcher = match crate::live::SettingsWatcher::start(
        &startup.settings_path,
        move || {
            let _ = reload_tx.try_send(());
        },
    ) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "settings file is not watched: edits need a restart or the admin API");
            None
        }
    };
    {
        let state = state.clone();
        let mut stop = stop_rx.clone();
        background.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = reload_rx.recv() => match r {
                        Some(()) => state.settings_manager.reload_file(&state.0).await,
                        None => break,
                    },
                    _ = stop.changed() => break,
                }
            }
        }));
    }

    let addr = format!("{}:{}", settings.global.host, settings.global.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(
        addr = %local,
        storage = startup.storage_mode.as_str(),
        tokens = tokens.len(),
        proxies = proxies.len(),
        direct_allowed = proxies.direct_allowed(),
        upstream = %settings.grok.base_url,
        "grok2api listening"
    );

    let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(());
    });
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let limits = ConnLimits::from_settings(&settings.global);
    let app = App::new(state);
    let mut serve = tokio::spawn(accept_loop(listener, app, limits, drain_rx));

    tokio::select! {
        r = &mut serve => {
            // The server ended on its own: an error; still flush what we have.
            let r = r.map_err(|e| ServerError::Serve(std::io::Error::other(e))).and_then(|r| r.map_err(ServerError::Serve));
            flush(&tokens, &proxies, &calllog, webhooks.as_ref(), &stop_tx, background).await;
            return r;
        }
        _ = signal_rx => {}
    }

    let grace = live.load().global.shutdown_grace();
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = drain_tx.send(true);
    match tokio::time::timeout(grace, &mut serve).await {
        Ok(_) => tracing::info!("all requests finished"),
        Err(_) => {
            tracing::warn!("grace period over; closing the remaining connections");
            serve.abort();
        }
    }
    flush(
        &tokens,
        &proxies,
        &calllog,
        webhooks.as_ref(),
        &stop_tx,
        background,
    )
    .await;
    drop(plugin_watcher);
    drop(settings_watcher);
    tracing::info!("bye");
    Ok(())
}

async fn flush(
    tokens: &TokenPool,
    proxies: &ProxyPool,
    calllog: &CallLog,
    webhooks: Option<&crate::webhook::Dispatcher>,
    stop_tx: &tokio::sync::watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
) {
    let _ = stop_tx.send(true);
    for task in background {
        let _ = task.await;
    }
    calllog.shutdown().await;
    let q = calllog.queue_stats();
    tracing::info!(recorded = q.recorded, dropped = q.dropped, "call log saved");
    // After the call log: its last entries are in the webhooks' channel by now.
    if let Some(w) = webhooks {
        w.shutdown().await;
    }
    if let Err(e) = proxies.save_if_dirty().await {
        tracing::error!(error = %e, "saving proxy state at shutdown failed");
    }
    match tokens.save_if_dirty().await {
        Ok(true) => tracing::info!("token state saved"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "saving token state at shutdown failed"),
    }
}

/// Connection-level limits from `[global]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// 0 = no limit.
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_settings(g: &crate::config::GlobalSettings) -> ConnLimits {
        ConnLimits {
            header_read_timeout: g.header_read_timeout(),
            max_header_bytes: g.max_header_bytes,
            max_connections: g.max_connections,
        }
    }
}

/// Accepts and serves HTTP/1.1 connections until `drain` turns true, then waits for the open ones to finish
/// their requests. Our own loop rather than `axum::serve`, which has no header read timeout (slow-loris),
/// header size limit or connection cap.
///
/// Over `max_connections` the loop stops accepting: new connections wait in the kernel's listen backlog
/// instead of being accepted and closed, so a short burst is absorbed rather than failed.
pub async fn accept_loop(
    listener: TcpListener,
    app: App,
    limits: ConnLimits,
    mut drain: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // One flat buffer per write: cheaper than hyper's iovec queue for our small frames (SSE chunks,
        // 1 KB answers): -2.5 % instructions per streamed request.
        .writev(false);
    // Used by the connections that `conn` hands to hyper.
    let http = Arc::new(http);
    let slots =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    // Every connection task holds a receiver; `closed()` on the sender tells when the last one ended.
    let (open_tx, open_rx) = watch::channel(());
    let mut stopping = std::pin::pin!(async move {
        let _ = drain.wait_for(|v| *v).await;
    });
    loop {
        let permit = match &slots {
            Some(s) => tokio::select! {
                p = s.clone().acquire_owned() => p.ok(),
                _ = &mut stopping => break,
            },
            None => None,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut stopping => break,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Without TCP_NODELAY small SSE frames wait for delayed ACKs (~40 ms each).
        let _ = tcp.set_nodelay(true);
        // Held for the connection's life: counts it as open, and says when to drain.
        let drain = open_tx.subscribe();
        let open = metrics::gauge!("grok2api_connections_open");
        open.increment(1.0);
        let serve = conn::serve(tcp, addr, app.clone(), http.clone(), limits, drain);
        tokio::spawn(async move {
            serve.await;
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    drop(open_rx);
    // Tells every connection to finish its request in flight and close.
    open_tx.send_replace(());
    open_tx.closed().await;
    Ok(())
}

/// hyper's service for a connection: every request through [`App::serve`], with its request id.
fn service(
    app: App,
    addr: std::net::SocketAddr,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<axum::response::Response, std::convert::Infallible>,
    > + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let id = crate::api::request_id(req.headers());
        // Checked when it was read or made: a visible-ASCII string is a valid header value.
        let header = http::HeaderValue::from_str(id.as_str()).ok();
        // Boxed once here: the handler's future is several KB, and hyper moves the service's future.
        let answer = Box::pin(app.clone().serve(addr, id, req));
        async move {
            let mut resp = answer.await;
            if let Some(v) = header {
                resp.headers_mut().insert("x-request-id", v);
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    })
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
