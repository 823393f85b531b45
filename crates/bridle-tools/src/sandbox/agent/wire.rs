//! The agent's frames: one type byte, a big-endian u32 length, the payload (see agent.py).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

pub const HELLO: u8 = b'H';
pub const STDOUT: u8 = b'O';
pub const STDERR: u8 = b'E';
pub const EXIT: u8 = b'X';
pub const REQUEST: u8 = b'R';
pub const STDIN: u8 = b'I';

/// The agent sends output in chunks of at most 64 KiB; anything larger is not the agent.
const MAX_FROM_AGENT: u32 = 1 << 20;
/// The agent refuses frames over 1 GiB (agent.py's MAX_FRAME).
const MAX_TO_AGENT: usize = 1 << 30;

/// One command for the agent.
#[derive(Serialize)]
pub struct Request<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: Option<&'a str>,
    pub timeout_ms: u64,
    /// Bytes of each stream the agent passes on; the rest is only counted.
    pub keep: usize,
    pub stdin: bool,
}

#[derive(Deserialize)]
pub struct Hello {
    pub agent: String,
    pub version: u32,
}

/// How the command ended, as the agent saw it.
#[derive(Debug, Deserialize)]
pub struct Exit {
    /// The exit status; 128 + N when killed by signal N.
    pub code: i64,
    pub timed_out: bool,
    /// Bytes the command wrote to stdout and stderr (passed on or not).
    pub out: u64,
    pub err: u64,
    /// Processes started by the call that still run.
    #[serde(default)]
    pub leftover: u64,
}

/// The request frame, followed by the stdin frame when there is stdin.
pub fn encode_request(req: &Request<'_>, stdin: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(json.len() + 10 + stdin.map_or(0, <[u8]>::len));
    push_frame(&mut out, REQUEST, &json)?;
    if let Some(data) = stdin {
        push_frame(&mut out, STDIN, data)?;
    }
    Ok(out)
}

fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    if payload.len() > MAX_TO_AGENT {
        return Err(std::io::Error::other(format!(
            "{} bytes is more than the sandbox agent takes in one frame",
            payload.len()
        )));
    }
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// The next frame from the agent.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FROM_AGENT {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes from the sandbox agent"
        )));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok((head[0], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let argv = vec!["true".to_string()];
        let env = vec![("A".to_string(), "b".to_string())];
        let req = Request {
            argv: &argv,
            env: &env,
            cwd: None,
            timeout_ms: 1000,
            keep: 10,
            stdin: true,
        };
        let bytes = encode_request(&req, Some(b"in")).unwrap();
        let mut r = &bytes[..];
        let (kind, body) = read_frame(&mut r).await.unwrap();
        assert_eq!(kind, REQUEST);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["env"], serde_json::json!([["A", "b"]]));
        assert_eq!(v["cwd"], serde_json::Value::Null);
        assert_eq!(read_frame(&mut r).await.unwrap(), (STDIN, b"in".to_vec()));
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn oversized_frames_from_the_agent_are_refused() {
        let mut bytes = vec![STDOUT];
        bytes.extend_from_slice(&(MAX_FROM_AGENT + 1).to_be_bytes());
        assert!(read_frame(&mut &bytes[..]).await.is_err());
    }
}
