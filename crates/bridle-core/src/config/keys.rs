//! Unknown option keys: a key in the config file that no option has, or a `BRIDLE_*` variable
//! that is almost an option's name, is an error that names it and the nearest valid key — a
//! misspelt option must not be dropped silently.
//!
//! Which keys exist comes from the options type's JSON Schema (schemars), which sees through
//! `#[serde(flatten)]` (serde's `deny_unknown_fields` cannot be combined with it) and knows
//! the keys of nested tables and of maps.
//!
//! The file is checked strictly: everything in it is meant for this service. Environment
//! variables are not all Bridle's: compose files, scripts and Kubernetes (service links such
//! as `BRIDLE_ROUTER_SERVICE_HOST`) set variables that merely share the prefix. So a variable
//! that is not an option is an error only when it is within two edits of one (a misspelling:
//! `BRIDLE_REDIS_UR`), and left alone otherwise.

use regex::Regex;
use serde_json::{Map, Value};

/// Every key an options type accepts, from its JSON Schema.
pub struct Known {
    root: Value,
}

impl Known {
    pub fn of<T: schemars::JsonSchema>() -> Self {
        Self {
            root: schemars::schema_for!(T).to_value(),
        }
    }

    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        let mut node = node;
        // A chain of references ends; a cycle cannot occur in options types, but bound it.
        for _ in 0..16 {
            let Some(r) = node.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let Some(name) = r.strip_prefix("#/$defs/") else {
                break;
            };
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// The node and every schema it is made of (`allOf`/`anyOf`/`oneOf`: flattened structs,
    /// `Option<T>`), resolved.
    fn parts<'a>(&'a self, node: &'a Value, out: &mut Vec<&'a Value>) {
        let node = self.resolve(node);
        out.push(node);
        for k in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = node.get(k).and_then(Value::as_array) {
                for n in list {
                    self.parts(n, out);
                }
            }
        }
    }

    /// What a key leads to under `node`: Some(schema) when it exists (for a map, the value's
    /// schema), None when it does not.
    fn child<'a>(&'a self, node: &'a Value, key: &str) -> Option<&'a Value> {
        let mut parts = Vec::new();
        self.parts(node, &mut parts);
        for p in &parts {
            if let Some(s) = p.get("properties").and_then(|m| m.get(key)) {
                return Some(s);
            }
        }
        // A map (no properties of its own) accepts any key.
        for p in &parts {
            if p.get("properties").is_none()
                && let Some(v) = p.get("additionalProperties")
                && v.is_object()
            {
                return Some(v);
            }
        }
        None
    }

    /// Whether `path` (already split) names an option, or a key inside a map option.
    pub fn has(&self, path: &[&str]) -> bool {
        let mut node = &self.root;
        for seg in path {
            match self.child(node, seg) {
                Some(n) => node = n,
                None => return false,
            }
        }
        true
    }

    /// Every option's path ("redis_url", "inbox", "inbox.listen"); map keys are not listed.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&self.root, &mut Vec::new(), &mut out, 0);
        out
    }

    fn walk(&self, node: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, d: u8) {
        if d > 8 {
            return;
        }
        let mut parts = Vec::new();
        self.parts(node, &mut parts);
        for p in parts {
            if let Some(props) = p.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    prefix.push(k.clone());
                    out.push(prefix.clone());
                    self.walk(v, prefix, out, d + 1);
                    prefix.pop();
                }
            }
        }
    }

    /// The option path nearest to `path` as written with `sep`, and how many edits away.
    fn nearest(&self, written: &str, sep: &str) -> Option<(String, usize)> {
        self.paths()
            .into_iter()
            .map(|p| {
                let s = p.join(sep);
                (strsim::osa_distance(written, &s), s)
            })
            .min()
            .map(|(d, s)| (s, d))
    }
}

/// Unknown keys of a config file's table: "key: unknown option (did you mean ...?)" each.
pub fn unknown_in_file(known: &Known, table: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    walk_file(known, table, &mut Vec::new(), &mut out);
    out
}

fn walk_file(
    known: &Known,
    table: &Map<String, Value>,
    prefix: &mut Vec<String>,
    out: &mut Vec<String>,
) {
    for (k, v) in table {
        prefix.push(k.clone());
        let path: Vec<&str> = prefix.iter().map(String::as_str).collect();
        if !known.has(&path) {
            let written = prefix.join(".");
            let hint = known
                .nearest(&written, ".")
                .map(|(s, _)| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            out.push(format!("{written}: unknown option{hint}"));
        } else if let Value::Object(inner) = v {
            walk_file(known, inner, prefix, out);
        }
        prefix.pop();
    }
}

/// Kubernetes' service links: a Service named `bridle-router` gives every pod of its namespace
/// `BRIDLE_ROUTER_SERVICE_HOST`, `BRIDLE_ROUTER_PORT_50052_TCP_ADDR` and the like.
fn is_service_link(rest: &str) -> bool {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(.*_)?(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$",
        )
        .ok()
    })
    .as_ref()
    .is_some_and(|re| re.is_match(rest))
}

/// How far a variable's key may be from an option's before it is taken for someone else's.
fn close_enough(key: &str, distance: usize) -> bool {
    distance > 0 && distance <= if key.len() < 6 { 1 } else { 2 }
}

/// Variables among `vars` that look like misspelt options of `service`: with its own prefix
/// (`BRIDLE_<SERVICE>_`) or the shared one (`BRIDLE_`, minus every service's own prefix).
/// `services` are the service-specific prefixes ("ROUTER_", ...).
pub fn misspelt_in_env(
    known: &Known,
    service: &str,
    services: &[&str],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let own = format!("BRIDLE_{}_", service.to_ascii_uppercase());
    let mut out = Vec::new();
    for (name, _) in vars {
        let upper = name.to_ascii_uppercase();
        let rest = if let Some(r) = upper.strip_prefix(&own) {
            r
        } else if let Some(r) = upper.strip_prefix("BRIDLE_") {
            if services.iter().any(|s| r.starts_with(s)) {
                continue;
            }
            r
        } else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        let path: Vec<&str> = key.split("__").collect();
        if known.has(&path) || is_service_link(rest) {
            continue;
        }
        if let Some((nearest, d)) = known.nearest(&key, "__")
            && close_enough(&key, d)
        {
            let which = if upper.starts_with(&own) {
                own.clone()
            } else {
                "BRIDLE_".to_string()
            };
            out.push(format!(
                "{name}: '{key}' is not a {service} option (did you mean '{}', set by {which}{}?)",
                nearest.replace("__", "."),
                nearest.to_ascii_uppercase()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        listen: Option<String>,
        public_url: String,
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Flat {
        request_timeout: u64,
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Opts {
        #[serde(flatten)]
        server: Flat,
        redis_url: String,
        inbox: Inner,
        servers: std::collections::BTreeMap<String, Inner>,
        maybe: Option<Inner>,
    }

    #[test]
    fn flattened_nested_optional_and_map_keys_are_known() {
        let k = Known::of::<Opts>();
        for p in [
            &["request_timeout"][..],
            &["redis_url"],
            &["inbox"],
            &["inbox", "listen"],
            &["servers", "anything", "public_url"],
            &["maybe", "public_url"],
        ] {
            assert!(k.has(p), "{p:?}");
        }
        for p in [
            &["redis"][..],
            &["inbox", "listn"],
            &["servers", "x", "nope"],
        ] {
            assert!(!k.has(p), "{p:?}");
        }
    }

    #[test]
    fn a_file_key_that_is_no_option_is_named_with_the_nearest() {
        let k = Known::of::<Opts>();
        let table = serde_json::json!({"redis_ur": "x", "inbox": {"listn": "y", "listen": "z"}});
        let Value::Object(t) = table else {
            unreachable!()
        };
        let mut errs = unknown_in_file(&k, &t);
        errs.sort();
        assert_eq!(
            errs,
            [
                "inbox.listn: unknown option (did you mean 'inbox.listen'?)",
                "redis_ur: unknown option (did you mean 'redis_url'?)"
            ]
        );
    }

    #[test]
    fn a_misspelt_variable_is_an_error_and_other_programs_variables_are_not() {
        let k = Known::of::<Opts>();
        let vars = [
            "BRIDLE_REDIS_UR",
            "BRIDLE_DEMO_INBOX_LISTEN",
            "BRIDLE_DEMO_REQUEST_TIMEOUT",
            "BRIDLE_TOOLS_IMAGE",
            "BRIDLE_DEMO_IMAGE",
            "BRIDLE_DEMO_SERVICE_HOST",
            "BRIDLE_DEMO_PORT_50052_TCP_ADDR",
            "BRIDLE_ROUTER_REDIS_UR",
            "BRIDLE_LOG",
            "PATH",
        ]
        .map(|v| (v.to_string(), String::new()));
        let errs = misspelt_in_env(&k, "demo", &["DEMO_", "ROUTER_"], vars);
        assert_eq!(
            errs,
            [
                "BRIDLE_REDIS_UR: 'redis_ur' is not a demo option (did you mean 'redis_url', set by BRIDLE_REDIS_URL?)",
                "BRIDLE_DEMO_INBOX_LISTEN: 'inbox_listen' is not a demo option (did you mean 'inbox.listen', set by BRIDLE_DEMO_INBOX__LISTEN?)",
            ]
        );
    }
}
