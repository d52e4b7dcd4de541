//! The configuration file as written: typed, strict (unknown keys are errors), not yet compiled.

use super::values::{Count, Dur, Flag, OneOrMany, Rate, Size, Text};
use serde::Deserialize;
use std::collections::BTreeMap;

pub use super::schema_limits::*;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub name: Option<Text>,
    pub version: Option<Text>,
    #[serde(default)]
    pub gateway: Gateway,
    pub auth: Option<Auth>,
    #[serde(default)]
    pub agents: BTreeMap<String, Agent>,
    pub rate_limiting: Option<RateLimiting>,
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
    #[serde(default)]
    pub routes: Vec<Route>,
    pub caching: Option<Caching>,
    pub transforms: Option<Transforms>,
    pub monitoring: Option<Monitoring>,
    /// The admin listener: read-only API and web console, off by default (DESIGN §5.5).
    pub admin: Option<Admin>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<Text>,
    /// `Authorization: Bearer <token>` on every request (required off loopback).
    pub token: Option<Text>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    #[serde(default)]
    pub listen: OneOrMany<Text>,
    pub base_path: Option<Text>,
    pub tls: Option<Tls>,
    pub threads: Option<Count>,
    pub pid_file: Option<Text>,
    pub upgrade_sock: Option<Text>,
    pub error_log: Option<Text>,
    pub grace_period: Option<Dur>,
    pub shutdown_timeout: Option<Dur>,
    pub rate_limit: Option<Rate>,
    pub max_body_size: Option<Size>,
    #[serde(default)]
    pub trusted_proxies: Vec<Text>,
    pub max_header_size: Option<Size>,
    pub max_headers: Option<Count>,
    pub connect_timeout: Option<Dur>,
    /// Requests served at once; more are refused with 503 (health and metrics never are).
    pub max_in_flight: Option<Count>,
    /// Client connections served at once; more wait (at most `header_read_timeout`), then
    /// are closed.
    pub max_connections: Option<Count>,
    /// Client connections from one address; more are closed right after accept.
    pub max_connections_per_ip: Option<Count>,
    /// Time a client has to send a request's head (slowloris).
    pub header_read_timeout: Option<Dur>,
    /// Time an idle client connection is kept open.
    pub idle_timeout: Option<Dur>,
    /// An HTTP/2 client resetting more streams than this in a second is disconnected.
    pub h2_max_resets_per_second: Option<Count>,
    /// HTTP/2 without TLS (prior knowledge) on plaintext listeners, e.g. for gRPC clients.
    #[serde(default)]
    pub h2c: Flag,
    /// Idle connections to backends kept for reuse, over all backends.
    pub upstream_keepalive_pool_size: Option<Count>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub enabled: Flag,
    pub cert: Option<Text>,
    pub key: Option<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStrategy {
    Jwt,
    ApiKey,
    Any,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub strategy: Option<AuthStrategy>,
    pub jwt: Option<Jwt>,
    pub api_key: Option<ApiKey>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    pub secret: Option<Text>,
    pub expiry: Option<Dur>,
    pub issuer: Option<Text>,
    pub audience: Option<Text>,
    pub leeway: Option<Dur>,
    /// More keys, for rotation and asymmetric algorithms; the first key (after `secret`) signs.
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    pub jwks_file: Option<Text>,
    pub jwks_url: Option<Text>,
    /// How often `jwks_url` is fetched again (default 5m).
    pub jwks_refresh: Option<Dur>,
    /// The shortest wait between two fetches caused by tokens naming an unknown `kid` (default 10s).
    pub jwks_cooldown: Option<Dur>,
    /// Verified tokens kept (default 10000; 0 turns the cache off).
    pub token_cache: Option<Count>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    pub kid: Text,
    pub algorithm: Option<Text>,
    pub secret: Option<Text>,
    pub public_key_file: Option<Text>,
    pub private_key_file: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub header: Option<Text>,
    pub keys_store: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub api_key: Option<Text>,
    pub api_key_sha256: Option<Text>,
    #[serde(default)]
    pub scopes: Vec<Text>,
    pub rate_limit: Option<Rate>,
    /// MCP tools this agent may call (globs; `!` denies; default: all). DESIGN §5.2.
    pub tools: Option<Vec<Text>>,
    /// Per-tool limits of this agent on MCP routes, by tool name as the client sees it.
    pub tool_rate_limits: Option<BTreeMap<String, Rate>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub url: Option<Text>,
    pub urls: Option<Vec<Address>>,
    pub load_balancing: Option<Balance>,
    /// For `load_balancing: hash`: `agent`, `client_ip` or `header:<name>`.
    pub hash_by: Option<Text>,
    pub protocol: Option<Protocol>,
    pub max_h2_streams: Option<Count>,
    pub tls: Option<BackendTls>,
    pub connect_timeout: Option<Dur>,
    pub timeout: Option<Dur>,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Option<Dur>,
    /// How often host names are resolved again.
    pub resolve_every: Option<Dur>,
    pub health_check: Option<HealthCheck>,
    pub passive_health: Option<PassiveHealth>,
    pub retries: Option<Retries>,
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// One of a backend's `urls`: `"http://a:1"` or `{url: "http://a:1", weight: 3}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Address {
    Url(Text),
    Weighted {
        url: Text,
        #[serde(default = "one")]
        weight: Count,
    },
}

fn one() -> Count {
    Count(1)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    LeastConn,
    /// Power of two choices: the less busy of two random addresses.
    P2c,
    /// Consistent (Ketama) hashing of `hash_by`.
    Hash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http1,
    H2,
    H2c,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    pub sni: Option<Text>,
    pub verify: Option<Flag>,
    pub ca_file: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (default) or `tcp`.
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub path: Option<Text>,
    pub expected_status: Option<Count>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_after: Option<Count>,
    pub unhealthy_after: Option<Count>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    #[serde(default = "yes")]
    pub enabled: Flag,
    /// Consecutive connect failures or 5xx answers that eject an address.
    pub failures: Option<Count>,
    /// How long an ejected address is left out.
    pub cool_off: Option<Dur>,
}

fn yes() -> Flag {
    Flag(true)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Further tries after the first (0: none).
    pub attempts: Option<Count>,
    /// Statuses that make an idempotent request try another address (none by default).
    #[serde(default)]
    pub on_status: Vec<Count>,
    /// Retries allowed as a share of requests, e.g. "20%".
    pub budget: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failures within `window` that open the circuit.
    pub failures: Option<Count>,
    pub window: Option<Dur>,
    /// How long it stays open before one probe request is let through.
    pub open_for: Option<Dur>,
}

/// `match` of a route: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub agent: Option<OneOrMany<Text>>,
    pub method: Option<OneOrMany<Text>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// Top-level JSON body fields (dotted paths allowed) and the values they must have.
    #[serde(default)]
    pub body: BTreeMap<String, Text>,
}

/// `strip_prefix: true` or `strip_prefix: "/prefix"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StripPrefix {
    Flag(bool),
    Prefix(Text),
}

/// `backend_weights` as a map `{v1: 90}` or the article's list `[{v1: 90}, {v2: 10}]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Weights {
    Map(BTreeMap<String, Count>),
    List(Vec<BTreeMap<String, Count>>),
}

impl Weights {
    pub fn entries(&self) -> Vec<(String, u64)> {
        match self {
            Weights::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
            Weights::List(l) => l
                .iter()
                .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.0)))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: Text,
    pub name: Option<Text>,
    pub backend: Option<Text>,
    pub backend_url: Option<Text>,
    #[serde(default)]
    pub auth_required: Flag,
    pub auth_strategy: Option<AuthStrategy>,
    pub allowed_agents: Option<Vec<Text>>,
    pub rate_limit: Option<Rate>,
    pub timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub total_timeout: Option<Dur>,
    pub strip_prefix: Option<StripPrefix>,
    #[serde(default)]
    pub preserve_host: Flag,
    /// Streamed LLM answers carry their usage: `stream_options.include_usage` is asked for.
    #[serde(default)]
    pub include_usage: Flag,
    pub caching: Option<Caching>,
    pub backend_weights: Option<Weights>,
    /// Keeps a caller on one of `backend_weights`: `agent`, `client_ip` or `header:<name>`.
    pub sticky_by: Option<Text>,
    #[serde(rename = "match")]
    pub match_: Option<Match>,
    /// Transforms of this route, applied after the gateway-wide ones.
    pub transforms: Option<Transforms>,
    /// What the route speaks beyond HTTP: `mcp` (DESIGN §5.2).
    pub protocol: Option<RouteProtocol>,
    /// The MCP servers behind a `protocol: mcp` route.
    pub mcp: Option<McpRoute>,
    /// HTTP/JSON requests turned into gRPC calls to the route's backend (DESIGN §5.4).
    pub grpc_transcode: Option<GrpcTranscode>,
}

/// Where a transcoding route's descriptors come from, and which services it offers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTranscode {
    /// A `FileDescriptorSet` (`protoc --include_imports -o`).
    pub descriptor_set: Option<Text>,
    /// `.proto` files, compiled at load.
    pub protos: Option<Vec<Text>>,
    pub include_paths: Option<Vec<Text>>,
    pub services: Option<Vec<Text>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteProtocol {
    Http,
    Mcp,
}

/// A `protocol: mcp` route's servers: one is passed through, several are federated.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpRoute {
    pub servers: Option<BTreeMap<String, McpServer>>,
    /// Federated tool names: `{server}` is replaced by the server's name (default `{server}__`).
    pub tool_prefix: Option<Text>,
    pub session_affinity: Option<Flag>,
    /// 32 bytes, hex or base64, that seal session tokens (DESIGN §5.7).
    pub session_key: Option<Text>,
}

/// One MCP server: a named backend or a URL (with the server's MCP path).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub backend: Option<Text>,
    pub backend_url: Option<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStrategy {
    Exact,
    Semantic,
}

/// Gateway-wide `caching`, and a route's `caching` which overrides it field by field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caching {
    pub enabled: Option<Flag>,
    pub strategy: Option<CacheStrategy>,
    pub ttl: Option<Dur>,
    pub shared: Option<Flag>,
    pub cache_key: Option<Vec<Text>>,
    pub store: Option<Text>,
    pub max_size: Option<Size>,
    pub max_object_size: Option<Size>,
    /// How long identical concurrent misses wait for the first one's response.
    pub lock_timeout: Option<Dur>,
    /// Bound on each call to a Redis store; a slower answer is a miss.
    pub store_timeout: Option<Dur>,
    /// Clients that may purge without the `admin` scope (default: loopback only).
    pub admin_networks: Option<Vec<Text>>,
    /// `strategy: semantic`'s settings (DESIGN §5.1).
    pub semantic: Option<Semantic>,
}

/// `caching.semantic`: what is compared, how close is close enough, and what computes vectors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Semantic {
    /// `auto`, `request_body.<field>` or a JSON pointer.
    pub text: Option<Text>,
    /// Cosine similarity needed for a hit, `0 < t <= 1` (a string or a number).
    pub threshold: Option<Text>,
    pub embedder: Option<Embedder>,
    pub guards: Option<Vec<Text>>,
    pub mode: Option<SemanticMode>,
    /// Entries per instance and route; least recently used evicted.
    pub max_entries: Option<Count>,
    pub embed_timeout: Option<Dur>,
    pub store_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedder {
    pub kind: Option<EmbedderKind>,
    /// `kind: local`: a sentence-transformers directory.
    pub model_dir: Option<Text>,
    /// `kind: openai`: the base URL (`http://host:8000/v1`), the model and the key.
    pub url: Option<Text>,
    pub model: Option<Text>,
    pub api_key: Option<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderKind {
    Local,
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticMode {
    Serve,
    Shadow,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transforms {
    #[serde(default)]
    pub request: Vec<Transform>,
    #[serde(default)]
    pub response: Vec<Transform>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformKind {
    AddHeader,
    SetHeader,
    RemoveHeader,
    InjectAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    AgentApiKey,
    Secret,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    #[serde(rename = "type")]
    pub kind: TransformKind,
    pub header: Option<Text>,
    pub value: Option<Text>,
    pub source: Option<CredentialSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    pub metrics: Option<Metrics>,
    pub logging: Option<Logging>,
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default)]
    pub enabled: Flag,
    pub endpoint: Option<Text>,
    pub listen: Option<Text>,
    pub format: Option<MetricsFormat>,
    pub prefix: Option<Text>,
    #[serde(default)]
    pub custom_metrics: Vec<CustomMetric>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsFormat {
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Histogram,
    Gauge,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomMetric {
    pub name: Text,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    #[serde(default)]
    pub labels: Vec<Text>,
    pub help: Option<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub level: Option<LogLevel>,
    pub format: Option<LogFormat>,
    pub output: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    #[serde(default)]
    pub enabled: Flag,
    pub sampler: Option<Text>,
    pub endpoint: Option<Text>,
    /// `http/protobuf` (default) or `http/json`, as OTEL_EXPORTER_OTLP_PROTOCOL.
    pub protocol: Option<Text>,
}
