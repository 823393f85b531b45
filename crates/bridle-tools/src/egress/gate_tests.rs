//! The proxy over its real socket, against real listeners on loopback, with DNS scripted by
//! the test (issue 29 item 5): names that resolve to loopback, a name that rebinds between
//! lookups, metadata addresses and odd spellings of an address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UnixStream};

use super::*;
use crate::egress::{Platform, Resolve};

/// Answers from a script: each name's answers in turn, the last one repeated.
#[derive(Debug, Default)]
struct Script {
    answers: Mutex<BTreeMap<String, Vec<Vec<SocketAddr>>>>,
    lookups: AtomicUsize,
}

impl Resolve for Script {
    fn lookup(
        &self,
        name: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut a = self.answers.lock().unwrap();
        let found = match a.get_mut(name) {
            Some(list) if list.len() > 1 => list.remove(0),
            Some(list) => list[0].clone(),
            None => vec![],
        };
        let found = found
            .into_iter()
            .map(|s| SocketAddr::new(s.ip(), port))
            .collect();
        Box::pin(async move { Ok(found) })
    }
}

/// Sends one proxy request; returns what came back (the whole answer for a refusal, the
/// status line for a tunnel) and, for a tunnel, the stream.
async fn ask(sock: &std::path::Path, head: &str) -> (String, Option<UnixStream>) {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    if text.starts_with("HTTP/1.1 200") {
        (text, Some(s))
    } else {
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest).await;
        (text + &rest, None)
    }
}

#[tokio::test]
async fn the_proxy_checks_the_address_it_connects_to_and_tells_the_call_why_not() {
    // The platform lets acme reach 127.0.0.2 (any port) and nothing else non-public.
    let upstream = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    #[allow(clippy::disallowed_methods)] // ends with the test's runtime
    tokio::spawn(async move {
        while let Ok((mut c, _)) = upstream.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let _ = c.write_all(b"pong").await;
        }
    });
    let script = Arc::new(Script::default());
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    script.answers.lock().unwrap().extend([
        ("loop.test".to_string(), vec![vec![sa("127.0.0.1:0")]]),
        // Rebinding: allowed at the first lookup, loopback at every later one.
        (
            "rebind.test".to_string(),
            vec![vec![sa("127.0.0.2:0")], vec![sa("127.0.0.1:0")]],
        ),
        ("meta.test".to_string(), vec![vec![sa("169.254.169.254:0")]]),
    ]);
    let tenants = BTreeMap::from([("acme".to_string(), vec!["127.0.0.2".to_string()])]);
    let platform = Arc::new(
        Platform::new(false, &[], &tenants)
            .unwrap()
            .with_resolver(script.clone()),
    );
    let rules: Vec<String> = ["*.test:*", "127.0.0.1:*", "169.254.169.254:80"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let allow = Arc::new(Allowlist::parse(&rules, platform, "acme").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let gate = Gate::start(dir.path(), &shutdown).unwrap();
    gate.open(allow, "net");
    let sock = dir.path().join(crate::egress::SOCKET_NAME);

    // A name that resolves to loopback: refused, with the address it resolved to.
    let (r, _) = ask(&sock, "CONNECT loop.test:8080 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(
        r.contains("egress to loop.test:8080 (127.0.0.1) is not allowed for tenant acme: private address, not in the platform's allowlist"),
        "{r}"
    );

    // Rebinding: the proxy looks the name up once and connects to the address it checked.
    let before = script.lookups.load(Ordering::SeqCst);
    let (r, tunnel) = ask(
        &sock,
        &format!("CONNECT rebind.test:{} HTTP/1.1\r\n\r\n", up.port()),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let mut pong = String::new();
    tunnel.unwrap().read_to_string(&mut pong).await.unwrap();
    assert_eq!(pong, "pong");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(script.lookups.load(Ordering::SeqCst), before + 1);

    // Every spelling of 127.0.0.1 is 127.0.0.1: the tenant's rule matches it, and the
    // platform refuses it (an unread spelling would fail the rule instead, another message).
    for spelling in [
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "127.0.0.1.",
    ] {
        let (r, _) = ask(&sock, &format!("CONNECT {spelling}:9 HTTP/1.1\r\n\r\n")).await;
        assert!(
            r.contains("egress to 127.0.0.1:9 is not allowed for tenant acme: private address"),
            "{spelling}: {r}"
        );
    }
    // Plain HTTP through the proxy gets the same checks.
    let (r, _) = ask(&sock, "GET http://0x7f.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.contains("egress to 127.0.0.1:9 is not allowed"), "{r}");

    // Metadata, by address or by a name resolving to it: refused before any connection,
    // whatever the tenant's rules say.
    for target in ["169.254.169.254:80", "meta.test:80"] {
        let (r, _) = ask(&sock, &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{target}: {r}");
        assert!(
            r.contains("a cloud metadata endpoint, which tools may never reach"),
            "{target}: {r}"
        );
    }

    // The call's result gets the reasons, each once, at most a few.
    let refused = gate.close();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused[0].starts_with("egress to loop.test:8080"),
        "{refused:?}"
    );
    assert!(gate.close().is_empty(), "a new call starts with none");
    shutdown.trigger();
}
