//! `bridle mcp login TOOL` / `bridle mcp logout TOOL`: a person authorizes (or stops
//! authorizing) their tenant's use of a remote MCP server whose Tool manifest sets
//! `spec.mcp.oauth`. Login prints the authorization server's URL, waits on a loopback listener
//! for the browser to come back with a code (RFC 8252's native-app redirect), and hands the
//! code to Bridle, which exchanges it (with the PKCE verifier it kept) and keeps the tokens in
//! Vault. The CLI never sees a token.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bridle_proto as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::conn::{ConnArgs, status};
use crate::out;

#[derive(clap::Subcommand)]
pub enum McpCommand {
    /// Authorize this tenant's use of a remote MCP server (a Tool with spec.mcp.oauth). Prints
    /// the URL to open in a browser and waits for the browser to come back to a listener on
    /// 127.0.0.1; the tokens are kept in Vault, never shown.
    Login {
        /// The Tool manifest's name.
        tool: String,
        /// Port of the loopback listener the browser comes back to (0 = any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// How long to wait for the browser (at most 10m: the pending authorization expires).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Forget this tenant's authorization for a tool: its calls need a new login.
    Logout {
        /// The Tool manifest's name.
        tool: String,
    },
}

pub async fn mcp(conn: &ConnArgs, c: McpCommand) -> anyhow::Result<ExitCode> {
    let mut client = conn.orchestrator().await?;
    match c {
        McpCommand::Login { tool, port, wait } => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("listening on 127.0.0.1:{port} for the browser"))?;
            let port = listener.local_addr()?.port();
            let redirect_uri = format!("http://127.0.0.1:{port}/callback");
            let begun = client
                .begin_tool_authorization(pb::BeginToolAuthorizationRequest {
                    tenant: conn.tenant.clone(),
                    tool: tool.clone(),
                    redirect_uri: redirect_uri.clone(),
                })
                .await
                .map_err(|s| status(&format!("authorizing tool '{tool}'"), s))?
                .into_inner();
            let wait = wait.min(Duration::from_secs(600));
            out::line(&format!(
                "Open this URL in a browser to authorize tool '{tool}':\n\n  {}\n",
                begun.authorization_url
            ));
            out::err(&format!(
                "{} Waiting up to {} for the browser to come back to {redirect_uri} ...",
                if begun.registered {
                    format!(
                        "(Registered client {} with the authorization server.)",
                        begun.client_id
                    )
                } else {
                    format!("(Client {}.)", begun.client_id)
                },
                humantime::format_duration(wait)
            ));
            let back = tokio::time::timeout(wait, callback(&listener, &begun.state))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the browser did not come back within {}; run the login again",
                        humantime::format_duration(wait)
                    )
                })??;
            let done = client
                .complete_tool_authorization(pb::CompleteToolAuthorizationRequest {
                    tenant: conn.tenant.clone(),
                    state: begun.state,
                    code: back.code,
                    issuer: back.issuer,
                })
                .await
                .map_err(|s| status(&format!("completing the authorization of '{tool}'"), s))?
                .into_inner();
            let lasts = done
                .expires_in
                .map(|d| {
                    format!(
                        ", access token valid for {}",
                        humantime::format_duration(Duration::from_secs(
                            u64::try_from(d.seconds).unwrap_or(0)
                        ))
                    )
                })
                .unwrap_or_default();
            out::line(&format!(
                "Authorized tool '{}' (scopes: {}{lasts}, {}). The tokens are kept in Vault.",
                done.tool,
                if done.scopes.is_empty() {
                    "none named".to_string()
                } else {
                    done.scopes.join(" ")
                },
                if done.refreshable {
                    "refreshed by Bridle as it expires"
                } else {
                    "no refresh token: log in again when it expires"
                }
            ));
            Ok(ExitCode::SUCCESS)
        }
        McpCommand::Logout { tool } => {
            let r = client
                .revoke_tool_authorization(pb::RevokeToolAuthorizationRequest {
                    tenant: conn.tenant.clone(),
                    tool: tool.clone(),
                })
                .await
                .map_err(|s| status(&format!("forgetting the authorization of '{tool}'"), s))?
                .into_inner();
            if r.revoked {
                out::line(&format!("Forgot the authorization of tool '{tool}'."));
            } else {
                out::line(&format!("Tool '{tool}' had no authorization to forget."));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What the authorization server sent the browser back with.
struct Back {
    code: String,
    issuer: String,
}

/// Serves the loopback listener until a request to `/callback` carries `state`: its code, or
/// the authorization server's error. Other requests (a favicon) get 404.
async fn callback(listener: &tokio::net::TcpListener, state: &str) -> anyhow::Result<Back> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        // The request line and headers; a browser's request is small.
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string();
        let Some(query) = target.strip_prefix("/callback?") else {
            reply(&mut sock, "404 Not Found", "Not found.").await;
            continue;
        };
        let params: Vec<(String, String)> = url_pairs(query);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if get("state") != state {
            reply(
                &mut sock,
                "400 Bad Request",
                "This is not the authorization this login is waiting for.",
            )
            .await;
            continue;
        }
        if !get("error").is_empty() {
            reply(
                &mut sock,
                "200 OK",
                "The authorization was refused. You can close this tab.",
            )
            .await;
            let desc = get("error_description");
            bail!(
                "the authorization server answered '{}'{}",
                get("error"),
                if desc.is_empty() {
                    String::new()
                } else {
                    format!(": {desc}")
                }
            );
        }
        let code = get("code");
        if code.is_empty() {
            reply(
                &mut sock,
                "400 Bad Request",
                "The redirect carries no code.",
            )
            .await;
            bail!("the browser came back without a code");
        }
        reply(
            &mut sock,
            "200 OK",
            "Bridle received the authorization. You can close this tab.",
        )
        .await;
        return Ok(Back {
            code,
            issuer: get("iss"),
        });
    }
}

async fn reply(sock: &mut tokio::net::TcpStream, status: &str, text: &str) {
    let body = format!("<!doctype html><title>Bridle</title><p>{text}</p>\n");
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(msg.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// `a=b&c=d`, percent-decoded (`+` is a space).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://127.0.0.1/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let p = url_pairs("code=a%2Fb%3D&state=x+y&iss=https%3A%2F%2Fas.example&bad=%zz&end=%4");
        assert_eq!(p[0], ("code".into(), "a/b=".into()));
        assert_eq!(p[1], ("state".into(), "x y".into()));
        assert_eq!(p[2], ("iss".into(), "https://as.example".into()));
        assert_eq!(p[3], ("bad".into(), "%zz".into()));
        assert_eq!(p[4], ("end".into(), "%4".into()));
    }
}
