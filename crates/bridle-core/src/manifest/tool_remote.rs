//! The network tool kinds (`http`, `mcp`) and the egress rules every kind uses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::super::Problems;
use super::super::credentials::SecretRef;
use super::sandbox::{ContainerLimits, PoolSettings, SandboxFields, parse_bytes, validate_sandbox};
use super::{Risk, check_placeholders};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpTool {
    /// GET, POST, PUT, PATCH, DELETE, HEAD (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// `http(s)://` URL; `{{name}}` is replaced by the argument, percent-encoded.
    pub url: String,
    /// Query parameters (templates); a parameter whose value renders empty is left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Request headers. A value may be, or contain, `secret://name`, resolved per call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `secret://name` sent as `Authorization: Bearer <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
    /// Body template; absent = the arguments as JSON for POST, PUT and PATCH, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Hosts the request may go to. Empty = the URL's own host (when it has no placeholder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Cap on the response body kept (default 64Ki).
    #[serde(default = "default_response_limit")]
    pub response_limit: String,
}

fn default_method() -> String {
    "GET".into()
}
fn default_response_limit() -> String {
    "64Ki".into()
}

pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpTool {
    /// Exposed names are `<prefix>__<server tool>` (default prefix: the manifest's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A stdio server run inside a sandbox container, one per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio: Option<McpStdio>,
    /// A stdio server run as a local process, named in the tool service's configuration
    /// (`mcp_local_servers`); manifests cannot name host commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// A streamable-HTTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent to a streamable-HTTP server (values may hold `secret://name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `secret://name` sent as `Authorization: Bearer <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
    /// The server is protected by the MCP authorization flow (OAuth 2.1 with PKCE): a person
    /// authorizes each tenant once (`bridle mcp login <tool>`), and calls carry the tenant's
    /// access token, kept in Vault and refreshed before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<McpOAuth>,
    /// Only these server tools are exposed (empty = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Risk of named server tools, whatever their annotations say.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub risk_overrides: BTreeMap<String, Risk>,
}

/// How Bridle authorizes with a remote MCP server's authorization server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpOAuth {
    /// Scopes to ask for (empty = what the server's metadata or challenge names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// A public client registered with the authorization server beforehand; absent = dynamic
    /// client registration, which the authorization server must then offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl McpTool {
    pub fn prefix<'a>(&'a self, manifest_name: &'a str) -> &'a str {
        self.prefix.as_deref().unwrap_or(manifest_name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpStdio {
    /// Container image the server runs in.
    pub image: String,
    /// The server's argv.
    pub command: Vec<String>,
    /// The server's environment; values may be `secret://name` references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files under /run/secrets (file name -> `secret://name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, String>,
    /// Memory, CPU, process, file and output limits of the server's sandbox.
    #[serde(default)]
    pub limits: ContainerLimits,
    /// OCI runtime (for example "runsc"); default the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "PoolSettings::is_default")]
    pub pool: PoolSettings,
    /// Hosts the server may reach through the egress proxy; empty = no network at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// As a sandboxed tool's: added by the egress proxy, never seen by the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<super::sandbox::CredentialBinding>,
}

/// One entry of an egress allowlist: a host (exact, or `*.` for any subdomain) or an IP
/// address, and a port (absent = 80 and 443; `*` = any).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EgressRule {
    pub host: EgressHost,
    pub port: EgressPort,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EgressHost {
    /// A lowercase DNS name.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Suffix(String),
    Ip(IpAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EgressPort {
    /// 80 or 443.
    Web,
    Any,
    One(u16),
}

impl EgressRule {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "'{s}' must be a host with an optional port (api.example.com, *.example.com:443), not a URL"
            ));
        }
        let (host, port) = split_host_port(s)?;
        let port = match port {
            None => EgressPort::Web,
            Some("*") => EgressPort::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => EgressPort::One(n),
                _ => return Err(format!("'{s}': '{p}' is not a port (1-65535 or *)")),
            },
        };
        let host = if let Host::Ip(ip) = Host::parse(host) {
            EgressHost::Ip(ip)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_dns(suffix).map_err(|e| format!("'{s}': {e}"))?;
            EgressHost::Suffix(suffix.to_ascii_lowercase())
        } else {
            check_dns(host).map_err(|e| format!("'{s}': {e}"))?;
            EgressHost::Exact(host.to_ascii_lowercase())
        };
        Ok(Self { host, port })
    }

    /// True when `host:port` is what this rule allows. `host` is a name or an IP address in
    /// any spelling [`Host::parse`] reads.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.allows_host(&Host::parse(host), port)
    }

    /// True when `host:port` is what this rule allows.
    pub fn allows_host(&self, host: &Host, port: u16) -> bool {
        let port_ok = match self.port {
            EgressPort::Web => port == 80 || port == 443,
            EgressPort::Any => true,
            EgressPort::One(p) => p == port,
        };
        port_ok
            && match (&self.host, host) {
                (EgressHost::Exact(h), Host::Name(n)) => h == n,
                (EgressHost::Suffix(s), Host::Name(n)) => {
                    n.len() > s.len() + 1 && n.ends_with(s.as_str()) && {
                        let dot = n.len() - s.len() - 1;
                        n.as_bytes()[dot] == b'.'
                    }
                }
                (EgressHost::Ip(ip), Host::Ip(h)) => ip == h,
                _ => false,
            }
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            EgressHost::Exact(h) => write!(f, "{h}")?,
            EgressHost::Suffix(s) => write!(f, "*.{s}")?,
            EgressHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]")?,
            EgressHost::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.port {
            EgressPort::Web => Ok(()),
            EgressPort::Any => write!(f, ":*"),
            EgressPort::One(p) => write!(f, ":{p}"),
        }
    }
}

/// A destination host as the egress checks compare it: an IP address in its one canonical
/// form, or a lowercase name without its trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// Reads a host as a tool (or its code) wrote it: `[v6]` brackets, a trailing dot and
    /// letter case are dropped; IPv4-mapped IPv6 (`::ffff:127.0.0.1`) becomes IPv4; and the
    /// numeric spellings the C resolver accepts for IPv4 (`2130706433`, `0x7f.1`,
    /// `0177.0.0.1`) are read as the address they mean, so that no spelling of an address
    /// passes for a name.
    pub fn parse(raw: &str) -> Self {
        let h = match raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(inner) => inner,
            None => raw,
        };
        let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
        if let Ok(ip) = h.parse::<IpAddr>() {
            return Host::Ip(ip.to_canonical());
        }
        match inet_aton(&h) {
            Some(v4) => Host::Ip(IpAddr::V4(v4)),
            None => Host::Name(h),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// IPv4 as `inet_aton(3)` reads it: one to four parts, each decimal, octal (leading 0) or hex
/// (0x); the last part fills the bytes the others leave.
fn inet_aton(s: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        nums.push(u64::from_str_radix(digits, radix).ok()?);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 64 && *last >= 1u64 << room {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    u32::try_from(v | last).ok().map(std::net::Ipv4Addr::from)
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 address, as written: the host and the port
/// text, if any (checked by the caller).
pub fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    Ok(if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{s}': missing ']'"))?;
        (h, after.strip_prefix(':'))
    } else if s.matches(':').count() > 1 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    })
}

fn check_dns(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err("the host must be 1 to 253 characters".into());
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("'{label}' is not a valid DNS label"));
        }
    }
    Ok(())
}

/// Header values: a whole value or an embedded `secret://name` token must parse.
fn check_headers(p: &str, headers: &BTreeMap<String, String>, out: &mut Problems) {
    for (k, v) in headers {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_!#$%&'*+.^`|~".contains(c))
        {
            out.push((format!("{p}.headers.{k}"), "is not a header name".into()));
        }
        for r in secret_tokens(v) {
            if let Err(e) = SecretRef::parse(r) {
                out.push((format!("{p}.headers.{k}"), e));
            }
        }
    }
}

/// The `secret://name` tokens inside a text (a token ends at whitespace, ',' or ';').
pub fn secret_tokens(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find(super::super::SECRET_SCHEME) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .unwrap_or(tail.len());
        out.push(&tail[..end]);
        rest = &tail[end..];
    }
    out
}

fn check_bearer(p: &str, bearer: Option<&str>, out: &mut Problems) {
    if let Some(b) = bearer {
        if !SecretRef::is_reference(b) {
            out.push((
                format!("{p}.bearer"),
                "must be a secret://<name> reference".into(),
            ));
        } else if let Err(e) = SecretRef::parse(b) {
            out.push((format!("{p}.bearer"), e));
        }
    }
}

pub(super) fn validate_http(h: &HttpTool, properties: &[String], out: &mut Problems) {
    let p = "spec.http";
    if !HTTP_METHODS.contains(&h.method.as_str()) {
        out.push((
            format!("{p}.method"),
            format!("'{}' must be one of {}", h.method, HTTP_METHODS.join(", ")),
        ));
    }
    check_placeholders(&format!("{p}.url"), &h.url, properties, out);
    let static_host = match url::Url::parse(&h.url.replace("{{", "x").replace("}}", "x")) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            let host_part = h.url.split("://").nth(1).unwrap_or("");
            let authority = host_part.split(['/', '?', '#']).next().unwrap_or("");
            !authority.contains("{{")
        }
        _ => {
            out.push((
                format!("{p}.url"),
                format!("'{}' must be an http:// or https:// URL", h.url),
            ));
            true
        }
    };
    if !static_host && h.egress.is_empty() {
        out.push((
            format!("{p}.egress"),
            "the URL's host comes from the arguments: list the hosts it may be".into(),
        ));
    }
    for (k, v) in &h.query {
        check_placeholders(&format!("{p}.query.{k}"), v, properties, out);
    }
    if let Some(b) = &h.body {
        check_placeholders(&format!("{p}.body"), b, properties, out);
    }
    check_headers(p, &h.headers, out);
    check_bearer(p, h.bearer.as_deref(), out);
    for (i, e) in h.egress.iter().enumerate() {
        if let Err(m) = EgressRule::parse(e) {
            out.push((format!("{p}.egress[{i}]"), m));
        }
    }
    if let Err(e) = parse_bytes(&h.response_limit) {
        out.push((format!("{p}.responseLimit"), e));
    }
}

pub(super) fn validate_mcp(m: &McpTool, out: &mut Problems) {
    let p = "spec.mcp";
    let ways = [m.stdio.is_some(), m.local.is_some(), m.url.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if ways != 1 {
        out.push((
            p.into(),
            "must name exactly one server: 'stdio' (in a sandbox), 'local' (configured in the tool service) or 'url' (streamable HTTP)".into(),
        ));
    }
    if let Some(prefix) = &m.prefix
        && let Err(e) = crate::ids::check_tool_name(prefix)
    {
        out.push((format!("{p}.prefix"), e));
    }
    if let Some(l) = &m.local
        && let Err(e) = crate::ids::check_name(l)
    {
        out.push((format!("{p}.local"), e));
    }
    if let Some(u) = &m.url {
        match url::Url::parse(u) {
            Ok(x) if matches!(x.scheme(), "http" | "https") && x.host_str().is_some() => {}
            _ => out.push((
                format!("{p}.url"),
                format!("'{u}' must be an http:// or https:// URL"),
            )),
        }
    }
    if (!m.headers.is_empty() || m.bearer.is_some()) && m.url.is_none() {
        out.push((
            format!("{p}.headers"),
            "headers and bearer are for 'url' servers only".into(),
        ));
    }
    check_headers(p, &m.headers, out);
    check_bearer(p, m.bearer.as_deref(), out);
    if let Some(o) = &m.oauth {
        if m.url.is_none() {
            out.push((
                format!("{p}.oauth"),
                "is for 'url' servers only (streamable HTTP)".into(),
            ));
        }
        if m.bearer.is_some() {
            out.push((
                format!("{p}.oauth"),
                "and bearer both set the Authorization header: choose one".into(),
            ));
        }
        if m.headers
            .keys()
            .any(|h| h.eq_ignore_ascii_case("authorization"))
        {
            out.push((
                format!("{p}.oauth"),
                "and an Authorization header both set it: remove the header".into(),
            ));
        }
        for (i, sc) in o.scopes.iter().enumerate() {
            if sc.is_empty()
                || !sc
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            {
                out.push((
                    format!("{p}.oauth.scopes[{i}]"),
                    format!("'{sc}' is not a scope token (printable ASCII, no spaces, quotes or backslashes)"),
                ));
            }
        }
        if let Some(c) = &o.client_id
            && (c.trim().is_empty() || c.len() > 512)
        {
            out.push((
                format!("{p}.oauth.clientId"),
                "must be a non-empty client id of at most 512 bytes".into(),
            ));
        }
    }
    if let Some(s) = &m.stdio {
        let sp = format!("{p}.stdio");
        if s.image.trim().is_empty() {
            out.push((format!("{sp}.image"), "must name an image".into()));
        }
        if s.command.is_empty() {
            out.push((
                format!("{sp}.command"),
                "must have at least the program to run".into(),
            ));
        }
        validate_sandbox(
            &sp,
            &SandboxFields {
                env: &s.env,
                secret_files: &s.secret_files,
                limits: &s.limits,
                runtime: s.runtime.as_deref(),
                pool: &s.pool,
                egress: &s.egress,
                credentials: &s.credentials,
            },
            out,
        );
    }
}
