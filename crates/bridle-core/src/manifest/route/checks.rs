//! Validation of a ModelRoute: every problem found, each with its field path.

use std::collections::HashSet;

use super::super::Problems;
use super::super::credentials::SecretRef;
use super::*;
use crate::ids::{check_name, check_tool_name};

pub(in crate::manifest) fn validate(
    s: &mut ModelRouteSpec,
    base_dir: Option<&std::path::Path>,
    out: &mut Problems,
) {
    if s.targets.is_empty() {
        out.push((
            "spec.targets".into(),
            "must list at least one target".into(),
        ));
    }
    let mut names = HashSet::new();
    for (i, t) in s.targets.iter_mut().enumerate() {
        let p = format!("spec.targets[{i}]");
        if t.name.is_empty() {
            t.name = t.provider.as_str().to_string();
        }
        if let Err(e) = check_name(&t.name) {
            out.push((format!("{p}.name"), e));
        }
        if !names.insert(t.name.clone()) {
            out.push((
                format!("{p}.name"),
                format!("'{}' is used by two targets; give each a name", t.name),
            ));
        }
        if let Some(k) = &t.api_key
            && let Err(e) = SecretRef::parse(k).and_then(|r| {
                if SecretRef::is_reference(k) {
                    Ok(r)
                } else {
                    Err("must be a secret://<name> reference".into())
                }
            })
        {
            out.push((format!("{p}.apiKey"), e));
        }
        if t.timeout.is_some_and(|d| d.is_zero()) {
            out.push((format!("{p}.timeout"), "must be more than zero".into()));
        }
        if let Some(u) = &t.base_url {
            let mut v = Vec::new();
            crate::config::check_url(&format!("{p}.baseUrl"), u, &["http", "https"], &mut v);
            for m in v {
                let (f, msg) = m.split_once(": ").unwrap_or(("", &m));
                out.push((f.to_string(), msg.to_string()));
            }
        }
        if t.weight.is_some() && s.strategy != Strategy::Weighted {
            out.push((
                format!("{p}.weight"),
                format!(
                    "is only used by strategy weighted (this route's is {})",
                    s.strategy.as_str()
                ),
            ));
        }
        if let Some(price) = &t.price {
            validate_price(price, &format!("{p}.price"), out);
        }
        if t.max_output_tokens == Some(0) {
            out.push((format!("{p}.maxOutputTokens"), "must be at least 1".into()));
        }
        if t.provider != ProviderKind::Openai && t.azure.is_some() {
            out.push((
                format!("{p}.azure"),
                "only provider openai takes Azure settings".into(),
            ));
        }
        if t.provider != ProviderKind::Openai && t.api.is_some() {
            out.push((
                format!("{p}.api"),
                "only provider openai takes an api (chat-completions or responses)".into(),
            ));
        }
        if t.azure.is_some() && t.api == Some(super::OpenAiApi::Responses) {
            out.push((
                format!("{p}.api"),
                "responses is not supported with azure: this router calls Azure deployments through Chat Completions; leave api out".into(),
            ));
        }
        match t.provider {
            ProviderKind::Openai | ProviderKind::Anthropic => {
                if t.model.as_deref().is_none_or(str::is_empty) {
                    out.push((
                        format!("{p}.model"),
                        format!("is required for provider {}", t.provider.as_str()),
                    ));
                }
                if t.script.is_some() || t.script_file.is_some() {
                    out.push((
                        format!("{p}.script"),
                        "only the scripted provider takes a script".into(),
                    ));
                }
                if let Some(az) = &t.azure {
                    validate_azure(az, t.base_url.is_some(), &p, out);
                }
            }
            ProviderKind::Scripted => validate_script(t, &p, base_dir, out),
        }
    }
    if s.strategy == Strategy::Weighted
        && !s.targets.is_empty()
        && s.targets.iter().all(|t| t.weight == Some(0))
    {
        out.push((
            "spec.targets".into(),
            "strategy weighted needs at least one target with a weight above 0".into(),
        ));
    }
    if s.timeout.is_some_and(|d| d.is_zero()) {
        out.push(("spec.timeout".into(), "must be more than zero".into()));
    }
    for (field, rate) in [
        ("perTenant", &s.limits.per_tenant),
        ("perAgent", &s.limits.per_agent),
    ] {
        let Some(rate) = rate else { continue };
        if rate.rpm.is_none() && rate.tpm.is_none() {
            out.push((
                format!("spec.limits.{field}"),
                "set rpm, tpm or both (or leave the limit out)".into(),
            ));
        }
        for (k, v) in [("rpm", rate.rpm), ("tpm", rate.tpm)] {
            if v == Some(0) {
                out.push((
                    format!("spec.limits.{field}.{k}"),
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
        }
    }
}

fn validate_price(price: &PriceOverride, p: &str, out: &mut Problems) {
    for (k, v) in [
        ("input", Some(price.input)),
        ("output", Some(price.output)),
        ("cacheRead", price.cache_read),
        ("cacheWrite", price.cache_write),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && (0.0..=MAX_PRICE_USD_PER_MTOK).contains(&v))
        {
            out.push((
                format!("{p}.{k}"),
                format!(
                    "{v} is not a price in dollars per million tokens between 0 and {MAX_PRICE_USD_PER_MTOK}"
                ),
            ));
        }
    }
}

fn validate_azure(az: &AzureSettings, has_base_url: bool, p: &str, out: &mut Problems) {
    if !has_base_url {
        out.push((
            format!("{p}.baseUrl"),
            "is required with azure: the resource endpoint, https://<resource>.openai.azure.com"
                .into(),
        ));
    }
    let path_safe = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !path_safe(&az.deployment) {
        out.push((
            format!("{p}.azure.deployment"),
            format!(
                "'{}' is not a deployment name (letters, digits, '-', '_', '.')",
                az.deployment
            ),
        ));
    }
    if !path_safe(&az.api_version) {
        out.push((
            format!("{p}.azure.apiVersion"),
            format!(
                "'{}' is not an API version such as {DEFAULT_AZURE_API_VERSION}",
                az.api_version
            ),
        ));
    }
}

fn validate_script(
    t: &mut Target,
    p: &str,
    base_dir: Option<&std::path::Path>,
    out: &mut Problems,
) {
    if let (Some(file), Some(dir)) = (&t.script_file, base_dir) {
        if t.script.is_some() {
            out.push((
                format!("{p}.scriptFile"),
                "give either script or scriptFile, not both".into(),
            ));
        } else {
            match read_script(&dir.join(file)) {
                Ok(turns) => {
                    t.script = Some(turns);
                    t.script_file = None;
                }
                Err(e) => out.push((format!("{p}.scriptFile"), e)),
            }
        }
    }
    if t.script_file.is_some() {
        out.push((
            format!("{p}.scriptFile"),
            "must be read by `bridle apply`, which sends the turns inline as 'script'".into(),
        ));
    }
    match &t.script {
        None if t.script_file.is_none() => out.push((
            format!("{p}.script"),
            "the scripted provider needs a script (or scriptFile)".into(),
        )),
        None => {}
        Some(turns) if turns.is_empty() => {
            out.push((format!("{p}.script"), "must have at least one turn".into()))
        }
        Some(turns) => {
            for (j, turn) in turns.iter().enumerate() {
                if turn.text.is_empty() && turn.tool_calls.is_empty() {
                    out.push((format!("{p}.script[{j}]"), "needs text or toolCalls".into()));
                }
                for (k, c) in turn.tool_calls.iter().enumerate() {
                    if let Err(e) = check_tool_name(&c.name) {
                        out.push((format!("{p}.script[{j}].toolCalls[{k}].name"), e));
                    }
                    if !c.arguments.is_object() {
                        out.push((
                            format!("{p}.script[{j}].toolCalls[{k}].arguments"),
                            "must be an object".into(),
                        ));
                    }
                }
            }
        }
    }
}

/// A script file: a YAML list of turns, or a mapping with a `turns` list.
fn read_script(path: &std::path::Path) -> Result<Vec<ScriptTurn>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        turns: Vec<ScriptTurn>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<ScriptTurn>),
        File(File),
    }
    match crate::yaml::from_str::<Either>(&text) {
        Ok(Either::List(t)) | Ok(Either::File(File { turns: t })) => Ok(t),
        Err(_) => {
            // Untagged errors say nothing useful; decode again as a list for the real reason.
            let e = crate::yaml::from_str::<Vec<ScriptTurn>>(&text).err();
            Err(format!(
                "{} is not a list of turns (each with text and/or toolCalls){}",
                path.display(),
                e.map(|e| format!(": {e}")).unwrap_or_default()
            ))
        }
    }
}
