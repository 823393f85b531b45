//! The tool kinds. `container` and `code` run a command in the run's sandbox
//! ([`sandboxed`]); `http` makes one request from this service; `mcp` calls a tool of an MCP
//! server (see [`crate::mcp`]).

pub mod code;
pub mod container;
pub mod http;
pub mod mcp;
pub mod sandboxed;
