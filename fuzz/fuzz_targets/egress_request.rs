//! The egress proxy's reading of a request head (`bridle-tools`'s `egress/proxy.rs`), the
//! bytes a tool's own code sends, and the allowlist check of where it asks to go.
//!
//! Properties: no panic (the host's normalisation included: every numeric IPv4 spelling);
//! a request that parses names a host; an address the platform has not allowed is never
//! admitted; a plain-HTTP request is sent
//! upstream as one head (request line, headers, `Connection: close`, one blank line) with no
//! proxy credentials in it.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use bridle_core::manifest::Host;
use bridle_tools::egress::proxy::parse_head;
use bridle_tools::egress::{Allowlist, Platform, is_public};
use libfuzzer_sys::fuzz_target;

static ALLOW: LazyLock<Allowlist> = LazyLock::new(|| {
    let rules = [
        "api.example.com",
        "*.example.org:8443",
        "10.0.0.7:80",
        "[::1]:9000",
    ];
    // The platform allows nothing non-public.
    match Allowlist::parse(
        &rules.map(String::from),
        Arc::new(Platform::default()),
        "acme",
    ) {
        Ok(a) => a,
        Err(e) => panic!("the target's allowlist does not parse: {e}"),
    }
});

fuzz_target!(|head: &[u8]| {
    let Some(req) = parse_head(head) else {
        return;
    };
    assert!(!req.host.is_empty(), "a request without a host: {req:?}");
    let host = Host::parse(&req.host);
    let _ = ALLOW.refusal(&host, req.port);
    if let Host::Ip(ip) = host
        && let Ok(ok) = ALLOW.admit(&host, req.port, vec![SocketAddr::new(ip, req.port)])
    {
        assert!(
            ok.iter().all(|a| is_public(a.ip())),
            "a non-public address was admitted: {ok:?} for {:?}",
            req.host
        );
    }
    if req.connect {
        assert!(req.upstream_head.is_empty());
        return;
    }
    let sent = &req.upstream_head;
    assert!(
        sent.ends_with("Connection: close\r\n\r\n"),
        "the upstream head does not end with Connection: close: {sent:?}"
    );
    assert_eq!(
        sent.matches("\r\n\r\n").count(),
        1,
        "the upstream head holds a second blank line (a second request): {sent:?}"
    );
    let lower = sent.to_ascii_lowercase();
    assert!(
        !lower.contains("\r\nproxy-authorization:"),
        "proxy credentials are sent upstream: {sent:?}"
    );
});
