//! The CLI's config file: named contexts, each a harness to talk to (the orchestrator's and
//! the approvals service's addresses, TLS files, where the API key comes from, the tenant),
//! and which one is current. `$BRIDLE_CONFIG` names the file; else
//! `$XDG_CONFIG_HOME/bridle/config.toml`; else `~/.config/bridle/config.toml`. A file that does
//! not exist holds no contexts.
//!
//! An API key is never written in the file: a context names a file holding it
//! (`api-key-file`) or a command that prints it (`api-key-command`, run with `sh -c`), and the
//! CLI never prints it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::json;

use crate::out;
use crate::output::{self, Format, Item, usage};

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Context {
    /// The orchestrator's gRPC address (as --server).
    pub server: Option<String>,
    /// The approvals service's gRPC address (as --approvals-server).
    pub approvals_server: Option<String>,
    pub tenant: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A file whose content (trimmed) is the API key.
    pub api_key_file: Option<PathBuf>,
    /// A command (run with `sh -c`) whose output (trimmed) is the API key.
    pub api_key_command: Option<String>,
}

/// The keys a context takes, in the order `set-context` and the docs list them.
pub const KEYS: &[&str] = &[
    "server",
    "approvals-server",
    "tenant",
    "tls-ca",
    "tls-cert",
    "tls-key",
    "api-key-file",
    "api-key-command",
];

/// Where the config file is.
pub fn path() -> anyhow::Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("BRIDLE_CONFIG") {
        return Ok(p);
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(x.join("bridle/config.toml"));
    }
    match var("HOME") {
        Some(h) => Ok(h.join(".config/bridle/config.toml")),
        None => anyhow::bail!(
            "cannot find the config file: none of BRIDLE_CONFIG, XDG_CONFIG_HOME or HOME is set"
        ),
    }
}

/// The file, with its contexts; an absent file is an empty config.
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
}

pub fn load() -> anyhow::Result<Loaded> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                path,
                config: Config::default(),
            });
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config = parse(&path, &text)?;
    Ok(Loaded { path, config })
}

/// Parses the file; an error names the file, the line and column, and the key.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<Config> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let at = match inner.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{}:{line}:{col}", path.display())
            }
            None => path.display().to_string(),
        };
        let mut msg = inner.message().trim().to_string();
        if msg.contains("unknown field `api-key`") {
            msg.push_str(
                "; the key itself is not kept in this file: name a file that holds it \
                 (api-key-file) or a command that prints it (api-key-command)",
            );
        }
        let key = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!(" (key {key})")
        };
        anyhow::anyhow!("bad config file {at}{key}: {msg}")
    })
}

impl Loaded {
    /// The context to use: the one named (by --context or BRIDLE_CONTEXT), else the current
    /// one, else none.
    pub fn pick(&self, named: Option<&str>) -> anyhow::Result<Option<(&str, &Context)>> {
        let (name, why) = match (named, &self.config.current_context) {
            (Some(n), _) => (n, "--context"),
            (None, Some(n)) => (n.as_str(), "current-context"),
            (None, None) => return Ok(None),
        };
        match self.config.contexts.get_key_value(name) {
            Some((n, c)) => Ok(Some((n.as_str(), c))),
            None => Err(usage(format!(
                "{why} names '{name}', which is not a context in {} ({}); \
                 `bridle config get-contexts` lists them",
                self.path.display(),
                self.known()
            ))),
        }
    }

    fn known(&self) -> String {
        if self.config.contexts.is_empty() {
            "it has none".into()
        } else {
            format!(
                "it has {}",
                self.config
                    .contexts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// A path of the file as written: `~/` is the home folder, a relative path is relative
    /// to the config file's folder.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), std::env::var_os("HOME")) {
            return PathBuf::from(home).join(rest);
        }
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.path
            .parent()
            .map_or_else(|| p.to_path_buf(), |d| d.join(p))
    }
}

/// The API key a context names, read from its file or its command's output. Never printed.
pub fn api_key(loaded: &Loaded, name: &str, c: &Context) -> anyhow::Result<Option<String>> {
    let file = loaded.path.display();
    if let Some(f) = &c.api_key_file {
        let p = loaded.resolve_path(f);
        let k = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading the API key of context '{name}' ({file}, api-key-file) from {}",
                p.display()
            )
        })?;
        let k = k.trim();
        if k.is_empty() {
            anyhow::bail!(
                "the API key file {} of context '{name}' ({file}, api-key-file) is empty",
                p.display()
            );
        }
        return Ok(Some(k.to_string()));
    }
    if let Some(cmd) = &c.api_key_command {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running the api-key-command of context '{name}' ({file})"))?;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            anyhow::bail!(
                "the api-key-command of context '{name}' ({file}) failed ({}){}",
                o.status,
                err.lines()
                    .next()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            );
        }
        let k = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if k.is_empty() {
            anyhow::bail!(
                "the api-key-command of context '{name}' ({file}) printed nothing: it should \
                 print the API key"
            );
        }
        return Ok(Some(k));
    }
    Ok(None)
}

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// List the contexts (the current one marked with *).
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make a context the current one.
    UseContext { name: String },
    /// Create a context, or change one: the connection flags given on this command line
    /// (--server, --approvals-server, --tenant, --tls-ca, --tls-cert, --tls-key) are stored in
    /// it, with where its API key comes from.
    SetContext {
        name: String,
        /// A file holding the API key (it is read at each command, never copied).
        #[arg(long, value_name = "FILE", conflicts_with = "api_key_command")]
        api_key_file: Option<PathBuf>,
        /// A command that prints the API key (run with `sh -c` at each command), e.g. a
        /// password manager's.
        #[arg(long, value_name = "COMMAND")]
        api_key_command: Option<String>,
        /// Remove keys from the context (server, tenant, tls-ca, api-key-file, ...).
        #[arg(long, value_name = "KEY", value_delimiter = ',')]
        unset: Vec<String>,
        /// Make it the current context too.
        #[arg(long)]
        current: bool,
    },
    /// Remove a context.
    DeleteContext { name: String },
}

/// Connection flags given on the command line itself (not from the environment), for
/// `set-context`: (key, value).
pub type Given = Vec<(&'static str, String)>;

pub fn config(format: Format, c: ConfigCommand, given: Given) -> anyhow::Result<ExitCode> {
    if !matches!(c, ConfigCommand::GetContexts) && format != Format::Table {
        return Err(usage(
            "-o/--output is for reading commands: config get-contexts",
        ));
    }
    if !matches!(c, ConfigCommand::SetContext { .. })
        && let Some((flag, _)) = given.first()
    {
        return Err(usage(format!(
            "--{flag} is stored by `bridle config set-context NAME --{flag} ...`; this config \
             command does not take it"
        )));
    }
    let loaded = load()?;
    match c {
        ConfigCommand::GetContexts => get_contexts(&loaded, format),
        ConfigCommand::CurrentContext => match &loaded.config.current_context {
            Some(n) => {
                out::line(n);
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!(
                "no current context in {} (`bridle config use-context NAME` sets one)",
                loaded.path.display()
            ),
        },
        ConfigCommand::UseContext { name } => {
            if !loaded.config.contexts.contains_key(&name) {
                anyhow::bail!(
                    "no context '{name}' in {} ({}); `bridle config set-context {name} --server \
                     ...` creates it",
                    loaded.path.display(),
                    loaded.known()
                );
            }
            edit(&loaded.path, |doc| {
                doc["current-context"] = toml_edit::value(name.as_str());
                Ok(())
            })?;
            out::line(&format!("current context: {name}"));
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::DeleteContext { name } => {
            if !loaded.config.contexts.contains_key(&name) {
                anyhow::bail!(
                    "no context '{name}' in {} ({})",
                    loaded.path.display(),
                    loaded.known()
                );
            }
            let was_current = loaded.config.current_context.as_deref() == Some(&name);
            edit(&loaded.path, |doc| {
                if let Some(t) = doc
                    .get_mut("contexts")
                    .and_then(toml_edit::Item::as_table_like_mut)
                {
                    t.remove(&name);
                }
                if was_current {
                    doc.remove("current-context");
                }
                Ok(())
            })?;
            out::line(&format!(
                "context {name} deleted{}",
                if was_current {
                    "; there is no current context now"
                } else {
                    ""
                }
            ));
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::SetContext {
            name,
            api_key_file,
            api_key_command,
            unset,
            current,
        } => {
            if name.is_empty() || name.contains(['.', '"', '\n']) {
                return Err(usage(format!(
                    "'{name}' cannot name a context: use letters, digits, '-' or '_'"
                )));
            }
            for k in &unset {
                if !KEYS.contains(&k.as_str()) {
                    return Err(usage(format!(
                        "--unset {k}: a context has no key '{k}'; its keys: {}",
                        KEYS.join(", ")
                    )));
                }
            }
            // Paths given here are relative to where the command runs; the file's are read
            // relative to the file, so they are stored absolute.
            let abs = |p: PathBuf| -> anyhow::Result<String> {
                Ok(std::path::absolute(&p)
                    .with_context(|| format!("{}", p.display()))?
                    .display()
                    .to_string())
            };
            let mut set: Vec<(&str, String)> = Vec::new();
            for (k, v) in given {
                let v = if k.starts_with("tls-") && !v.is_empty() {
                    abs(PathBuf::from(v))?
                } else {
                    v
                };
                set.push((k, v));
            }
            if let Some(f) = api_key_file {
                set.push(("api-key-file", abs(f)?));
            }
            if let Some(c) = api_key_command {
                set.push(("api-key-command", c));
            }
            let created = !loaded.config.contexts.contains_key(&name);
            edit(&loaded.path, |doc| {
                let contexts = doc
                    .entry("contexts")
                    .or_insert_with(|| {
                        let mut t = toml_edit::Table::new();
                        t.set_implicit(true);
                        toml_edit::Item::Table(t)
                    })
                    .as_table_mut()
                    .context("`contexts` in the config file is not a table")?;
                let ctx = contexts
                    .entry(&name)
                    .or_insert_with(toml_edit::table)
                    .as_table_mut()
                    .with_context(|| format!("contexts.{name} is not a table"))?;
                for k in &unset {
                    ctx.remove(k);
                }
                for (k, v) in &set {
                    // A key file and a key command exclude each other.
                    match *k {
                        "api-key-file" => {
                            ctx.remove("api-key-command");
                        }
                        "api-key-command" => {
                            ctx.remove("api-key-file");
                        }
                        _ => {}
                    }
                    ctx[*k] = toml_edit::value(v.as_str());
                }
                if current {
                    doc["current-context"] = toml_edit::value(name.as_str());
                }
                Ok(())
            })?;
            out::line(&format!(
                "context {name} {}{} in {}",
                if created { "created" } else { "changed" },
                if current { " and made current" } else { "" },
                loaded.path.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Changes the file with toml_edit (comments and order kept), checks that the result still
/// reads, and writes it.
fn edit(
    path: &Path,
    f: impl FnOnce(&mut toml_edit::DocumentMut) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("reading {}", path.display()))?;
    f(&mut doc)?;
    let new = doc.to_string();
    parse(path, &new)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn get_contexts(loaded: &Loaded, format: Format) -> anyhow::Result<ExitCode> {
    let current = loaded.config.current_context.as_deref();
    let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let mut items = Vec::new();
    let mut rows = vec![
        ["CURRENT", "NAME", "SERVER", "APPROVALS SERVER", "TENANT"]
            .map(String::from)
            .to_vec(),
    ];
    if format == Format::Wide {
        rows[0].extend(["TLS CA", "TLS CERT", "API KEY FROM"].map(String::from));
    }
    for (name, c) in &loaded.config.contexts {
        let key_from = match (&c.api_key_file, &c.api_key_command) {
            (Some(f), _) => format!("file {}", f.display()),
            (None, Some(_)) => "command".into(),
            (None, None) => "-".into(),
        };
        let mut row = vec![
            if current == Some(name.as_str()) {
                "*"
            } else {
                ""
            }
            .to_string(),
            name.clone(),
            output::cell(c.server.as_deref().unwrap_or_default()),
            output::cell(c.approvals_server.as_deref().unwrap_or_default()),
            output::cell(c.tenant.as_deref().unwrap_or_default()),
        ];
        if format == Format::Wide {
            row.extend([
                output::cell(&show(&c.tls_ca).unwrap_or_default()),
                output::cell(&show(&c.tls_cert).unwrap_or_default()),
                key_from,
            ]);
        }
        rows.push(row);
        let mut v = json!({
            "name": name,
            "current": current == Some(name.as_str()),
        });
        for (k, val) in [
            ("server", c.server.clone()),
            ("approvalsServer", c.approvals_server.clone()),
            ("tenant", c.tenant.clone()),
            ("tlsCa", show(&c.tls_ca)),
            ("tlsCert", show(&c.tls_cert)),
            ("tlsKey", show(&c.tls_key)),
            ("apiKeyFile", show(&c.api_key_file)),
            ("apiKeyCommand", c.api_key_command.clone()),
        ] {
            if let Some(val) = val {
                v[k] = json!(val);
            }
        }
        items.push(Item {
            name: format!("Context/{name}"),
            value: v,
            yaml: None,
        });
    }
    match format {
        Format::Table | Format::Wide => {
            if items.is_empty() {
                out::err(&format!(
                    "no contexts in {} (`bridle config set-context NAME --server ...` creates one)",
                    loaded.path.display()
                ));
                return Ok(ExitCode::SUCCESS);
            }
            for l in output::table(&rows) {
                out::line(&l);
            }
        }
        _ => output::print_items(format, &items, false)?,
    }
    Ok(ExitCode::SUCCESS)
}
