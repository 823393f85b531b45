//! No import cycle inside a crate: the top-level modules of each crate listed in [`CHECKED`]
//! (the children of its `lib.rs`, or of `main.rs` for a binary-only crate) form an acyclic
//! graph, and so do the children of the modules listed in [`CHECKED_WITHIN`]. A cycle means a
//! lower module reaches up for its caller's types; the fix is to move the type down to the
//! module that owns it (or to a leaf module), or to hand the lower module a narrow interface,
//! never to hide the path.
//!
//! The graph is read from the source, not from the compiler: the module tree is followed from
//! `src/lib.rs` (or `src/main.rs`) through its `mod` declarations (`#[path]` included), and
//! module `a` depends on module `b` when any file of `a` names `b` through `use crate::…`
//! (groups such as `use crate::{b, c::d}` included), a `crate::b::…` path in code, or a
//! `super::`/`self::` path that lands in `b`. A name the parent re-exports (`pub use
//! error::Error` in `lib.rs`, used as `crate::Error`) counts as its module. Comments and string
//! literals are skipped; `#[cfg(test)]` code counts like any other. A cycle fails the test with
//! every edge in it and the file and line of one use per edge.
//!
//! To check another crate, add it to [`CHECKED`] (and a module whose children must stay
//! acyclic too, to [`CHECKED_WITHIN`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Crates (under `crates/`) whose top-level modules must not form a cycle.
const CHECKED: &[&str] = &["bridle-tools", "bridle-router", "bridle-orchestrator"];

/// Modules (crate, module path) whose own children must not form a cycle either.
const CHECKED_WITHIN: &[(&str, &str)] =
    &[("bridle-router", "gateway"), ("bridle-tools", "sandbox")];

#[test]
fn the_top_level_modules_of_each_checked_crate_form_no_cycle() {
    let mut failures = String::new();
    for krate in CHECKED {
        let graph = Graph::read(&workspace().join("crates").join(krate).join("src"), &[]);
        // A parser that finds nothing would pass every crate: each checked crate has many
        // modules that use each other.
        assert!(
            graph.nodes.len() >= 5 && graph.edges.len() >= 5,
            "{krate}: only {} modules and {} dependencies found; is the parser broken?",
            graph.nodes.len(),
            graph.edges.len()
        );
        if let Some(report) = graph.cycles() {
            let _ = writeln!(failures, "{krate}:\n{report}");
        }
    }
    assert!(
        failures.is_empty(),
        "import cycles between modules:\n{failures}"
    );
}

#[test]
fn the_children_of_each_checked_module_form_no_cycle() {
    let mut failures = String::new();
    for (krate, within) in CHECKED_WITHIN {
        let scope: Vec<String> = within.split("::").map(str::to_string).collect();
        let graph = Graph::read(&workspace().join("crates").join(krate).join("src"), &scope);
        assert!(
            graph.nodes.len() >= 2 && !graph.edges.is_empty(),
            "{krate}::{within}: no submodules or no dependencies found; is the parser broken?"
        );
        if let Some(report) = graph.cycles() {
            let _ = writeln!(failures, "{krate}::{within}:\n{report}");
        }
    }
    assert!(
        failures.is_empty(),
        "import cycles between modules:\n{failures}"
    );
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------------------
// Tokens: identifiers, string literals (kept for `#[path = "…"]`) and punctuation, with their
// line; comments dropped.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// `::`
    PathSep,
    Punct(char),
}

fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            // Block comments nest in Rust.
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some((text, end, lines)) = string_literal(&c, i) {
            out.push((Tok::Str(text), line));
            line += lines;
            i = end;
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// A string literal starting at `i` ("…", b"…", r"…", r#"…"#, br#"…"#, c"…"): its text, the
/// index after it, and the newlines in it.
fn string_literal(c: &[char], i: usize) -> Option<(String, usize, usize)> {
    // Not the tail of an identifier (`for"`, `bar"` cannot occur, but `br` can be one).
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if matches!(c.get(j), Some('b' | 'c')) {
        j += 1;
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    let mut hashes = 0;
    while raw && c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    let start = j;
    let mut lines = 0;
    while j < c.len() {
        match c[j] {
            '\\' if !raw => j += 2,
            '"' if c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&h| h == '#')
                .count()
                == hashes =>
            {
                let text = c[start..j].iter().collect();
                return Some((text, j + 1 + hashes, lines));
            }
            ch => {
                if ch == '\n' {
                    lines += 1;
                }
                j += 1;
            }
        }
    }
    Some((c[start..].iter().collect(), c.len(), lines))
}

// ---------------------------------------------------------------------------------------------
// One file: its `mod` declarations, `use` trees and `crate::`/`super::`/`self::` paths.

/// A path named in a file, in the module (file module plus inline modules) it is written in.
#[derive(Clone, Debug)]
struct Named {
    module: Vec<String>,
    path: Vec<String>,
    line: usize,
    /// The name it is imported as, for `use` items (None for `*` and paths in code).
    alias: Option<String>,
}

#[derive(Default)]
struct Parsed {
    /// `mod name;` declarations: (inline module prefix, name, `#[path]`).
    mods: Vec<(Vec<String>, String, Option<String>)>,
    /// Inline `mod name { … }` blocks, relative to the file's module.
    inline: Vec<Vec<String>>,
    uses: Vec<Named>,
    paths: Vec<Named>,
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

fn parse(src: &str, module: &[String]) -> Parsed {
    let toks = tokenize(src);
    let mut p = Parsed::default();
    // Inline modules open around here: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut path_attr: Option<String> = None;
    let mut i = 0;
    let here = |inline: &[(String, usize)]| -> Vec<String> {
        module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect()
    };
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Punct('#') => {
                // `#[path = "x.rs"]`
                if let (Some((Tok::Punct('['), _)), Some("path"), Some((Tok::Punct('='), _))) =
                    (toks.get(i + 1), ident(toks.get(i + 2)), toks.get(i + 3))
                    && let Some((Tok::Str(s), _)) = toks.get(i + 4)
                {
                    path_attr = Some(s.clone());
                }
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    let name = name.to_string();
                    match toks.get(i + 2) {
                        Some((Tok::Punct(';'), _)) => {
                            let prefix = inline.iter().map(|(n, _)| n.clone()).collect();
                            p.mods.push((prefix, name, path_attr.take()));
                        }
                        Some((Tok::Punct('{'), _)) => {
                            depth += 1;
                            inline.push((name, depth));
                            p.inline
                                .push(inline.iter().map(|(n, _)| n.clone()).collect());
                            path_attr = None;
                            i += 3;
                            continue;
                        }
                        _ => {}
                    }
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let line = toks[i].1;
                let mut j = i + 1;
                let mut found = Vec::new();
                use_tree(&toks, &mut j, Vec::new(), &mut found);
                for (path, alias) in found {
                    p.uses.push(Named {
                        module: here(&inline),
                        path,
                        line,
                        alias,
                    });
                }
                i = j;
                continue;
            }
            Tok::Ident(first)
                if matches!(first.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                    // `$crate::` in a macro is `crate::`; `x::self::` is not a path start.
                    && (i == 0 || toks[i - 1].0 != Tok::PathSep) =>
            {
                let line = toks[i].1;
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while toks.get(j).map(|t| &t.0) == Some(&Tok::PathSep) {
                    match ident(toks.get(j + 1)) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                p.paths.push(Named {
                    module: here(&inline),
                    path,
                    line,
                    alias: None,
                });
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    p
}

/// Reads one use tree (`a::b::{c, d::e as f, self, *}`) at `toks[*j]`, up to and past its end.
fn use_tree(
    toks: &[(Tok, usize)],
    j: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*j).map(|t| &t.0) {
            Some(Tok::Ident(s)) if s == "as" => {
                let alias = ident(toks.get(*j + 1)).map(str::to_string);
                *j += 2;
                out.push((path, alias));
                return skip_to_end(toks, j);
            }
            Some(Tok::Ident(s)) if s == "self" && !path.is_empty() => {
                // `b::{self, c}`: `b` itself, under its own name.
                let alias = path.last().cloned();
                *j += 1;
                if ident(toks.get(*j)) == Some("as") {
                    continue;
                }
                out.push((path, alias));
                return skip_to_end(toks, j);
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *j += 1;
            }
            Some(Tok::PathSep) => *j += 1,
            Some(Tok::Punct('*')) => {
                *j += 1;
                out.push((path, None));
                return skip_to_end(toks, j);
            }
            Some(Tok::Punct('{')) => {
                *j += 1;
                loop {
                    match toks.get(*j).map(|t| &t.0) {
                        Some(Tok::Punct('}')) => {
                            *j += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => *j += 1,
                        None => return,
                        Some(_) => use_tree(toks, j, path.clone(), out),
                    }
                }
                return skip_to_end(toks, j);
            }
            _ => {
                let alias = path.last().cloned();
                out.push((path, alias));
                return skip_to_end(toks, j);
            }
        }
    }
}

/// Past the `;` that ends a `use` item; a tree in a group stops at its `,` or `}`, which the
/// group reads.
fn skip_to_end(toks: &[(Tok, usize)], j: &mut usize) {
    if let Some((Tok::Punct(';'), _)) = toks.get(*j) {
        *j += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The crate: its module tree and the graph of one level of it.

struct Module {
    /// Names imported into it: local name -> path as written (resolved later).
    imports: BTreeMap<String, Named>,
}

struct Crate {
    src: PathBuf,
    modules: BTreeMap<Vec<String>, Module>,
    /// Every path named, with the file it is in.
    named: Vec<(PathBuf, Named)>,
}

impl Crate {
    fn read(src: &Path) -> Self {
        let mut c = Crate {
            src: src.to_path_buf(),
            modules: BTreeMap::new(),
            named: Vec::new(),
        };
        // A library's root, or a binary's for a crate without one.
        let root = ["lib.rs", "main.rs"]
            .map(|f| src.join(f))
            .into_iter()
            .find(|f| f.exists())
            .unwrap_or_else(|| panic!("{}: neither lib.rs nor main.rs", src.display()));
        c.load(root, Vec::new(), true);
        c
    }

    /// Loads the file of module `module` and, through its `mod` declarations, its children.
    fn load(&mut self, file: PathBuf, module: Vec<String>, mod_rs: bool) {
        let src = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let parsed = parse(&src, &module);
        let dir = file.parent().unwrap().to_path_buf();
        for m in &parsed.inline {
            let path: Vec<String> = module.iter().chain(m).cloned().collect();
            self.modules.insert(
                path,
                Module {
                    imports: BTreeMap::new(),
                },
            );
        }
        self.modules.insert(
            module.clone(),
            Module {
                imports: BTreeMap::new(),
            },
        );
        for u in &parsed.uses {
            if let Some(alias) = &u.alias
                && let Some(m) = self.modules.get_mut(&u.module)
            {
                m.imports.insert(alias.clone(), u.clone());
            }
        }
        for n in parsed.uses.iter().chain(&parsed.paths) {
            self.named.push((file.clone(), n.clone()));
        }
        for (prefix, name, path_attr) in parsed.mods {
            let child: Vec<String> = module
                .iter()
                .chain(&prefix)
                .chain([&name])
                .cloned()
                .collect();
            if let Some(p) = path_attr {
                let f = dir.join(p);
                let is_mod_rs = f.file_name().is_some_and(|n| n == "mod.rs");
                self.load(f, child, is_mod_rs);
                continue;
            }
            let mut base = if mod_rs {
                dir.clone()
            } else {
                dir.join(file.file_stem().unwrap())
            };
            for p in &prefix {
                base = base.join(p);
            }
            let flat = base.join(format!("{name}.rs"));
            if flat.exists() {
                self.load(flat, child, false);
            } else {
                self.load(base.join(&name).join("mod.rs"), child, true);
            }
        }
    }

    /// The module path (and the item after it, if any) that `n` names, or None for a path
    /// outside the crate (`std::…`, another crate).
    fn resolve(&self, n: &Named) -> Option<Vec<String>> {
        let mut base = n.module.clone();
        let mut rest = n.path.as_slice();
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            Some("self") => rest = &rest[1..],
            // A path relative to the module: only a child module (or a name imported into
            // it, which its own `use` already counted) can be in the crate.
            Some(first) => {
                let mut child = base.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
        }
        Some(base.into_iter().chain(rest.iter().cloned()).collect())
    }

    /// The child of `scope` that absolute path `abs` is in, following the re-exports of
    /// `scope` itself (`crate::Error` for `pub use error::Error` in lib.rs).
    fn node_of(&self, scope: &[String], abs: &[String], hops: usize) -> Option<String> {
        if abs.len() <= scope.len() || abs[..scope.len()] != *scope || hops > 8 {
            return None;
        }
        let name = &abs[scope.len()];
        let child: Vec<String> = scope.iter().chain([name]).cloned().collect();
        if self.modules.contains_key(&child) {
            return Some(name.clone());
        }
        let import = self.modules.get(scope)?.imports.get(name)?;
        let target = self.resolve(import)?;
        self.node_of(scope, &target, hops + 1)
    }
}

/// The dependency graph between the children of one module.
struct Graph {
    nodes: BTreeSet<String>,
    /// (from, to) -> (file, line, path as written) of the first use found.
    edges: BTreeMap<(String, String), (PathBuf, usize, String)>,
}

impl Graph {
    /// The graph of the children of `scope` (the top-level modules for `[]`) in the crate
    /// whose sources are in `src`.
    fn read(src: &Path, scope: &[String]) -> Self {
        let c = Crate::read(src);
        assert!(
            c.modules.contains_key(scope),
            "{}: no module {}",
            src.display(),
            scope.join("::")
        );
        let nodes: BTreeSet<String> = c
            .modules
            .keys()
            .filter(|m| m.len() == scope.len() + 1 && m[..scope.len()] == *scope)
            .map(|m| m[scope.len()].clone())
            .collect();
        let mut edges = BTreeMap::new();
        for (file, n) in &c.named {
            let Some(from) = c.node_of(scope, &n.module, 0) else {
                continue;
            };
            let Some(to) = c.resolve(n).and_then(|abs| c.node_of(scope, &abs, 0)) else {
                continue;
            };
            if from != to {
                let rel = file.strip_prefix(&c.src).unwrap_or(file).to_path_buf();
                edges
                    .entry((from, to))
                    .or_insert((rel, n.line, n.path.join("::")));
            }
        }
        Graph { nodes, edges }
    }

    /// The strongly connected groups of more than one module, each with its edges, or None.
    fn cycles(&self) -> Option<String> {
        let mut report = String::new();
        for group in self.components() {
            let _ = writeln!(
                report,
                "  cycle between {}:",
                group.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            for ((from, to), (file, line, path)) in &self.edges {
                if group.contains(from) && group.contains(to) {
                    let _ = writeln!(
                        report,
                        "    {from} -> {to}: src/{}:{line} uses {path}",
                        file.display()
                    );
                }
            }
        }
        (!report.is_empty()).then_some(report)
    }

    /// Groups of modules that reach each other (Kosaraju's two passes), of two or more.
    fn components(&self) -> Vec<BTreeSet<String>> {
        let next = |n: &str, reverse: bool| -> Vec<String> {
            self.edges
                .keys()
                .filter(|(a, b)| if reverse { b == n } else { a == n })
                .map(|(a, b)| if reverse { a.clone() } else { b.clone() })
                .collect()
        };
        // First pass: modules in order of finishing.
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for start in &self.nodes {
            if seen.contains(start) {
                continue;
            }
            seen.insert(start.clone());
            let mut stack = vec![(start.clone(), next(start, false), 0usize)];
            while let Some((n, out, k)) = stack.last_mut() {
                if let Some(m) = out.get(*k).cloned() {
                    *k += 1;
                    if seen.insert(m.clone()) {
                        let o = next(&m, false);
                        stack.push((m, o, 0));
                    }
                } else {
                    order.push(n.clone());
                    stack.pop();
                }
            }
        }
        // Second pass, on the reversed graph, latest-finished first.
        let mut assigned = BTreeSet::new();
        let mut groups = Vec::new();
        for start in order.iter().rev() {
            if !assigned.insert(start.clone()) {
                continue;
            }
            let mut group = BTreeSet::from([start.clone()]);
            let mut todo = vec![start.clone()];
            while let Some(n) = todo.pop() {
                for m in next(&n, true) {
                    if assigned.insert(m.clone()) {
                        group.insert(m.clone());
                        todo.push(m);
                    }
                }
            }
            if group.len() > 1 {
                groups.push(group);
            }
        }
        groups
    }
}

// ---------------------------------------------------------------------------------------------
// The checker on source trees written here, so that it cannot pass by finding nothing.

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn a_planted_cycle_is_found_with_its_edges_and_their_lines() {
    let dir = tree(&[
        (
            "lib.rs",
            "mod error;\nmod sandbox;\nmod exec;\nmod leaf;\npub use error::Error;\n",
        ),
        // error -> sandbox, through a path in code (not a `use`).
        (
            "error.rs",
            "pub enum Error {\n    Refused(crate::sandbox::config::Refused),\n}\n",
        ),
        (
            "sandbox/mod.rs",
            "pub mod config;\n// use crate::exec; (a comment: not an edge)\n",
        ),
        // sandbox -> error through the crate root's re-export, in a `use` group, from a
        // child module; and -> leaf through `super::super::`.
        (
            "sandbox/config.rs",
            "use crate::{Error, leaf::{self, Thing}};\nconst X: &str = \"crate::exec::nothing\";\npub struct Refused;\nfn f() -> u32 { super::super::leaf::N }\n",
        ),
        // exec -> sandbox via `super::`, only in a test module; nothing points back at exec.
        (
            "exec.rs",
            "#[cfg(test)]\nmod tests {\n    use super::super::sandbox::config::Refused;\n}\n",
        ),
        ("leaf.rs", "pub const N: u32 = 1;\npub struct Thing;\n"),
    ]);
    let g = Graph::read(dir.path(), &[]);
    let edges: Vec<(&str, &str)> = g
        .edges
        .keys()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("error", "sandbox"),
            ("exec", "sandbox"),
            ("sandbox", "error"),
            ("sandbox", "leaf"),
        ]
    );
    let report = g.cycles().expect("the planted cycle is found");
    assert_eq!(
        report,
        "  cycle between error, sandbox:\n    error -> sandbox: src/error.rs:2 uses crate::sandbox::config::Refused\n    sandbox -> error: src/sandbox/config.rs:1 uses crate::Error\n"
    );
}

#[test]
fn the_children_of_a_module_are_checked_with_path_attributes_and_inline_modules() {
    let dir = tree(&[
        ("lib.rs", "pub mod gateway;\n"),
        (
            "gateway/mod.rs",
            "mod openai;\nmod anthropic;\npub use openai::Failure;\n",
        ),
        (
            "gateway/openai.rs",
            "pub struct Failure;\n#[cfg(test)]\n#[path = \"openai_tests.rs\"]\nmod tests;\n",
        ),
        // In openai::tests, so `super::super` is `gateway`.
        (
            "gateway/openai_tests.rs",
            "use super::super::anthropic::Shape;\n",
        ),
        (
            "gateway/anthropic.rs",
            "pub struct Shape;\nmod inner {\n    fn f(_: super::super::Failure) {}\n}\n",
        ),
    ]);
    let g = Graph::read(dir.path(), &["gateway".to_string()]);
    assert_eq!(
        g.nodes.iter().map(String::as_str).collect::<Vec<_>>(),
        ["anthropic", "openai"]
    );
    let report = g.cycles().expect("openai and anthropic use each other");
    assert!(
        report.contains("anthropic -> openai: src/gateway/anthropic.rs:3 uses super::super::Failure")
            && report.contains("openai -> anthropic: src/gateway/openai_tests.rs:1 uses super::super::anthropic::Shape"),
        "{report}"
    );
}

#[test]
fn an_acyclic_tree_passes() {
    let dir = tree(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::B;\nuse crate::c;\n"),
        ("b.rs", "pub struct B(crate::c::C);\n"),
        (
            "c.rs",
            "pub struct C;\nfn s() -> &'static str { \"use crate::a;\" }\nconst Q: char = '\"';\n",
        ),
    ]);
    let g = Graph::read(dir.path(), &[]);
    assert_eq!(g.edges.len(), 3);
    assert_eq!(g.cycles(), None);
}
