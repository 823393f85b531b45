//! Secrets a tool declares (`secret://` values of its environment, secret files, header
//! tokens), resolved through the secrets broker for one call (scope: tenant, agent, run and
//! tool). Values are used for that call only, never stored or logged, and join the run's
//! redaction set ([`RunSecrets`]): every later call of the run is scrubbed of them too, since a
//! call can leave a value in the run's workspace for a call without secrets to print.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bridle_core::client::Traced as Channel;
use bridle_core::manifest::{SecretRef, secret_tokens};
use bridle_core::redact::Redactor;
use bridle_proto::secrets_client::SecretsClient;
use bridle_proto::{ResolveRequest, Scope};

use crate::Error;

/// Where a reference was written, for messages ("environment variable TOKEN").
#[derive(Clone, Debug)]
pub struct Wanted {
    pub place: String,
    pub reference: SecretRef,
}

/// Resolved values by secret name, and the redactor for them.
#[derive(Debug, Default)]
pub struct Resolved {
    values: BTreeMap<String, String>,
    pub redactor: Redactor,
    /// Length of the longest secret value, to size the output slack.
    pub longest: usize,
}

impl Resolved {
    pub fn value(&self, r: &SecretRef) -> Option<&str> {
        self.values.get(r.name()).map(String::as_str)
    }

    /// Bytes kept past an output cap so a secret at the cut is redacted whole (its base64
    /// and percent-encoded forms are up to three times longer).
    pub fn slack(&self) -> usize {
        self.longest * 3 + 16
    }

    /// `text` with each `secret://name` token replaced by its value.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text.to_string();
        for t in secret_tokens(text) {
            if let Ok(r) = SecretRef::parse(t)
                && let Some(v) = self.value(&r)
            {
                out = out.replacen(t, v, 1);
            }
        }
        out
    }
}

/// References in an environment map.
pub fn env_refs(tool: &str, env: &BTreeMap<String, String>) -> Result<Vec<Wanted>, Error> {
    let mut out = Vec::new();
    for (var, value) in env {
        if SecretRef::is_reference(value) {
            out.push(wanted(tool, &format!("environment variable {var}"), value)?);
        }
    }
    Ok(out)
}

/// References of credentials bound at the egress boundary.
pub fn credential_refs(
    tool: &str,
    credentials: &[bridle_core::manifest::CredentialBinding],
) -> Result<Vec<Wanted>, Error> {
    credentials
        .iter()
        .map(|c| wanted(tool, &format!("credential for {}", c.host), &c.secret))
        .collect()
}

/// The credentials of a call, resolved, for the egress proxy to add.
pub fn injections(
    credentials: &[bridle_core::manifest::CredentialBinding],
    r: &Resolved,
) -> Vec<crate::egress::inject::Injection> {
    credentials
        .iter()
        .filter_map(|c| {
            let v = r.value(&SecretRef::parse(&c.secret).ok()?)?;
            Some(crate::egress::inject::Injection {
                binding: c.clone(),
                value: secrecy::SecretString::from(v.to_string()),
            })
        })
        .collect()
}

/// References of secret files.
pub fn file_refs(tool: &str, files: &BTreeMap<String, String>) -> Result<Vec<Wanted>, Error> {
    files
        .iter()
        .map(|(name, value)| wanted(tool, &format!("secret file {name}"), value))
        .collect()
}

/// Tokens inside header values (and a bearer reference).
pub fn header_refs(
    tool: &str,
    headers: &BTreeMap<String, String>,
    bearer: Option<&str>,
) -> Result<Vec<Wanted>, Error> {
    let mut out = Vec::new();
    for (name, value) in headers {
        for t in secret_tokens(value) {
            out.push(wanted(tool, &format!("header {name}"), t)?);
        }
    }
    if let Some(b) = bearer {
        out.push(wanted(tool, "bearer", b)?);
    }
    Ok(out)
}

fn wanted(tool: &str, place: &str, value: &str) -> Result<Wanted, Error> {
    let reference = SecretRef::parse(value).map_err(|reason| Error::Secret {
        tool: tool.to_string(),
        var: place.to_string(),
        reason,
    })?;
    Ok(Wanted {
        place: place.to_string(),
        reference,
    })
}

/// The redaction set of each live run: every value resolved for any call of the run, held
/// in memory only (never in Redis), until the run ends or sits idle past the run TTL.
pub struct RunSecrets {
    runs: Mutex<HashMap<(String, String), RunSet>>,
    idle_ttl: Duration,
}

struct RunSet {
    redactor: Redactor,
    longest: usize,
    touched: Instant,
}

impl RunSecrets {
    pub fn new(idle_ttl: Duration) -> Self {
        Self {
            runs: Mutex::default(),
            idle_ttl,
        }
    }

    fn key(scope: &Scope) -> Option<(String, String)> {
        (!scope.run_id.is_empty()).then(|| {
            (
                crate::registry::tenant_or_default(&scope.tenant).to_string(),
                scope.run_id.clone(),
            )
        })
    }

    /// Adds `values` to the run's set, and returns the set (with the longest value's length).
    /// A call outside any run gets just `values`.
    fn join<'a>(
        &self,
        scope: &Scope,
        values: impl Iterator<Item = &'a str> + Clone,
    ) -> (Redactor, usize) {
        let longest = values.clone().map(str::len).max().unwrap_or(0);
        let Some(key) = Self::key(scope) else {
            return (Redactor::new(values), longest);
        };
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if values.clone().next().is_none() {
            // Nothing to add: a run that never resolved a secret gets no entry.
            return runs.get_mut(&key).map_or_else(Default::default, |s| {
                s.touched = Instant::now();
                (s.redactor.clone(), s.longest)
            });
        }
        let set = runs.entry(key).or_insert_with(|| RunSet {
            redactor: Redactor::default(),
            longest: 0,
            touched: Instant::now(),
        });
        for v in values {
            set.redactor.add(v);
        }
        set.longest = set.longest.max(longest);
        set.touched = Instant::now();
        (set.redactor.clone(), set.longest)
    }

    /// The run's redaction set as it stands (empty outside a run or before any secret).
    pub fn redactor(&self, scope: &Scope) -> (Redactor, usize) {
        self.join(scope, std::iter::empty())
    }

    /// Forgets a run that ended.
    pub fn forget(&self, tenant: &str, run_id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.remove(&(tenant.to_string(), run_id.to_string()));
    }

    /// Forgets runs that had no call for the run TTL (their sandboxes are reaped then too).
    pub fn reap(&self) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|_, s| s.touched.elapsed() < self.idle_ttl);
    }
}

/// Resolves what `wanted` names for this call; the result redacts everything the run has
/// resolved so far, these values included.
pub async fn resolve(
    client: &SecretsClient<Channel>,
    runs: &RunSecrets,
    scope: &Scope,
    tool: &str,
    wanted: &[Wanted],
) -> Result<Resolved, Error> {
    if wanted.is_empty() {
        let mut resolved = Resolved::default();
        (resolved.redactor, resolved.longest) = runs.redactor(scope);
        return Ok(resolved);
    }
    // A phase of the tool call's span: how long the broker took (names only, never values).
    let span = tracing::info_span!(
        "resolve_secrets",
        "otel.kind" = "internal",
        "bridle.secrets.count" = wanted.len(),
    );
    tracing::Instrument::instrument(resolve_wanted(client, runs, scope, tool, wanted), span).await
}

async fn resolve_wanted(
    client: &SecretsClient<Channel>,
    runs: &RunSecrets,
    scope: &Scope,
    tool: &str,
    wanted: &[Wanted],
) -> Result<Resolved, Error> {
    let mut resolved = Resolved::default();
    let mut names: Vec<String> = wanted
        .iter()
        .map(|w| w.reference.name().to_string())
        .collect();
    names.sort();
    names.dedup();
    let req = ResolveRequest {
        scope: Some(Scope {
            tool: tool.to_string(),
            ..scope.clone()
        }),
        names,
        refresh: false,
    };
    let places = || {
        wanted
            .iter()
            .map(|w| w.place.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let resp = client
        .clone()
        .resolve(req)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Error::Core(bridle_core::client::call_error("secrets broker", status))
            }
            _ => Error::Secret {
                tool: tool.to_string(),
                var: places(),
                reason: format!("the secrets broker refused: {}", status.message()),
            },
        })?;
    for s in resp.into_inner().secrets {
        resolved.values.insert(s.name, s.value);
    }
    (resolved.redactor, resolved.longest) =
        runs.join(scope, resolved.values.values().map(String::as_str));
    for w in wanted {
        if resolved.value(&w.reference).is_none() {
            return Err(Error::Secret {
                tool: tool.to_string(),
                var: w.place.clone(),
                reason: format!("the secrets broker returned no value for {}", w.reference),
            });
        }
    }
    Ok(resolved)
}

/// The environment with its references replaced by their values.
pub fn env_with(env: &BTreeMap<String, String>, r: &Resolved) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            let value = match SecretRef::parse(v) {
                Ok(sr) if SecretRef::is_reference(v) => {
                    r.value(&sr).unwrap_or_default().to_string()
                }
                _ => v.clone(),
            };
            (k.clone(), value)
        })
        .collect()
}

/// Secret files as (name, value).
pub fn files_with(files: &BTreeMap<String, String>, r: &Resolved) -> Vec<(String, String)> {
    files
        .iter()
        .filter_map(|(name, v)| {
            let sr = SecretRef::parse(v).ok()?;
            Some((name.clone(), r.value(&sr)?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(run: &str) -> Scope {
        Scope {
            tenant: "acme".into(),
            run_id: run.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_keeps_redacting_what_any_of_its_calls_resolved_until_it_ends() {
        let runs = RunSecrets::new(Duration::from_secs(3600));
        let (r, longest) = runs.join(&scope("r1"), ["s3cr3t-one"].into_iter());
        assert_eq!(longest, 10);
        assert_eq!(r.redact("x s3cr3t-one y"), "x [REDACTED] y");
        // A later call of the run with no secret of its own.
        let (r, _) = runs.redactor(&scope("r1"));
        assert_eq!(r.redact("cat: s3cr3t-one"), "cat: [REDACTED]");
        // Another run knows nothing of it; a call outside any run only its own values.
        assert!(runs.redactor(&scope("r2")).0.is_empty());
        let (r, _) = runs.join(&scope(""), ["other-value"].into_iter());
        assert_eq!(r.redact("s3cr3t-one other-value"), "s3cr3t-one [REDACTED]");
        // Values add up; the run's end forgets them.
        runs.join(&scope("r1"), ["s3cr3t-two"].into_iter());
        let (r, _) = runs.redactor(&scope("r1"));
        assert_eq!(r.redact("s3cr3t-one s3cr3t-two"), "[REDACTED] [REDACTED]");
        runs.forget("acme", "r1");
        assert!(runs.redactor(&scope("r1")).0.is_empty());
        assert!(
            runs.runs.lock().unwrap().is_empty(),
            "no entry for calls without secrets"
        );
    }

    #[test]
    fn idle_runs_are_reaped() {
        let runs = RunSecrets::new(Duration::ZERO);
        runs.join(&scope("r1"), ["s3cr3t-one"].into_iter());
        runs.reap();
        assert!(runs.runs.lock().unwrap().is_empty());
    }
}
