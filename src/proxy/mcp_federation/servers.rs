//! A federated route's servers as one request sees them: sessions opened and ended, requests
//! sent in the client's session with each server, with the client's forwarding headers.

use super::super::ctx::Ctx;
use crate::backends::{Picked, Pool};
use crate::http_client::{self, Answer, Call, Streaming, Target};
use crate::mcp::federation as fed;
use crate::mcp::route::Settings;
use crate::mcp::session::Leg;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::proxy::Session;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read whole from a server (a page of a list, a resource, a JSON result).
pub const MAX_ANSWER: usize = 8 << 20;
/// Opening a session with a server, when the route sets no `connect_timeout`: a server that
/// is slow to answer `initialize` is left out rather than holding the client's up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// A tool call, when the route sets no `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers of the client's request that never go on to a server besides those of every call
/// the gateway makes (`ctx::NEVER_PASSED`): MCP's own session and protocol headers.
const NOT_FORWARDED: [&str; 5] = [
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

pub struct Servers {
    pub settings: Arc<Settings>,
    pub pools: Vec<(String, Arc<Pool>)>,
    open_timeout: Duration,
    pub call_timeout: Duration,
    /// The protocol revision the client speaks: sent on to the servers.
    version: &'static str,
    /// The client's headers that go with every request made for it.
    forwarded: Vec<(HeaderName, HeaderValue)>,
    /// The client speaks the stateless revision: answers are completed for it.
    pub modern: bool,
}

impl Servers {
    pub fn of(session: &Session, ctx: &Ctx) -> Option<Servers> {
        let route = ctx.route()?;
        let asked = (session.req_header().headers.get("mcp-protocol-version"))
            .and_then(|v| v.to_str().ok());
        Some(Servers {
            settings: route.mcp.clone()?,
            pools: route.mcp_pools.clone(),
            open_timeout: route.connect_timeout.unwrap_or(OPEN_TIMEOUT),
            call_timeout: route.timeout.unwrap_or(CALL_TIMEOUT),
            version: fed::negotiate(asked),
            forwarded: forwarded(session, ctx),
            modern: asked == Some(fed::MODERN),
        })
    }

    /// The same servers for a client that negotiated `version` in this request.
    pub fn with_version(&self, version: &'static str) -> Servers {
        Servers {
            settings: self.settings.clone(),
            pools: self.pools.clone(),
            open_timeout: self.open_timeout,
            call_timeout: self.call_timeout,
            version,
            forwarded: self.forwarded.clone(),
            modern: self.modern,
        }
    }

    /// The position of server `name` in the route's order.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|(n, _)| n == name)
    }

    /// The legs of the client's session, one per server in the route's order: those the
    /// token names, and for the others (no token, or a server added since) a leg to open.
    pub fn legs(&self, token: Option<crate::mcp::session::Session>) -> Vec<Leg> {
        let mut known = token.map(|t| t.servers).unwrap_or_default();
        (self.pools.iter())
            .map(
                |(name, _)| match known.iter().position(|l| &l.server == name) {
                    Some(at) => known.swap_remove(at),
                    None => down(name),
                },
            )
            .collect()
    }

    /// POSTs `body` to the address of `picked`, in the server session `id` (if any); the
    /// answer's head, its body to read.
    async fn send(
        &self,
        picked: &Picked,
        id: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Streaming<'static>, String> {
        let target = self.target(picked, timeout);
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", self.version),
        ];
        if let Some(id) = id {
            headers.push(("mcp-session-id", id));
        }
        let call = Call {
            method: "POST",
            headers: &headers,
            body: Some(body),
            max_answer: MAX_ANSWER,
        };
        let sent = http_client::open(
            http_client::connector(),
            &target,
            call,
            &self.forwarded,
            timeout,
        );
        let answer = tokio::time::timeout(timeout * 2, sent)
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let ok = answer.as_ref().is_ok_and(|a| a.status < 500);
        picked.pool.report(&picked.addr, ok);
        answer
    }

    /// The server's MCP endpoint at the address picked, with its pool's connection options.
    fn target(&self, picked: &Picked, timeout: Duration) -> Target {
        let pool = &picked.pool;
        let peer = pool.peer(&picked.addr, self.open_timeout, timeout);
        let host = pool.host_for(&picked.addr).unwrap_or(&pool.host_header);
        let path = match pool.path_prefix.as_str() {
            "" => "/",
            p => p,
        };
        let host = host.to_str().unwrap_or_default().to_string();
        Target::at(peer, host, path.to_string())
    }

    /// Opens a session with server `i` on one of its addresses: `initialize`, then
    /// `notifications/initialized`. A server that fails gets a leg without an address. The
    /// second value: the capabilities the server offered.
    pub async fn open(&self, i: usize) -> (Leg, Option<Value>) {
        let Some((name, pool)) = self.pools.get(i) else {
            return (down(""), None);
        };
        let Some(picked) = pool.select(&[], &[]) else {
            return (down(name), None);
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": self.version,
            "capabilities": {},
            "clientInfo": {"name": "clawgate", "version": env!("CARGO_PKG_VERSION")},
        }});
        let body = Bytes::from(init.to_string());
        let sent = self.send(&picked, None, body, self.open_timeout);
        let answer = match whole(sent.await, self.open_timeout).await {
            Ok(a) if a.status == 200 => a,
            Ok(a) => {
                log::warn!("MCP server {name}: initialize answered {}", a.status);
                return (down(name), None);
            }
            Err(e) => {
                log::warn!("MCP server {name}: {e}");
                return (down(name), None);
            }
        };
        let Ok(result) = fed::result_of(content_type(&answer.headers), &answer.body, &json!(0))
        else {
            log::warn!("MCP server {name}: initialize was not answered with a result");
            return (down(name), None);
        };
        let id = (answer.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let done = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let sent = self.send(&picked, id.as_deref(), done, self.open_timeout);
        if let Err(e) = whole(sent.await, self.open_timeout).await {
            log::warn!("MCP server {name}: notifications/initialized: {e}");
        }
        let leg = Leg {
            server: name.clone(),
            addr: picked.addr.label.clone(),
            session: id,
        };
        (leg, result.get("capabilities").cloned())
    }

    /// Sends `body` to server `i` in the client's session with it. A leg without an address
    /// (the server was down at `initialize`) gets a session for this request only, as the
    /// client's token cannot change; so does a session the server no longer knows (404: it
    /// restarted) or whose address is gone. Nothing is sent twice after a failed exchange, as
    /// the server may have acted on it. The second value: a session opened for this request.
    pub async fn exchange(
        &self,
        i: usize,
        leg: &Leg,
        body: Bytes,
        timeout: Duration,
    ) -> (Result<Streaming<'static>, String>, Option<Leg>) {
        let pool = self.pools.get(i).map(|(_, p)| p);
        let held = (!leg.addr.is_empty())
            .then(|| pool.and_then(|p| p.pick(&leg.addr)))
            .flatten();
        if let Some(picked) = held {
            let sent = self.send(&picked, leg.session.as_deref(), body.clone(), timeout);
            match sent.await {
                Ok(a) if a.status == 404 && leg.session.is_some() => {}
                other => return (other, None),
            }
        }
        let (fresh, _) = self.open(i).await;
        let Some(picked) = pool.and_then(|p| p.pick(&fresh.addr)) else {
            return (Err("unavailable".into()), None);
        };
        let sent = self.send(&picked, fresh.session.as_deref(), body, timeout);
        (sent.await, Some(fresh))
    }

    /// `exchange` with the answer read whole.
    pub async fn exchange_whole(
        &self,
        i: usize,
        leg: &Leg,
        body: Bytes,
    ) -> (Result<Answer, String>, Option<Leg>) {
        let (sent, fresh) = self.exchange(i, leg, body, self.call_timeout).await;
        (whole(sent, self.call_timeout).await, fresh)
    }

    /// Ends a session opened for one request, in the background (best effort).
    pub fn close_later(self: &Arc<Self>, i: usize, leg: Option<Leg>) {
        let Some(leg) = leg.filter(|l| l.session.is_some()) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move { me.close(i, &leg).await });
    }

    /// `DELETE` of a server session (best effort: a server may not allow it).
    pub async fn close(&self, i: usize, leg: &Leg) {
        let (Some(id), Some((_, pool))) = (leg.session.as_deref(), self.pools.get(i)) else {
            return;
        };
        let Some(picked) = pool.pick(&leg.addr) else {
            return;
        };
        let target = self.target(&picked, self.open_timeout);
        let headers = [
            ("mcp-session-id", id),
            ("mcp-protocol-version", self.version),
        ];
        let call = Call {
            method: "DELETE",
            headers: &headers,
            body: None,
            max_answer: MAX_ANSWER,
        };
        let sent = http_client::open(
            http_client::connector(),
            &target,
            call,
            &self.forwarded,
            self.open_timeout,
        );
        let _ = whole(sent.await, self.open_timeout).await;
    }
}

/// A session opened for one request (its server was down at `initialize`, or forgot the
/// client's session), ended in the background when dropped: once the answer is read, as a
/// server may cut a session's stream when the session ends.
pub struct Opened {
    servers: Arc<Servers>,
    i: usize,
    leg: Option<Leg>,
}

impl Opened {
    pub fn new(servers: &Arc<Servers>, i: usize, leg: Option<Leg>) -> Opened {
        Opened {
            servers: servers.clone(),
            i,
            leg,
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.servers.close_later(self.i, self.leg.take());
    }
}

/// An answer read whole, within twice `timeout` (each read has `timeout`).
pub async fn whole(
    sent: Result<Streaming<'static>, String>,
    timeout: Duration,
) -> Result<Answer, String> {
    let reading = sent?.whole(MAX_ANSWER);
    tokio::time::timeout(timeout * 2, reading)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// The client's request headers that go with every request made for it: what a plain route
/// sends (the gateway's X-Request-ID, X-Agent-ID, traceparent, X-Forwarded-*, the route's
/// request transforms: all set on the head before federation runs) and the client's other
/// headers, less [`NOT_FORWARDED`] and the client's credentials.
fn forwarded(session: &Session, ctx: &Ctx) -> Vec<(HeaderName, HeaderValue)> {
    crate::proxy::ctx::passed_on(session, ctx, &NOT_FORWARDED)
}

/// Runs the futures at once, one task each (the servers answer in parallel); their outputs in
/// order, `None` for one that panicked.
pub async fn join_all<T, F>(work: impl IntoIterator<Item = F>) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = work.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.ok());
    }
    out
}

/// A leg for a server without a session: opened when a request needs it.
pub fn down(server: &str) -> Leg {
    Leg {
        server: server.to_string(),
        addr: String::new(),
        session: None,
    }
}

pub fn content_type(headers: &http::HeaderMap) -> &str {
    (headers.get(http::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}
