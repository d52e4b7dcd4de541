//! The benchmark baseline: the smallest useful Pingora proxy. One fixed upstream, no filters,
//! one worker thread, Pingora's default keep-alive pooling, mimalloc like clawgate.
//!
//! Usage: `bare_pingora LISTEN_ADDR UPSTREAM_ADDR`, e.g.
//! `bare_pingora 127.0.0.1:6190 127.0.0.1:8000`. Used by `load-tests/bench.sh`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} LISTEN_ADDR UPSTREAM_ADDR", args[0]);
        std::process::exit(2);
    }
    let listen = args[1].clone();
    let upstream: SocketAddr = match args[2].parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bad UPSTREAM_ADDR {:?}: {e}", args[2]);
            std::process::exit(2);
        }
    };

    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
