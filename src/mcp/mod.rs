//! MCP tool traffic (DESIGN §5.2).

pub mod route;
