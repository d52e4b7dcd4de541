//! Model Context Protocol traffic (DESIGN §5.2).
//!
//! - [`route`] checks a `protocol: mcp` route's settings (its servers, prefix, session key);
//! - [`jsonrpc`] reads the JSON-RPC messages of a Streamable HTTP POST and writes the gateway's
//!   own JSON-RPC errors;
//! - [`grants`] decides which tools an agent may use from its globs;
//! - [`filter`] hides the other tools from `tools/list` answers, in JSON and in SSE streams;
//! - [`federation`] names tools of several servers apart and merges what they answer;
//! - [`uri_template`] tells whether a URI is one a resource template offers (whose server a
//!   federated `resources/read` goes to);
//! - [`stateless`] completes federated answers for clients of the stateless revision;
//! - [`session`] seals the gateway's session id: which backend holds each server's session,
//!   for any instance to open.
//!
//! These do no I/O; the request path that uses them is `proxy/mcp.rs` (and
//! `proxy/mcp_federation.rs` for several servers).

pub mod federation;
pub mod filter;
pub mod grants;
pub mod jsonrpc;
pub mod resource;
pub mod route;
pub mod session;
pub mod stateless;
pub mod uri_template;
