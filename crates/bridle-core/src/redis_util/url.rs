//! The forms `redis_url` takes: one server, a Sentinel group, or a Cluster.
//!
//! - `redis://[user:password@]host:port[/db]` (and `rediss`, `redis+unix`, `unix`): one server,
//!   handed to the `redis` crate as it is.
//! - `redis+sentinel://[user:password@]host1:26379,host2:26379/<master name>[/db]`: the
//!   sentinels to ask for the primary of `<master name>`; the credentials and db are the data
//!   nodes' (the sentinels are asked without credentials).
//! - `redis+cluster://[user:password@]seed1:6379,seed2:6379`: seed nodes of a Redis Cluster
//!   (the rest of the cluster is discovered from them); a Cluster has only db 0.
//!
//! Several hosts cannot go through `url::Url` (a host has no commas), so the two multi-host
//! forms are split here by hand.

use std::fmt;

use percent_encoding::percent_decode_str;

/// A host and port, as written in the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Credentials for the data nodes. Never printed: `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A parsed `redis_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisUrl {
    /// One server; the URL as given.
    Single(String),
    Sentinel {
        sentinels: Vec<Addr>,
        master: String,
        db: i64,
        auth: Auth,
    },
    Cluster {
        seeds: Vec<Addr>,
        auth: Auth,
    },
}

pub const SENTINEL_SCHEME: &str = "redis+sentinel";
pub const CLUSTER_SCHEME: &str = "redis+cluster";
const SINGLE_SCHEMES: [&str; 4] = ["redis", "rediss", "redis+unix", "unix"];

impl RedisUrl {
    /// Parses any of the forms in the module docs; the error says what is wrong with the URL
    /// (without repeating a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(
                "is not a URL (expected redis://, redis+sentinel:// or redis+cluster://)".into(),
            );
        };
        match scheme {
            SENTINEL_SCHEME => parse_sentinel(rest),
            CLUSTER_SCHEME => parse_cluster(rest),
            "rediss+sentinel" | "rediss+cluster" => Err(format!(
                "scheme '{scheme}': TLS to a Sentinel group or a Cluster is not supported; use {} or {}",
                SENTINEL_SCHEME, CLUSTER_SCHEME
            )),
            s if SINGLE_SCHEMES.contains(&s) => {
                let u = url::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
                if s == "redis" || s == "rediss" {
                    u.host_str()
                        .filter(|h| !h.is_empty())
                        .ok_or("has no host")?;
                }
                Ok(RedisUrl::Single(url.to_string()))
            }
            other => Err(format!(
                "scheme '{other}' is not one of {}, {SENTINEL_SCHEME}, {CLUSTER_SCHEME}",
                SINGLE_SCHEMES.join(", ")
            )),
        }
    }

    /// The URL for messages: the password replaced by `***`.
    pub fn shown(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn hosts(a: &[Addr]) -> String {
            a.iter().map(Addr::to_string).collect::<Vec<_>>().join(",")
        }
        fn auth(a: &Auth) -> String {
            match (&a.username, &a.password) {
                (Some(u), Some(_)) => format!("{u}:***@"),
                (None, Some(_)) => ":***@".into(),
                (Some(u), None) => format!("{u}@"),
                (None, None) => String::new(),
            }
        }
        match self {
            RedisUrl::Single(u) => f.write_str(&single_shown(u)),
            RedisUrl::Sentinel {
                sentinels,
                master,
                db,
                auth: a,
            } => write!(
                f,
                "{SENTINEL_SCHEME}://{}{}/{master}/{db}",
                auth(a),
                hosts(sentinels)
            ),
            RedisUrl::Cluster { seeds, auth: a } => {
                write!(f, "{CLUSTER_SCHEME}://{}{}", auth(a), hosts(seeds))
            }
        }
    }
}

fn single_shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable redis url>".to_string(),
    }
}

/// `[user:password@]hosts[/path]` -> (auth, hosts, path)
fn split(rest: &str, default_port: u16) -> Result<(Auth, Vec<Addr>, &str), String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    if authority.contains('?') || path.contains('?') || rest.contains('#') {
        return Err("query parameters and fragments are not supported in this form".into());
    }
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let decode = |s: &str, what: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("the {what} is not valid percent-encoded UTF-8"))
    };
    let auth = match userinfo {
        None => Auth::default(),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            Auth {
                username: (!u.is_empty()).then(|| decode(u, "username")).transpose()?,
                password: p.map(|p| decode(p, "password")).transpose()?,
            }
        }
    };
    let mut addrs = Vec::new();
    for (i, h) in hostlist.split(',').enumerate() {
        let n = i + 1;
        let h = h.trim();
        if h.is_empty() {
            return Err(format!("host {n} of the list is empty"));
        }
        let (host, port) = if let Some(v6) = h.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("host {n} ('{h}') opens '[' without closing it"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("host {n} ('{h}'): expected ':<port>' after ']'")),
            }
        } else {
            match h.rsplit_once(':') {
                Some((host, p)) => (host, Some(p)),
                None => (h, None),
            }
        };
        if host.is_empty() {
            return Err(format!("host {n} ('{h}') has no host name"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                format!("host {n} ('{h}'): port '{p}' is not a number from 1 to 65535")
            })?,
        };
        addrs.push(Addr {
            host: host.to_string(),
            port,
        });
    }
    Ok((auth, addrs, path))
}

fn parse_sentinel(rest: &str) -> Result<RedisUrl, String> {
    let (auth, sentinels, path) = split(rest, 26379)?;
    let mut parts = path.split('/');
    let master = parts.next().unwrap_or_default();
    if master.is_empty() {
        return Err(format!(
            "names no master: expected {SENTINEL_SCHEME}://host:26379[,host:26379...]/<master name>[/db]"
        ));
    }
    let master = percent_decode_str(master)
        .decode_utf8()
        .map_err(|_| "the master name is not valid percent-encoded UTF-8".to_string())?
        .into_owned();
    let db = match parts.next() {
        None | Some("") => 0,
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("db '{d}' after the master name is not a number"))?,
    };
    if let Some(extra) = parts.find(|p| !p.is_empty()) {
        return Err(format!(
            "has '{extra}' after /<master name>/<db>; nothing may follow the db"
        ));
    }
    Ok(RedisUrl::Sentinel {
        sentinels,
        master,
        db,
        auth,
    })
}

fn parse_cluster(rest: &str) -> Result<RedisUrl, String> {
    let (auth, seeds, path) = split(rest, 6379)?;
    match path.trim_matches('/') {
        "" | "0" => {}
        p => {
            return Err(format!(
                "has path '/{p}': a Redis Cluster has only db 0, so {CLUSTER_SCHEME}:// takes no db"
            ));
        }
    }
    Ok(RedisUrl::Cluster { seeds, auth })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(h: &str, p: u16) -> Addr {
        Addr {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn a_sentinel_url_names_its_sentinels_master_and_db() {
        let u = RedisUrl::parse("redis+sentinel://a:26379,b:26380,[::1]/mymaster/2").unwrap();
        assert_eq!(
            u,
            RedisUrl::Sentinel {
                sentinels: vec![addr("a", 26379), addr("b", 26380), addr("::1", 26379)],
                master: "mymaster".into(),
                db: 2,
                auth: Auth::default(),
            }
        );
        let u = RedisUrl::parse("redis+sentinel://u:p%40ss@a/m").unwrap();
        let RedisUrl::Sentinel { auth, db, .. } = &u else {
            panic!("{u:?}")
        };
        assert_eq!(auth.username.as_deref(), Some("u"));
        assert_eq!(auth.password.as_deref(), Some("p@ss"));
        assert_eq!(*db, 0);
        assert_eq!(u.to_string(), "redis+sentinel://u:***@a:26379/m/0");
        assert!(
            !format!("{u:?}").contains("p@ss"),
            "Debug shows the password"
        );
    }

    #[test]
    fn a_cluster_url_lists_seeds_and_refuses_a_db() {
        assert_eq!(
            RedisUrl::parse("redis+cluster://s1:7000,s2").unwrap(),
            RedisUrl::Cluster {
                seeds: vec![addr("s1", 7000), addr("s2", 6379)],
                auth: Auth::default(),
            }
        );
        let e = RedisUrl::parse("redis+cluster://s1:7000/3").unwrap_err();
        assert!(e.contains("only db 0"), "{e}");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("redis+sentinel://a:26379", "names no master"),
            (
                "redis+sentinel://a:26379,,b/m",
                "host 2 of the list is empty",
            ),
            ("redis+sentinel://a:99999/m", "port '99999'"),
            ("redis+sentinel://a/m/x", "db 'x'"),
            ("redis+sentinel://a/m/1/z", "nothing may follow"),
            ("redis+cluster://[::1/", "opens '['"),
            ("redis+cluster://a?x=1", "query parameters"),
            ("rediss+cluster://a", "TLS"),
            ("http://a", "scheme 'http'"),
            ("localhost:6379", "is not a URL"),
        ] {
            let e = RedisUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_single_server_url_is_kept_as_given_and_shown_without_its_password() {
        let u = RedisUrl::parse("redis://:secret@h:6379/1").unwrap();
        assert_eq!(u, RedisUrl::Single("redis://:secret@h:6379/1".into()));
        assert_eq!(u.to_string(), "redis://:***@h:6379/1");
    }
}
