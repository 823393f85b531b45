//! `proto-compat [BASE]`: fails (exit 1) when the protos under `proto/` (as they are in the
//! working tree) break wire compatibility with those of BASE, a git revision.
//!
//! Without BASE: where this branch left main (`git merge-base HEAD main`, or `origin/main`),
//! or, on main itself, the previous commit (`HEAD~1`). It passes when there is no previous
//! commit, when BASE had no protos, and when the protos are unchanged. Run from the
//! repository's root (CI: `.ci/run`).
//!
//! A break made on purpose (a documented v1 break before any release) is accepted by naming
//! its symbol in `proto/accepted-breaks.txt`, one a line, with the reason after a `#`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};

const PROTO_DIR: &str = "proto";
const ACCEPTED: &str = "proto/accepted-breaks.txt";

fn main() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match run(&mut out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "proto-compat: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether the check passes.
fn run(out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    let asked = std::env::args().nth(1);
    if asked.as_deref().is_some_and(|a| a.starts_with('-')) {
        bail!("usage: proto-compat [BASE] (a git revision; default: the previous commit on main)");
    }
    let Some((base, why)) = base(asked)? else {
        writeln!(
            out,
            "proto-compat: no previous commit to compare with: passes"
        )?;
        return Ok(true);
    };
    let old = sources_at(&base)?;
    let new = bridle_proto_compat::sources_in(std::path::Path::new(PROTO_DIR))
        .with_context(|| format!("reading {PROTO_DIR}/ (run from the repository's root)"))?;
    if old.is_empty() {
        writeln!(out, "proto-compat: {base} ({why}) has no protos: passes")?;
        return Ok(true);
    }
    if old == new {
        writeln!(
            out,
            "proto-compat: protos unchanged since {base} ({why}): passes"
        )?;
        return Ok(true);
    }
    let old_set = bridle_proto_compat::compile(&old)
        .map_err(|e| anyhow::anyhow!("the protos of {base} do not compile: {e}"))?;
    let new_set =
        bridle_proto_compat::compile(&new).map_err(|e| anyhow::anyhow!("{PROTO_DIR}/: {e}"))?;
    let accepted = accepted()?;
    let (ok, refused): (Vec<_>, Vec<_>) = bridle_proto_compat::check(&old_set, &new_set)
        .into_iter()
        .partition(|v| accepted.contains_key(&v.symbol));
    for v in &ok {
        writeln!(
            out,
            "accepted ({ACCEPTED}: {}): {v}",
            accepted.get(&v.symbol).map_or("", String::as_str)
        )?;
    }
    for v in &refused {
        writeln!(out, "incompatible: {v}")?;
    }
    if refused.is_empty() {
        writeln!(
            out,
            "proto-compat: wire-compatible with {base} ({why}) ({} files)",
            new.len()
        )?;
        Ok(true)
    } else {
        writeln!(
            out,
            "proto-compat: {} incompatible change(s) since {base} ({why}); keep the old field, \
             value or RPC (deprecate it), reserve what is removed, or accept a deliberate break \
             in {ACCEPTED}",
            refused.len()
        )?;
        Ok(false)
    }
}

/// `git args...`'s output, trimmed, or None when git fails (an unknown revision, not a
/// checkout).
fn git(args: &[&str]) -> anyhow::Result<Option<String>> {
    Ok(git_raw(args)?.map(|s| s.trim().to_string()))
}

fn git_raw(args: &[&str]) -> anyhow::Result<Option<String>> {
    let o = Command::new("git")
        .args(args)
        .output()
        .context("running git")?;
    Ok(o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned()))
}

/// The revision to compare with, and why that one.
fn base(asked: Option<String>) -> anyhow::Result<Option<(String, &'static str)>> {
    if let Some(b) = asked.or_else(|| std::env::var("BRIDLE_PROTO_COMPAT_BASE").ok()) {
        let Some(rev) = git(&["rev-parse", "--verify", "-q", &format!("{b}^{{commit}}")])? else {
            bail!("'{b}' is not a revision of this repository");
        };
        return Ok(Some((rev, "as asked")));
    }
    let Some(head) = git(&["rev-parse", "--verify", "-q", "HEAD"])? else {
        return Ok(None);
    };
    for main in ["main", "origin/main"] {
        if let Some(fork) = git(&["merge-base", "HEAD", main])?
            && fork != head
        {
            return Ok(Some((fork, "where this branch left main")));
        }
    }
    Ok(git(&["rev-parse", "--verify", "-q", "HEAD~1^{commit}"])?
        .map(|prev| (prev, "the previous commit")))
}

/// The `.proto` files under `proto/` at revision `rev`, by name relative to `proto/`.
fn sources_at(rev: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let listed = git(&["ls-tree", "-r", "--name-only", rev, "--", PROTO_DIR])?
        .with_context(|| format!("listing {PROTO_DIR}/ at {rev}"))?;
    let mut out = BTreeMap::new();
    for path in listed.lines().filter(|p| p.ends_with(".proto")) {
        let text = git_raw(&["show", &format!("{rev}:{path}")])?
            .with_context(|| format!("reading {path} at {rev}"))?;
        let name = path
            .strip_prefix(PROTO_DIR)
            .unwrap_or(path)
            .trim_start_matches('/');
        out.insert(name.to_string(), text);
    }
    Ok(out)
}

/// The breaks accepted on purpose: symbol -> reason.
fn accepted() -> anyhow::Result<BTreeMap<String, String>> {
    let text = match std::fs::read_to_string(ACCEPTED) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {ACCEPTED}")),
    };
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (symbol, reason) = line.split_once('#').unwrap_or((line, ""));
        let symbol = symbol.trim();
        if symbol.is_empty() {
            continue;
        }
        if symbol.contains(char::is_whitespace) || reason.trim().is_empty() {
            bail!(
                "{ACCEPTED}:{}: expected 'full.symbol.name # why the break is accepted'",
                i + 1
            );
        }
        out.insert(symbol.to_string(), reason.trim().to_string());
    }
    Ok(out)
}
