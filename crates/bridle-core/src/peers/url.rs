//! The forms a peer URL takes, parsed once: one address (dialled as one channel, as it always
//! was), `dns:///host:port` (every A/AAAA record of `host`, the Kubernetes headless-Service
//! pattern) or a comma-separated list of addresses.

use std::fmt;

/// Where a service's peer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerUrl {
    /// `http://host:port` or `https://host:port`: one channel to that address, no discovery.
    Single(String),
    /// `dns:///host:port`: every address `host` resolves to, re-resolved over time.
    Dns(HostPort),
    /// `http://a:1,https://b:2`: each entry resolved and used (an IP is its own address).
    List(Vec<Entry>),
}

/// A host name (or IP literal) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One address of a fixed list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub https: bool,
    pub at: HostPort,
}

impl PeerUrl {
    /// Parses `value`; the error says what is wrong with it (the caller adds which option).
    pub fn parse(value: &str) -> Result<PeerUrl, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(
                "is empty: give an http(s):// address, dns:///host:port or a \
                        comma-separated list of addresses"
                    .into(),
            );
        }
        if let Some(rest) = value.strip_prefix("dns:") {
            return parse_dns(value, rest).map(PeerUrl::Dns);
        }
        if value.contains(',') {
            let mut out = Vec::new();
            for (i, part) in value.split(',').enumerate() {
                let part = part.trim();
                if part.is_empty() {
                    return Err(format!(
                        "'{value}': entry {} of the list is empty (a stray comma?)",
                        i + 1
                    ));
                }
                out.push(
                    parse_entry(part)
                        .map_err(|e| format!("'{value}': entry {} ('{part}') {e}", i + 1))?,
                );
            }
            return Ok(PeerUrl::List(out));
        }
        // One address is dialled as it always was; the channel (and the options' URL check)
        // say what is wrong with it.
        Ok(PeerUrl::Single(value.to_string()))
    }

    /// One `http(s)://host:port` address as a list of one (dialled through discovery).
    pub fn one(value: &str) -> Result<PeerUrl, String> {
        parse_entry(value.trim())
            .map(|e| PeerUrl::List(vec![e]))
            .map_err(|e| format!("'{value}' {e}"))
    }

    /// Whether calls go through discovery (several addresses, or a name re-resolved).
    pub fn is_discovered(&self) -> bool {
        !matches!(self, PeerUrl::Single(_))
    }
}

fn parse_dns(whole: &str, rest: &str) -> Result<HostPort, String> {
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(format!(
            "'{whole}' is not a DNS target: write dns:///host:port (three slashes)"
        ));
    };
    let Some((authority, name)) = rest.split_once('/') else {
        return Err(format!(
            "'{whole}' is not a DNS target: write dns:///host:port (three slashes)"
        ));
    };
    if !authority.is_empty() {
        return Err(format!(
            "'{whole}' names a DNS server ('{authority}'), which Bridle does not support: the \
             system's resolver is used; write dns:///{name}"
        ));
    }
    host_port(name).map_err(|e| format!("'{whole}': {e}"))
}

fn parse_entry(part: &str) -> Result<Entry, String> {
    let uri: http::Uri = part
        .parse()
        .map_err(|e| format!("is not a URL ({e}): write http://host:port or https://host:port"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "has scheme '{other}', which is not one of http, https (or dns:/// for a name \
                 whose every address is used)"
            ));
        }
        None => return Err("has no scheme: write http://host:port or https://host:port".into()),
    };
    if !matches!(uri.path(), "" | "/") {
        return Err(format!(
            "has a path ('{}'), which a gRPC address cannot have",
            uri.path()
        ));
    }
    let Some(host) = uri.host() else {
        return Err("has no host".into());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Entry {
        https,
        at: HostPort { host, port },
    })
}

fn host_port(s: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let Some((h, p)) = v6.split_once("]:") else {
            return Err(format!("'{s}' has no port: write [address]:port"));
        };
        (h, p)
    } else {
        let Some((h, p)) = s.rsplit_once(':') else {
            return Err(format!("'{s}' has no port: write host:port"));
        };
        (h, p)
    };
    if host.is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    if host.contains(['/', '?', '#', ' ']) {
        return Err(format!("'{host}' is not a host name"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{port}' is not a port (1-65535)"))?;
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn a_plain_url_stays_one_address() {
        assert_eq!(
            PeerUrl::parse("http://127.0.0.1:50052").unwrap(),
            PeerUrl::Single("http://127.0.0.1:50052".into())
        );
    }

    #[test]
    fn a_dns_target_names_host_and_port() {
        assert_eq!(
            PeerUrl::parse("dns:///bridle-tools-peers.bridle.svc:50053").unwrap(),
            PeerUrl::Dns(hp("bridle-tools-peers.bridle.svc", 50053))
        );
        assert_eq!(
            PeerUrl::parse("dns:///[::1]:7").unwrap(),
            PeerUrl::Dns(hp("::1", 7))
        );
    }

    #[test]
    fn a_list_keeps_each_scheme() {
        let PeerUrl::List(v) =
            PeerUrl::parse("http://10.0.0.1:1, https://router-1.example:2").unwrap()
        else {
            panic!("not a list")
        };
        assert_eq!(
            v,
            vec![
                Entry {
                    https: false,
                    at: hp("10.0.0.1", 1)
                },
                Entry {
                    https: true,
                    at: hp("router-1.example", 2)
                },
            ]
        );
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let cases = [
            ("", "is empty"),
            ("dns://8.8.8.8/tools:1", "names a DNS server ('8.8.8.8')"),
            ("dns:tools:1", "three slashes"),
            ("dns:///tools", "has no port"),
            ("dns:///tools:0", "is not a port"),
            ("dns:///tools:http", "'http' is not a port"),
            ("http://a:1,,http://b:2", "entry 2 of the list is empty"),
            (
                "http://a:1,ftp://b:2",
                "entry 2 ('ftp://b:2') has scheme 'ftp'",
            ),
            ("http://a:1,b:2", "entry 2 ('b:2')"),
            (
                "http://a:1/x,http://b:2",
                "entry 1 ('http://a:1/x') has a path ('/x')",
            ),
        ];
        for (input, want) in cases {
            let e = PeerUrl::parse(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
