//! An MCP tool result as text the model reads.

use rmcp::model::{CallToolResult, ContentBlock};

/// Text blocks as they are, other blocks summarized, structured content as JSON when there
/// is no text.
pub fn result_text(r: &CallToolResult) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in &r.content {
        parts.push(match c {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => {
                format!("[image {}, {} bytes base64]", i.mime_type, i.data.len())
            }
            ContentBlock::Audio(a) => {
                format!("[audio {}, {} bytes base64]", a.mime_type, a.data.len())
            }
            other => serde_json::to_string(other).unwrap_or_default(),
        });
    }
    if parts.is_empty()
        && let Some(s) = &r.structured_content
    {
        parts.push(s.to_string());
    }
    parts.join("\n")
}

/// A JSON-RPC error or transport failure of a call, for the model.
pub fn server_error(e: &rmcp::ServiceError) -> String {
    match e {
        rmcp::ServiceError::McpError(d) => {
            format!("the MCP server answered with an error: {}", d.message)
        }
        other => format!("the MCP server failed: {other}"),
    }
}
