//! `bridle apply -f PATH`: validate every manifest locally (all errors at once, with file, line
//! and field), then send the set to the orchestrator, which checks references across kinds and
//! applies everything or nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use bridle_core::manifest::{self, Document, ParseOptions};
use bridle_proto as pb;

use crate::conn::{ConnArgs, status};
use crate::out;

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// A manifest file, or a folder of them (*.yaml, *.yml, recursively); `-` reads
    /// manifests from stdin (relative paths in them, like scriptFile, are then relative to the
    /// current folder).
    #[arg(short = 'f', long = "file", required = true)]
    pub paths: Vec<PathBuf>,
    /// Validate and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn apply(conn: &ConnArgs, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for p in &a.paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        anyhow::bail!(
            "no manifest files (*.yaml, *.yml) under {}",
            a.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let docs = load(&files)?;
    let tenant = if conn.tenant.is_empty() {
        bridle_core::manifest::DEFAULT_TENANT
    } else {
        &conn.tenant
    };
    let mut manifests = match parse_local(&docs, tenant) {
        Ok(m) => m,
        Err(e) => {
            out::err(&e.to_string());
            return Ok(ExitCode::from(1));
        }
    };
    // A tenant the CLI only defaulted is left for the server to fill with the caller's.
    for ((m, _), d) in manifests.iter_mut().zip(&docs) {
        let named = bridle_core::yaml::Node::parse(&d.yaml)
            .ok()
            .is_some_and(|v| v.get("metadata").and_then(|m| m.get("tenant")).is_some());
        if !named && conn.tenant.is_empty() {
            m.set_tenant(None);
        }
    }
    // Documents go as the user wrote them (so server-side errors, Cedar's included, point at
    // the file's lines), except those the CLI changed by inlining a scriptFile, which go in
    // canonical form.

    let documents = manifests
        .iter()
        .zip(&docs)
        .map(|((m, _), d)| {
            let inlined = matches!(m, bridle_core::manifest::Manifest::ModelRoute(r)
                if r.spec.targets.iter().any(|t| t.script.is_some()) && d.yaml.contains("scriptFile"));
            if inlined {
                pb::ManifestDocument { source: d.source.clone(), yaml: m.to_yaml(), first_line: 0 }
            } else {
                pb::ManifestDocument { source: d.source.clone(), yaml: d.yaml.clone(), first_line: d.first_line }
            }
        })

        .collect();
    let mut client = conn.manifests().await?;
    let resp = client
        .apply(pb::ApplyRequest {
            actor: None,
            documents,
            dry_run: a.dry_run,
            tenant: conn.tenant.clone(),
        })
        .await;
    let resp = match resp {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            out::err(s.message());
            return Ok(ExitCode::from(1));
        }
        Err(s) => return Err(status("apply", s)),
    };
    for m in &resp.applied {
        let mut action = crate::words::manifest_action(m.action);
        if resp.dry_run {
            action.push_str(" (dry run)");
        }
        out::line(&format!(
            "{}/{} {action}",
            crate::words::manifest_kind(m.kind),
            m.name
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// How stdin is named in messages (`<stdin>:3: ...`).
const STDIN: &str = "<stdin>";

fn collect(p: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p == Path::new("-") {
        if files.iter().any(|f| f == Path::new("-")) {
            return Err(crate::output::usage(
                "-f - is given twice: stdin can be read once",
            ));
        }
        files.push(p.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
    if meta.is_file() {
        files.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .with_context(|| format!("reading {}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, files)?;
        } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            // Script files of the scripted provider live beside manifests; they are not
            // manifests themselves.
            let text =
                std::fs::read_to_string(&e).with_context(|| format!("reading {}", e.display()))?;
            if text.contains("apiVersion:") {
                files.push(e);
            }
        }
    }
    Ok(())
}

/// Reads and splits every file. A file named on the command line that holds no document
/// (empty, or only comments) is an error: applying nothing and exiting 0 would hide a wrong
/// file or a manifest commented out by mistake.
fn load(files: &[PathBuf]) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut empty = Vec::new();
    for f in files {
        let (name, text) = if f == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading manifests from stdin")?;
            (STDIN.to_string(), text)
        } else {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            (f.display().to_string(), text)
        };
        let found = manifest::split_documents(&name, &text);
        if found.is_empty() {
            empty.push(name);
        }
        docs.extend(found);
    }
    if !empty.is_empty() {
        let (holds, it) = if empty.len() == 1 {
            ("the file holds", "the file")
        } else {
            ("each holds", "those files")
        };
        anyhow::bail!(
            "no manifests in {}: {holds} only comments or blank lines; write a manifest there \
             (apiVersion, kind, metadata, spec) or leave {it} out",
            empty.join(", ")
        );
    }
    Ok(docs)
}

/// Parses each document with its own file's folder as the base for relative paths.
fn parse_local(
    docs: &[Document],
    tenant: &str,
) -> Result<Vec<(manifest::Manifest, PathBuf)>, manifest::ValidationErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for d in docs {
        let file = d.source.split('#').next().unwrap_or(&d.source);
        let dir = if file == STDIN {
            PathBuf::new()
        } else {
            Path::new(file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let opts = ParseOptions {
            default_tenant: tenant,
            base_dir: Some(&dir),
        };
        match manifest::parse_document(d, &opts) {
            Ok(m) => out.push((m, dir)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    // Duplicates across files.
    let mut seen = std::collections::HashMap::new();
    for ((m, _), d) in out.iter().zip(docs) {
        if let Some(first) = seen.insert(
            (m.kind(), m.tenant().to_string(), m.name().to_string()),
            d.source.clone(),
        ) {
            errors.push(manifest::ManifestError {
                source: d.source.clone(),
                line: None,
                subject: Some(format!("{} '{}'", m.kind(), m.name())),
                field: "metadata.name".into(),
                message: format!("defined twice (first in {first})"),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(manifest::ValidationErrors(errors))
    }
}
