//! Model Context Protocol traffic (DESIGN §5.2): the pure parts the proxy builds on.
//!
//! - [`jsonrpc`] reads the JSON-RPC messages of a Streamable HTTP POST and writes the gateway's
//!   own JSON-RPC errors;
//! - [`grants`] decides which tools an agent may use from its globs;
//! - [`filter`] hides the other tools from `tools/list` answers, in JSON and in SSE streams.
//!
//! Nothing here does I/O, so the proxy decides what to buffer, send and log.

pub mod filter;
pub mod grants;
pub mod jsonrpc;
