//! Assembles the Pingora server from the configuration: server options, listeners, TLS, the
//! proxy service, and a background task that ends a graceful stop as soon as requests are done.

use crate::connections::Guarded;
use crate::proxy::{Gateway, IN_FLIGHT};
use crate::runtime::{Config, Process, Services};
use crate::{process, upstream};
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub struct StartOptions {
    pub upgrade: bool,
}

/// What would make the start fail half-way, found before anything is started. An upgrade takes
/// the listeners and the pid file over from the running process, so those are not checked then.
fn check_before_start(config: &Config, opts: &StartOptions) -> Result<(), String> {
    if let Some(missing) =
        (!config.pending_features.is_empty()).then(|| config.pending_features.join(", "))
    {
        return Err(format!(
            "{}: this build of clawgate does not provide {missing} yet; refusing to start rather \
             than serve routes without them",
            config.source.display()
        ));
    }
    if !opts.upgrade {
        for addr in &config.process.listen {
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {}", e.kind()))?;
        }
        if let Some(pid) = process::running_pid(&config.process.pid_file) {
            return Err(format!(
                "clawgate is already running with pid {pid} (pid file {})",
                config.process.pid_file
            ));
        }
    }
    Ok(())
}

/// The Pingora server, bootstrapped (which takes the listeners over on an upgrade).
fn pingora_server(p: &Process, opts: &StartOptions) -> Server {
    // `--daemon` is handled by the CLI (process::spawn_daemon), which re-runs us in the
    // foreground detached from the terminal; Pingora's own fork would lose threads started before
    // it and release its parent before the listeners are up.
    let conf = ServerConf {
        pid_file: p.pid_file.clone(),
        upgrade_sock: p.upgrade_sock.clone(),
        threads: p.threads,
        grace_period_seconds: Some(p.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(p.shutdown_timeout.as_secs().max(1)),
        upstream_keepalive_pool_size: p.upstream_pool_size,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    server
}

/// Reloads of the configuration, and backend discovery and health checks.
fn add_upkeep(
    server: &mut Server,
    current: &Arc<arc_swap::ArcSwap<Config>>,
    services: &Arc<Services>,
) {
    server.add_service(background_service(
        "reload",
        crate::reload::Reloader {
            current: current.clone(),
            services: services.clone(),
        },
    ));
    server.add_service(background_service(
        "backends",
        crate::runtime::health::Maintainer {
            current: current.clone(),
            metrics: services.metrics.clone(),
        },
    ));
}

/// Runs the gateway until it is stopped. Errors are one readable sentence.
pub fn run(config: Config, opts: StartOptions) -> Result<(), String> {
    check_before_start(&config, &opts)?;
    upstream::resolve_all_blocking(&config);
    let mut server = pingora_server(&config.process, &opts);
    let services = Arc::new(Services::build(&config)?);
    let config = Arc::new(config);
    let current = Arc::new(arc_swap::ArcSwap::new(config.clone()));
    add_upkeep(&mut server, &current, &services);
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway::new(current.clone(), services.clone()),
    );
    let mut proxy = Service::new("clawgate".into(), guarded(proxy, &config, &services));
    add_listeners(&mut proxy, &config.process)?;
    server.add_service(proxy);
    if let Some(store) = &config.auth.store {
        store.watch();
    }
    add_outbound(&mut server, &services);
    let p = &config.process;
    let started = format!(
        "clawgate {} started: {} on {}",
        env!("CARGO_PKG_VERSION"),
        config.name,
        p.listen.join(", ")
    );
    if let Some(log) = &services.access_log {
        log.check()
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        log.start();
        log.write(&crate::observe::access_log::event("info", &started));
    }
    if let Some(jwt) = config.auth.jwt.clone().filter(|j| j.jwks.is_some()) {
        start_jwks(&mut server, jwt);
    }
    add_metrics_listener(&mut server, &config, &services);
    add_console(&mut server, &config, &current, &services);
    server.add_service(background_service(
        "drain",
        Drain {
            pid_file: p.pid_file.clone(),
            services: services.clone(),
        },
    ));
    process::write_pid_file(&p.pid_file)
        .map_err(|e| format!("cannot write the pid file {}: {e}", p.pid_file))?;
    log::info!("{started}");
    server.run(RunArgs::default());
    process::remove_pid_file_if_ours(&config.process.pid_file);
    Ok(())
}

/// The proxy behind the connection limits, with its HTTP options: h2c when asked, the idle
/// timeout of HTTP/2 connections, and h2's limits (Pingora's bounds on header lists and
/// concurrent streams kept).
fn guarded(
    mut proxy: HttpProxy<Gateway>,
    config: &Config,
    services: &Services,
) -> Guarded<HttpProxy<Gateway>> {
    let p = &config.process;
    let h2c = p.h2c && p.tls.is_none();
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = h2c;
    options.h2_idle_timeout = Some(p.idle_timeout);
    proxy.server_options = Some(options);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(config.max_header_size.min(u32::MAX as u64) as u32);
    proxy.h2_options = Some(h2);
    let settings = crate::connections::Settings {
        max_connections: p.max_connections,
        max_connections_per_ip: p.max_connections_per_ip,
        header_read_timeout: p.header_read_timeout,
        idle_timeout: p.idle_timeout,
        trusted_proxies: config.trusted_proxies.clone(),
        h2c,
    };
    Guarded::new(proxy, settings, services.h2_conns.clone())
}

/// The proxy's listeners: TLS when configured, else plain TCP (with HTTP/2 cleartext if asked).
fn add_listeners(
    proxy: &mut Service<Guarded<HttpProxy<Gateway>>>,
    p: &Process,
) -> Result<(), String> {
    for addr in &p.listen {
        match &p.tls {
            Some(files) => {
                let mut tls = TlsSettings::intermediate(&files.cert, &files.key)
                    .map_err(|e| format!("cannot use the TLS certificate {}: {e}", files.cert))?;
                tls.enable_h2();
                proxy.add_tls_with_settings(addr, None, tls);
            }
            None => proxy.add_tcp(addr),
        }
    }
    Ok(())
}

/// What talks to other systems from the start: trace export, and the warm-up of the Redis stores
/// (limits and cache).
fn add_outbound(server: &mut Server, services: &Arc<Services>) {
    if let Some(t) = services.tracing.as_ref().filter(|t| t.endpoint.is_some()) {
        server.add_service(background_service(
            "tracing-export",
            crate::observe::trace::Exporter(t.clone()),
        ));
    }
    if services.limits.store.is_some() || services.cache.is_some_and(|c| c.redis.is_some()) {
        server.add_service(background_service(
            "redis-stores",
            StoreWarmUp {
                services: services.clone(),
            },
        ));
    }
}

/// `admin`: the console's listener, and the ticker that samples its figures each second.
fn add_console(
    server: &mut Server,
    config: &Config,
    current: &Arc<arc_swap::ArcSwap<Config>>,
    services: &Arc<Services>,
) {
    let (Some(settings), Some(stats)) = (&config.admin, &services.console) else {
        return;
    };
    let app = crate::console::ConsoleApp {
        config: current.clone(),
        services: services.clone(),
        stats: stats.clone(),
        token: settings.token.clone(),
    };
    let mut service = Service::new("admin".into(), app);
    service.add_tcp(&settings.listen);
    server.add_service(service);
    let ticker = crate::console::Ticker(stats.clone());
    server.add_service(background_service("console-ticker", ticker));
}

/// `monitoring.metrics.listen`: the metrics endpoint on a port of its own, when set.
fn add_metrics_listener(server: &mut Server, config: &Config, services: &Services) {
    if let (Some(metrics), Some(addr)) = (&services.metrics, &config.metrics_listen) {
        let mut service = Service::new(
            "metrics".into(),
            MetricsApp {
                metrics: metrics.clone(),
                path: config.metrics_path.clone(),
            },
        );
        service.add_tcp(addr);
        server.add_service(service);
    }
}

/// `monitoring.metrics.listen`: the metrics endpoint on a port of its own.
struct MetricsApp {
    metrics: Arc<crate::observe::metrics::Metrics>,
    path: String,
}

#[async_trait]
impl pingora::apps::http_app::ServeHttp for MetricsApp {
    async fn response(
        &self,
        session: &mut pingora::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        let (status, content_type, body) = if session.req_header().uri.path() != self.path {
            (
                404,
                "application/json",
                crate::proxy::Refusal::NoEndpoint.body("").to_vec(),
            )
        } else {
            self.metrics
                .active
                .set(IN_FLIGHT.load(Ordering::Relaxed) as i64);
            (200, "text/plain; version=0.0.4", self.metrics.render())
        };
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

/// Loads an identity provider's keys before serving, then keeps them fresh in the background.
fn start_jwks(server: &mut Server, jwt: Arc<crate::auth::jwt::Jwt>) {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(jwt.reload_jwks()));
    let source = jwt.jwks.as_ref().map(|j| j.describe()).unwrap_or_default();
    match first {
        Ok(Ok(n)) => log::info!("JWKS {source}: {n} keys"),
        Ok(Err(e)) => log::error!("JWKS not loaded, retried on schedule and on unknown kids: {e}"),
        Err(e) => log::error!("JWKS not loaded: {e}"),
    }
    server.add_service(background_service("jwks", JwksRefresh { jwt }));
}

struct StoreWarmUp {
    services: Arc<Services>,
}

#[async_trait]
impl BackgroundService for StoreWarmUp {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(store) = &self.services.limits.store {
            store.warm_up().await;
        }
        if let Some(cache) = self.services.cache.and_then(|c| c.redis) {
            cache.link.warm_up().await;
        }
        if let Some(store) = &self.services.semantic_store {
            store.warm_up().await;
        }
        // Lease mode: slices unused after `max_ttl` go back to Redis for the other instances.
        let limits = &self.services.limits;
        let Some(every) = limits.sweep_every.filter(|_| limits.store.is_some()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            limits.sweep_leases().await;
        }
    }
}

struct JwksRefresh {
    jwt: Arc<crate::auth::jwt::Jwt>,
}

#[async_trait]
impl BackgroundService for JwksRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(every) = self.jwt.jwks.as_ref().map(|j| j.refresh) else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.jwt.reload_jwks().await {
                log::warn!("JWKS refresh failed, the known keys stay: {e}");
            }
        }
    }
}

/// After a stop or upgrade begins, exits as soon as no request is in flight; Pingora's own
/// grace period (which always sleeps in full) remains the upper bound.
struct Drain {
    pid_file: String,
    services: Arc<Services>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        // Let connections that were accepted just before the listeners closed send their request.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while IN_FLIGHT.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log::info!("all requests done; exiting");
        // What this instance leased and did not spend is the other instances' to use.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.services.limits.return_leases())
            .await;
        if let Some(t) = &self.services.tracing {
            t.flush().await;
        }
        if let Some(log) = &self.services.access_log {
            log.write(&crate::observe::access_log::event(
                "info",
                "clawgate stopped",
            ));
            log.flush(Duration::from_secs(2)).await;
        }
        process::remove_pid_file_if_ours(&self.pid_file);
        std::process::exit(0);
    }
}
