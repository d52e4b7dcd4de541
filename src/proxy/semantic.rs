//! The semantic cache on the request path (DESIGN §5.1). On a semantic route, after admission:
//! read the question, answer an exact repeat at once, else embed it and look for a similar one of
//! the same partition that no guard refuses. A miss goes to the backend, and its complete answer
//! is stored on the way back. Nothing here fails a request: every trouble is a MISS.

use super::ctx::Ctx;
use crate::runtime::Services;
use crate::semantic::cache::{self as sc, Answer, RouteCache};
use crate::semantic::embed::Miss;
use crate::semantic::index::Partition;
use crate::semantic::index::{Lookup, MissReason};
use crate::semantic::request::{self, Seen};
use crate::semantic::shared::{self, Record, Store};
use crate::upstream;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What the semantic cache knows of one request (boxed in the context: only semantic routes).
pub struct State {
    cache: Arc<RouteCache>,
    seen: Seen,
    /// The question's vector, once made (an entry without one can only be found exactly).
    vector: Option<Vec<f32>>,
    /// Shadow mode: what a semantic hit would have served, and how similar its question was.
    would_serve: Option<(Arc<Answer>, f32)>,
    /// The backend's answer as it streams by, while it may still be stored.
    capture: Option<Capture>,
    /// For the log and the metrics.
    pub outcome: Outcome,
}

/// What the lookup decided, as the log line and the metrics tell it.
#[derive(Default)]
pub struct Outcome {
    pub similarity: Option<f32>,
    /// The request whose answer was served.
    pub source: Option<String>,
    /// `cache_semantic_misses_total`'s reason.
    pub miss: Option<&'static str>,
    /// The guard that refused the most similar entry.
    pub guard: Option<&'static str>,
}

struct Capture {
    status: u16,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: BytesMut,
    limit: usize,
    complete: bool,
}

/// Looks the request up; `Ok(true)` when an answer was written. A request the semantic cache
/// takes leaves its state in `ctx` for the response's way back (and the log line); one it does
/// not take (not a `POST` with a question, a client's `no-store`) is left to the response cache
/// like on any caching route.
pub async fn lookup(
    services: &Services,
    session: &mut Session,
    ctx: &mut Ctx,
    cache: Arc<RouteCache>,
) -> Result<bool> {
    let req = session.req_header();
    if req.method != http::Method::POST
        || crate::cache::client_forbids_store(req)
        || session.is_upgrade_req()
    {
        return Ok(false);
    }
    let fresh = crate::cache::client_wants_fresh(req);
    ctx.read_ahead(session, services.track_tokens).await?;
    let Some(seen) = read(session, ctx, &cache) else {
        return Ok(false);
    };
    ctx.cache.missed = true;
    let exact = match fresh {
        true => None,
        false => exact(services, ctx, &cache, &seen).await,
    };
    let label = ctx.route().map_or("", |r| r.label.as_str());
    let vector = match exact {
        Some(_) => None,
        // A script the model does not read: exact repeats only.
        None if !crate::semantic::script::covered(&seen.text) => Some(Err("uncovered_script")),
        None => Some(embed(services, &cache, label, &seen.text).await),
    };
    let now = Instant::now();
    let mut state = Box::new(State {
        cache: cache.clone(),
        seen,
        vector: None,
        would_serve: None,
        capture: None,
        outcome: Outcome::default(),
    });
    let served = match (exact, vector) {
        (Some((answer, source)), _) => Some((answer, "HIT", None, source)),
        (None, Some(Ok(v))) if !fresh => state.similar(v, now),
        (None, Some(Ok(v))) => {
            state.vector = Some(v);
            None
        }
        (None, Some(Err(reason))) => {
            state.outcome.miss = Some(reason);
            None
        }
        (None, None) => None,
    };
    if let Some((answer, status, similarity, source)) = served {
        state.outcome.similarity = similarity;
        state.outcome.source = Some(source);
        ctx.semantic = Some(state);
        serve(session, ctx, &answer, status, similarity).await?;
        return Ok(true);
    }
    ctx.semantic = Some(state);
    Ok(false)
}

/// An answer to serve: it, `X-Cache`, the similarity and the request that stored it.
type ToServe = (Arc<Answer>, &'static str, Option<f32>, String);

impl State {
    /// The semantic lookup proper, with the question's vector: a hit to serve, or what the
    /// outcome (and in shadow mode, the answer that would have been served) says.
    fn similar(&mut self, vector: Vec<f32>, now: Instant) -> Option<ToServe> {
        let s = &self.cache.settings;
        let found = (self.cache.index).lookup(
            &self.seen.partition,
            &vector,
            &self.seen.text,
            s.threshold,
            &s.guards,
            now,
        );
        self.vector = Some(vector);
        match found {
            Lookup::Hit {
                answer,
                similarity,
                source_request_id,
            } if !s.shadow => Some((answer, "HIT-SEMANTIC", Some(similarity), source_request_id)),
            Lookup::Hit {
                answer, similarity, ..
            } => {
                self.outcome.similarity = Some(similarity);
                self.outcome.miss = Some("shadow");
                self.would_serve = Some((answer, similarity));
                None
            }
            Lookup::Miss(reason) => {
                self.outcome.miss = Some(reason.name());
                if let MissReason::Guarded(g) = reason {
                    self.outcome.guard = Some(g.name());
                }
                None
            }
        }
    }
}

/// An exact repeat: in the index, else (with a Redis store) in the entries other instances
/// added to the partition since the index last looked.
async fn exact(
    services: &Services,
    ctx: &Ctx,
    cache: &RouteCache,
    seen: &Seen,
) -> Option<(Arc<Answer>, String)> {
    let found = cache
        .index
        .exact(&seen.partition, &seen.text, Instant::now());
    if found.is_some() {
        return found;
    }
    let store = services.semantic_store.as_ref()?;
    let tag = &ctx.route()?.cache.as_ref()?.tag;
    mirror(store, cache, tag, &seen.partition).await;
    cache
        .index
        .exact(&seen.partition, &seen.text, Instant::now())
}

/// Brings the partition's new shared entries into the index.
async fn mirror(store: &Store, cache: &RouteCache, tag: &str, p: &Partition) {
    let after = cache.position(p);
    let Some(entries) = store.since(tag, p, after.as_deref()).await else {
        return;
    };
    let (now, clock) = (SystemTime::now(), Instant::now());
    let mut last = None;
    for (id, record) in entries {
        if let Some((r, left)) = record.and_then(|r| r.remaining(now).map(|left| (r, left))) {
            let answer = Arc::new(r.answer);
            (cache.index).insert(p, &r.vector, &r.text, answer, &r.request_id, left, clock);
        }
        last = Some(id);
    }
    if let Some(id) = last {
        cache.set_position(p, id);
    }
}

/// The question and its partition; `None` when the request holds no question to compare.
fn read(session: &Session, ctx: &Ctx, cache: &RouteCache) -> Option<Seen> {
    let route = ctx.route()?;
    let rc = route.cache.as_ref()?;
    let body = ctx.body.pre_read.as_ref()?;
    let req = session.req_header();
    let r = request::Route {
        label: &route.label,
        shared: rc.shared,
        key: &rc.key,
        text: &cache.settings.text,
    };
    let agent = ctx.caller.identity.as_ref().map(|i| &*i.agent.id);
    let target = ctx.upstream.forward.as_deref().unwrap_or(&req.uri);
    request::read(&r, &req.method, target, agent, &req.headers, body)
}

/// The question's vector, or the miss reason when none came in time.
async fn embed(
    services: &Services,
    cache: &RouteCache,
    label: &str,
    text: &str,
) -> Result<Vec<f32>, &'static str> {
    let embedder = services.semantic.get(&cache.settings.embedder);
    let embedder = embedder.ok_or("embed_failed")?;
    let started = Instant::now();
    // Entries and questions alike are embedded in their canonical form (the guards see the
    // texts as sent).
    let text = crate::semantic::canonical::canonical(text);
    let vector = embedder.embed(&text, cache.settings.embed_timeout).await;
    if let Some(m) = &services.metrics {
        (m.semantic.embed_seconds.with_label_values(&[label]))
            .observe(started.elapsed().as_secs_f64());
    }
    vector.map_err(|m| match m {
        Miss::Busy => "embed_busy",
        Miss::Timeout => "embed_timeout",
        Miss::Failed => "embed_failed",
    })
}

/// Writes a stored answer as this request's response.
async fn serve(
    session: &mut Session,
    ctx: &mut Ctx,
    answer: &Answer,
    status: &'static str,
    similarity: Option<f32>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(answer.status, Some(answer.headers.len() + 4))?;
    for (name, value) in &answer.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    resp.insert_header("x-cache", status)?;
    if let Some(s) = similarity {
        resp.insert_header("x-cache-similarity", format!("{s:.4}"))?;
    }
    match ctx.forward() {
        Some(fwd) => upstream::set_response_headers(&mut resp, &fwd, upstream::client_ip(session))?,
        None => upstream::set_response_request_id(&mut resp, &ctx.request_id)?,
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(answer.body.clone()), true)
        .await?;
    ctx.usage.bytes_out = answer.body.len() as u64;
    ctx.cache.status = Some(status);
    ctx.cache.missed = false;
    Ok(())
}

impl State {
    /// The backend's response head: start keeping the answer if it may be stored (`limit`: the
    /// largest answer the cache takes).
    pub fn response(&mut self, resp: &ResponseHeader, limit: usize) {
        if !sc::storable(resp.status.as_u16(), &resp.headers) {
            return;
        }
        let headers = (resp.headers.iter())
            .filter(|(n, _)| sc::kept_header(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        self.capture = Some(Capture {
            status: resp.status.as_u16(),
            headers,
            body: BytesMut::new(),
            limit,
            complete: false,
        });
    }

    /// A piece of the backend's body; an answer past the limit is not kept.
    pub fn body(&mut self, chunk: Option<&Bytes>, end_of_stream: bool) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if let Some(b) = chunk {
            if c.body.len() + b.len() > c.limit {
                self.capture = None;
                return;
            }
            c.body.extend_from_slice(b);
        }
        c.complete |= end_of_stream;
    }

    /// The exchange is over: a complete answer (`failed`: the exchange ended in an error) is
    /// stored, and in shadow mode compared with what would have been served.
    pub fn finish(
        self,
        services: &Services,
        label: &str,
        rc: &crate::cache::RouteCache,
        request_id: &str,
        failed: bool,
    ) {
        let ttl = rc.ttl;
        let Some(c) = self.capture.filter(|c| c.complete && !failed) else {
            return;
        };
        let answer = Arc::new(Answer {
            status: c.status,
            headers: c.headers,
            body: c.body.freeze(),
        });
        // An entry without a vector still answers exact repeats.
        let vector = self.vector.as_deref().unwrap_or(&[]);
        self.cache.index.insert(
            &self.seen.partition,
            vector,
            &self.seen.text,
            answer.clone(),
            request_id,
            ttl,
            Instant::now(),
        );
        if let Some(store) = services.semantic_store.clone() {
            let record = Record {
                text: self.seen.text.clone(),
                vector: vector.to_vec(),
                request_id: request_id.to_string(),
                expires_ms: shared::unix_ms(SystemTime::now() + ttl),
                answer: (*answer).clone(),
            };
            let (tag, partition) = (rc.tag.clone(), self.seen.partition);
            tokio::spawn(async move { store.push(&tag, &partition, &record, ttl).await });
        }
        let Some(m) = services.metrics.clone() else {
            return;
        };
        let (entries, bytes) = (self.cache.index.len(), self.cache.index.bytes());
        let gauge = |g: &prometheus::IntGaugeVec, v: usize| {
            g.with_label_values(&[label])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&m.semantic.entries, entries);
        gauge(&m.semantic.bytes, bytes);
        if let Some((would, _)) = self.would_serve {
            let embedder = services.semantic.get(&self.cache.settings.embedder);
            shadow(m, embedder, &self.cache, label, would, answer);
        } else if self.outcome.guard.is_some() && self.cache.settings.shadow {
            shadow_count(&m, label, "guarded");
        }
    }
}

/// Shadow mode's verdict on an answer that would have been served: the same text as the
/// backend's, or texts whose embeddings are at least `threshold` alike, agree. Embedding the
/// answers runs after the response, off the request path.
fn shadow(
    m: Arc<crate::observe::metrics::Metrics>,
    embedder: Option<Arc<crate::semantic::engines::Embedding>>,
    cache: &RouteCache,
    label: &str,
    would: Arc<Answer>,
    got: Arc<Answer>,
) {
    let (a, b) = (would.text(), got.text());
    if a == b {
        return shadow_count(&m, label, "agree");
    }
    let Some(embedder) = embedder else { return };
    let (threshold, timeout) = (cache.settings.threshold, cache.settings.embed_timeout);
    let label = label.to_string();
    tokio::spawn(async move {
        let (va, vb) = (
            embedder.embed(&a, timeout).await,
            embedder.embed(&b, timeout).await,
        );
        // An answer that could not be embedded gives no verdict.
        if let (Ok(va), Ok(vb)) = (va, vb) {
            let alike = crate::semantic::embed::similarity(&va, &vb) >= threshold;
            shadow_count(&m, &label, if alike { "agree" } else { "disagree" });
        }
    });
}

fn shadow_count(m: &crate::observe::metrics::Metrics, label: &str, outcome: &str) {
    (m.semantic.shadow.with_label_values(&[label, outcome])).inc();
}
