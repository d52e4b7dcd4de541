//! Where a request goes: the route's pool for this caller, an address of it, and another
//! address when one failed.

use super::ctx::Ctx;
use crate::auth::Identity;
use crate::backends::{Picked, Pool, Who};
use crate::runtime::Route;
use http::HeaderMap;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The caller as backend choice sees it (its agent, address and headers).
pub fn who<'a>(
    identity: Option<&'a Identity>,
    ip: Option<IpAddr>,
    headers: &'a HeaderMap,
) -> Who<'a> {
    Who {
        agent: identity.map(|i| &*i.agent.id),
        ip,
        headers,
    }
}

/// The caller of a session.
pub fn who_of<'a>(session: &'a Session, identity: Option<&'a Identity>) -> Who<'a> {
    let ip = crate::upstream::client_ip(session);
    who(identity, ip, &session.req_header().headers)
}

/// The route's pool for this caller (weights, stickiness, pools that can take requests).
pub fn choose_pool(route: &Route, who: &Who) -> Arc<Pool> {
    if let [(only, _)] = &route.backends.pools[..] {
        return only.clone();
    }
    route.backends.choose(who).clone()
}

/// An address of `pool` for this request, not one that already failed it. The caller is looked
/// at only when the pool hashes (most don't: no client address read for them).
pub fn select<'a>(
    pool: &Arc<Pool>,
    who: impl FnOnce() -> Who<'a>,
    tried: &[SocketAddr],
) -> Option<Picked> {
    if !pool.hashes() {
        return pool.select(b"", tried);
    }
    let mut scratch = [0u8; 16];
    pool.select(who().key(&pool.hash_by, &mut scratch), tried)
}

/// After `failed` failed this request: whether another address takes it, within the
/// backend's attempts and retry budget (that address is then held in `ctx.upstream.next` for
/// `upstream_peer`).
pub fn retry_elsewhere(session: &Session, ctx: &mut Ctx, failed: &Picked) -> bool {
    let pool = &failed.pool;
    let up = &mut ctx.upstream;
    if up.tried.len() >= pool.retries.attempts as usize || !pool.retries.take() {
        return false;
    }
    up.tried.push(failed.addr.addr);
    let identity = ctx.caller.identity.as_ref();
    up.next = select(pool, || who_of(session, identity), &up.tried);
    up.next.is_some()
}

/// The request announced no body (no `Transfer-Encoding`, no or a zero `Content-Length`), so
/// it can be sent again as it is.
pub fn no_body(req: &RequestHeader) -> bool {
    !req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}
