//! LLM token budgets on the request path (DESIGN §5.3): an LLM request (a POST whose JSON body
//! has `model` and one of `messages`, `prompt`, `input`) reserves its prompt estimate and its
//! largest answer before it is sent, or is refused with 429 `token_quota_exceeded`; its answer's
//! usage trues the reservation up once the answer is over (or cut short).
//!
//! The body is read ahead as far as Pingora's retry buffer allows (64 KiB with a
//! `Content-Length`). A larger or chunked JSON POST cannot be looked into before it is sent: it
//! reserves `Content-Length / chars_per_token` (bytes are at least characters: an upper bound of
//! the prompt) + `default_max_tokens` from the agent's budget, and its answer's model budget is
//! charged after the fact.

use super::ctx::Ctx;
use crate::limits::tokens::{self as budget, Reservation, Short, TokenQuotas, TokenRefused};
use crate::limits::Subject;
use crate::observe::usage::{text_chars, Tracker};
use crate::runtime::Services;
use crate::{request_id, respond};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// An LLM request's reservation, and what is known of its answer.
pub struct Held {
    reservation: Reservation,
    /// The request's model (the metrics' label).
    model: Option<String>,
    /// The body was not read ahead: no model budget was reserved from.
    unread: bool,
    /// Characters of the answer's text, once it ended (an estimate when it carried no usage).
    chars: Option<u64>,
    /// The response's status, once its head passed.
    status: Option<u16>,
}

impl Held {
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// What an LLM request asks for.
struct Asked {
    model: Option<String>,
    prompt_chars: u64,
    max_tokens: Option<u64>,
    unread: bool,
}

/// Reserves an LLM request's tokens; `true` when it was refused (the answer is written).
pub async fn reserve(services: &Services, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let config = ctx.config.clone();
    let Some(tq) = config.quotas.tokens.as_ref() else {
        return Ok(false);
    };
    if session.req_header().method != http::Method::POST || session.is_upgrade_req() {
        return Ok(false);
    }
    ctx.read_ahead(session, services.track_tokens).await?;
    let asked = match &ctx.body.pre_read {
        Some(body) => asked(body),
        None => unread(session.req_header()),
    };
    let Some(asked) = asked else {
        return Ok(false);
    };
    let prompt = tq.prompt_estimate(asked.prompt_chars);
    let max = asked.max_tokens.unwrap_or(tq.default_max_tokens);
    let tokens = prompt.saturating_add(max);
    let who = (subject(session, ctx), asked.model.as_deref());
    let taken = budget::reserve(
        tq,
        config.quotas.on_store_error,
        &services.limits,
        who,
        (tokens, prompt),
    )
    .await;
    let agent = ctx.caller.identity.as_ref().map(|i| &*i.agent.id);
    match taken {
        Ok(None) => Ok(false),
        Ok(Some(reservation)) => {
            if let Some(m) = &services.metrics {
                let s = &reservation.standing;
                m.token_budget(agent, asked.model.as_deref(), s.remaining, s.limit);
            }
            ctx.tokens = Some(Box::new(Held {
                reservation,
                model: asked.model,
                unread: asked.unread,
                chars: None,
                status: None,
            }));
            Ok(false)
        }
        Err(refused) => {
            if let Some(m) = &services.metrics {
                m.token_refused(agent, asked.model.as_deref());
            }
            let id = request_id::as_str(&ctx.request_id);
            if asked.unread {
                // The body was not read: the connection cannot be used again.
                session.set_keepalive(None);
            }
            refuse(session, id, refused, (tokens, prompt, max)).await?;
            Ok(true)
        }
    }
}

/// Who the budget belongs to: the agent, else the client's address.
fn subject<'a>(session: &Session, ctx: &'a Ctx) -> Subject<'a> {
    match &ctx.caller.identity {
        Some(i) => Subject::Agent(&i.agent.id),
        None => {
            let peer = crate::upstream::client_ip(session);
            let trusted = &ctx.config.trusted_proxies;
            let headers = &session.req_header().headers;
            Subject::Client(crate::client_addr::client_ip(peer, headers, trusted))
        }
    }
}

/// An LLM request's body: its model, the characters of its prompt (the text of `messages`,
/// `prompt`, `input`, `system` and `instructions`) and the longest answer it allows.
fn asked(body: &[u8]) -> Option<Asked> {
    // Most POST bodies are not LLM requests: a scan spares them the parse.
    if !body.windows(7).any(|w| w == b"\"model\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let model = v.get("model")?.as_str()?;
    if !["messages", "prompt", "input"]
        .iter()
        .any(|k| v.get(k).is_some())
    {
        return None;
    }
    let prompt_chars = ["messages", "prompt", "input", "system", "instructions"]
        .iter()
        .filter_map(|k| v.get(*k))
        .map(text_chars)
        .sum();
    let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| v.get(*k)?.as_u64());
    Some(Asked {
        model: Some(model.to_string()),
        prompt_chars,
        max_tokens,
        unread: false,
    })
}

/// `Some(model)` when a request body is an LLM request's.
pub fn llm_request_model(body: &[u8]) -> Option<Option<String>> {
    asked(body).map(|a| a.model)
}

/// A JSON POST whose body could not be read ahead: its length bounds its prompt.
fn unread(head: &pingora::http::RequestHeader) -> Option<Asked> {
    let json = (head.headers.get(http::header::CONTENT_TYPE)).is_some_and(|ct| {
        ct.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"json"))
    });
    if !json {
        return None;
    }
    let length = (head.headers.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    Some(Asked {
        model: None,
        prompt_chars: length.unwrap_or(0),
        max_tokens: None,
        unread: true,
    })
}

/// Writes the 429 (or, when the store cannot be asked under `deny`, the 503).
async fn refuse(
    session: &mut Session,
    id: &str,
    refused: TokenRefused,
    (tokens, prompt, max): (u64, u64, u64),
) -> Result<()> {
    let Short {
        exceeded: e,
        remaining,
    } = match refused {
        TokenRefused::Short(s) => s,
        TokenRefused::StoreDown => {
            let msg = "token budgets cannot be checked right now";
            let body = respond::error_body(503, msg, id);
            let retry = [("retry-after", HeaderValue::from_static("1"))];
            return respond::write_json(session, 503, body, id, &retry).await;
        }
    };
    let message = format!(
        "the request reserves {tokens} tokens (prompt estimate {prompt} + {max} for the answer) and its token budget has {remaining} of {} left",
        e.limit
    );
    let body = respond::named_error_body("token_quota_exceeded", 429, &message, id);
    // Seconds until the budget is full again, at its refill rate.
    let used = e.limit.saturating_sub(remaining);
    let reset = (e.window_secs.saturating_mul(used)).div_ceil(e.limit.max(1));
    let headers = [
        ("retry-after", HeaderValue::from(e.retry_after_secs)),
        ("x-ratelimit-limit-tokens", HeaderValue::from(e.limit)),
        ("x-ratelimit-remaining-tokens", HeaderValue::from(remaining)),
        ("x-ratelimit-reset-tokens", HeaderValue::from(reset.max(1))),
    ];
    respond::write_json(session, 429, body, id, &headers).await
}

/// The budget headers of an LLM request's response: the tightest budget after its reservation.
pub fn headers(ctx: &mut Ctx, resp: &mut ResponseHeader) -> Result<()> {
    let Some(held) = ctx.tokens.as_mut() else {
        return Ok(());
    };
    held.status = Some(resp.status.as_u16());
    let s = &held.reservation.standing;
    resp.insert_header("x-ratelimit-limit-tokens", HeaderValue::from(s.limit))?;
    resp.insert_header(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from(s.remaining),
    )?;
    resp.insert_header("x-ratelimit-reset-tokens", HeaderValue::from(s.reset_secs))
}

/// The answer ended: its usage (for the metrics, the log and the true-up), and the characters
/// of its text.
pub fn end_of_answer(ctx: &mut Ctx) {
    let Some(t) = ctx.usage.tracker.take() else {
        return;
    };
    let (usage, chars) = t.finish_counted();
    if let Some(c) = ctx.usage.latency.as_mut() {
        c.chars = chars;
    }
    if let Some(held) = ctx.tokens.as_mut() {
        held.chars = Some(chars);
    }
    ctx.usage.tokens = usage.map(|mut u| {
        if u.model.is_none() {
            u.model =
                (ctx.body.kept.as_ref()).and_then(|b| crate::observe::usage::request_model(b));
        }
        Box::new(u)
    });
}

/// Trues the reservation up once the exchange is over.
pub async fn settle(services: &Services, session: &Session, ctx: &mut Ctx) {
    let Some(held) = ctx.tokens.take() else {
        return;
    };
    let config = ctx.config.clone();
    let Some(tq) = config.quotas.tokens.as_ref() else {
        return;
    };
    let used = used(tq, ctx, &held);
    let Held {
        reservation,
        model,
        unread,
        ..
    } = *held;
    let limit = reservation.standing.limit;
    let left = budget::settle(&services.limits, reservation, used).await;
    let answered = ctx.usage.tokens.as_ref().and_then(|u| u.model.as_deref());
    if let (true, Some(m)) = (unread, answered) {
        budget::charge_model(tq, &services.limits, subject(session, ctx), m, used).await;
    }
    if let (Some(m), Some(left)) = (&services.metrics, left) {
        let agent = ctx.caller.identity.as_ref().map(|i| &*i.agent.id);
        m.token_budget(agent, model.as_deref().or(answered), left, limit);
    }
}

/// The tokens an exchange used: the answer's usage; else an estimate from its text (the
/// prompt's estimate + the text's characters / `chars_per_token`), also for a stream cut
/// short; nothing for a cached answer or one that failed; the whole reservation when the
/// answer cannot be read (not JSON nor SSE, or a JSON answer cut short). A body that was not
/// read ahead and whose answer has neither usage nor text is charged nothing.
fn used(tq: &TokenQuotas, ctx: &Ctx, held: &Held) -> u64 {
    let r = &held.reservation;
    let estimate = |chars: u64| r.prompt_estimate.saturating_add(tq.prompt_estimate(chars));
    if ctx.cache.status == Some("HIT") {
        return 0;
    }
    if let Some(u) = &ctx.usage.tokens {
        return u.total();
    }
    // A body that was not read may not have been an LLM request at all: without usage, only
    // an answer with text is charged.
    if let Some(chars) = held.chars {
        return if held.unread && chars == 0 {
            0
        } else {
            estimate(chars)
        };
    }
    match ctx.usage.tracker.as_deref() {
        Some(Tracker::Sse { .. }) => {
            let tracker = ctx.usage.tracker.as_deref();
            let (usage, chars) = tracker.map_or((None, 0), Tracker::so_far);
            match usage {
                Some(u) => (u.prompt).saturating_add(u.completion.max(tq.prompt_estimate(chars))),
                None => estimate(chars),
            }
        }
        Some(Tracker::Json { .. } | Tracker::Off) => r.tokens,
        None => match held.status {
            Some(s) if (200..300).contains(&s) => r.tokens,
            _ => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::asked;

    #[test]
    fn llm_requests_are_told_by_their_fields_and_their_prompt_counted() {
        let a = asked(br#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi there"},{"type":"image_url","image_url":{"url":"http://x"}}]}],"max_completion_tokens":50}"#).unwrap();
        assert_eq!(a.model.as_deref(), Some("gpt-4o"));
        assert_eq!((a.prompt_chars, a.max_tokens), (9 + 8, Some(50)));
        let a = asked(r#"{"model":"m","prompt":["ab","cdé"],"max_tokens":7}"#.as_bytes()).unwrap();
        assert_eq!((a.prompt_chars, a.max_tokens), (5, Some(7)));
        let a = asked(br#"{"model":"m","input":"four","instructions":"xy"}"#).unwrap();
        assert_eq!((a.prompt_chars, a.max_tokens), (6, None));
        let a = asked(br#"{"model":"claude","system":"s","messages":[{"role":"user","content":"q"}],"max_tokens":9}"#).unwrap();
        assert_eq!((a.prompt_chars, a.max_tokens), (2, Some(9)));
        // Not LLM requests: no model, or none of messages/prompt/input, or not JSON.
        assert!(asked(br#"{"messages":[]}"#).is_none());
        assert!(asked(br#"{"model":"m","query":"q"}"#).is_none());
        assert!(asked(br#"{"model": 3, "prompt": "p"}"#).is_none());
        assert!(asked(b"model=m&prompt=p").is_none());
    }
}
