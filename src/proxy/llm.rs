//! LLM answers on their way to the client: their usage tracker (token counts, budgets) and,
//! for LLM requests, their latency clock (`observe/latency.rs`). An LLM request is what the
//! token budget code calls one (a POST whose JSON body has `model` and one of `messages`,
//! `prompt`, `input`); without token budgets its body is looked at once the answer's head
//! comes, from the part read ahead or kept (64 KiB).

use super::ctx::Ctx;
use crate::observe::latency::Clock;
use crate::observe::usage::Tracker;
use crate::runtime::Services;
use bytes::Bytes;
use pingora::cache::CachePhase;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::borrow::Cow;
use std::time::Instant;

/// The response head passed: a tracker for the answer's usage when one is wanted, and a clock
/// when it answers an LLM request from the backend (a cached answer took no model time).
pub fn start(services: &Services, session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) {
    // A cached answer consumed no tokens.
    if !resp.status.is_success() || ctx.cache.status == Some("HIT") {
        return;
    }
    let ct = resp.headers.get(http::header::CONTENT_TYPE);
    let Some(tracker) = ct.and_then(|ct| Tracker::for_content_type(ct.as_bytes())) else {
        return;
    };
    let llm = if from_cache(session, ctx) {
        None
    } else {
        llm_model(services, session, ctx)
    };
    if llm.is_none() && !services.track_tokens && ctx.tokens.is_none() {
        return;
    }
    if let Some(model) = llm {
        let streamed = matches!(tracker, Tracker::Sse { .. });
        ctx.usage.latency = Some(Box::new(Clock::new(model, streamed)));
    }
    ctx.usage.tracker = Some(Box::new(tracker));
}

/// A chunk of the answer: one clock read when it carried generated text.
pub fn body(ctx: &mut Ctx, chunk: &Bytes) {
    let Some(t) = ctx.usage.tracker.as_mut() else {
        return;
    };
    if t.feed(chunk) {
        if let Some(c) = ctx.usage.latency.as_mut() {
            c.content(Instant::now());
        }
    }
}

/// The answer is over: a JSON answer's first token is its arrival.
pub fn end(ctx: &mut Ctx) {
    if let Some(c) = ctx.usage.latency.as_mut().filter(|c| !c.streamed) {
        c.content(Instant::now());
    }
    super::tokens::end_of_answer(ctx);
}

/// The answer's timing for the metrics and the log, and its model (the answer's, else the
/// request's).
pub fn seen(ctx: &Ctx) -> Option<crate::observe::LlmSeen<'_>> {
    let clock = ctx.usage.latency.as_deref()?;
    let usage = ctx.usage.tokens.as_deref();
    let chars_per_token = (ctx.config.quotas.tokens.as_ref()).map_or(4, |t| t.chars_per_token);
    let timing = clock.timing(ctx.start, usage.map(|u| u.completion), chars_per_token)?;
    let model = (usage.and_then(|u| u.model.as_deref())).or(clock.model.as_deref());
    Some(crate::observe::LlmSeen {
        timing,
        model: model.unwrap_or("unknown"),
    })
}

/// Pingora served the body from its cache (fresh, stale or revalidated), or the semantic
/// cache did.
fn from_cache(session: &Session, ctx: &Ctx) -> bool {
    ctx.cache.status.is_some_and(|s| s.starts_with("HIT"))
        || matches!(
            session.cache.phase(),
            CachePhase::Hit
                | CachePhase::Stale
                | CachePhase::StaleUpdating
                | CachePhase::Revalidated
                | CachePhase::RevalidatedNoCache(_)
        )
}

/// `Some(model)` when the request is an LLM request whose answer is observed.
fn llm_model(services: &Services, session: &Session, ctx: &Ctx) -> Option<Option<String>> {
    if services.metrics.is_none() && services.access_log.is_none() {
        return None;
    }
    // With token budgets, the budget code already decided (and parsed the body once).
    if ctx.config.quotas.tokens.is_some() {
        return ctx.tokens.as_ref().map(|h| h.model().map(str::to_string));
    }
    if session.req_header().method != http::Method::POST {
        return None;
    }
    let body: Cow<[u8]> = match (&ctx.body.pre_read, ctx.body.kept.as_deref()) {
        (Some(b), _) => Cow::Borrowed(b),
        (None, Some([one])) => Cow::Borrowed(one),
        (None, Some(parts)) => Cow::Owned(parts.concat()),
        (None, None) => return None,
    };
    super::tokens::llm_request_model(&body)
}
