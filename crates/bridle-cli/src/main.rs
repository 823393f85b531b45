//! `bridle`: the command line of the Bridle agent runtime.
//!
//! `bridle dev` runs the whole harness in one process (starting Redis and an OpenBao dev server
//! as child processes when none is configured); the other commands talk to a running harness
//! over gRPC. Output goes to stdout, diagnostics to stderr; the exit status says how it went.

// A call allocates many small, short-lived buffers (JSON, headers, protobuf): glibc's malloc
// was about 10% of the load benchmark's CPU samples (tests/examples/load.rs), mimalloc about 7%
// (`bridle dev` runs every service in this process).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod apply;
mod approvals;
mod audit;
mod config;
mod conn;
mod delete;
mod describe;
mod dev;
mod get;
mod history;
mod keys;
mod kind;
mod mcp;
mod models;
mod out;
mod output;
mod render;
mod run;
mod runs;
mod spend;
mod words;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Subcommand};

#[derive(clap::Parser)]
#[command(
    name = "bridle",
    version,
    about = "The governed runtime for LLM agents",
    after_help = "Exit status: 0 ok; 1 an error (the message says what and where); 2 a usage \
                  error (a bad flag, kind or format); 3 a watched run was cancelled (run \
                  --watch, runs watch); 70 the CLI itself could not start."
)]
struct Cli {
    #[command(flatten)]
    conn: conn::ConnFlags,
    /// How read commands print: table (default), wide, json, yaml or name
    /// (docs/src/reference/cli-output.md).
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    output: Option<output::Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole harness (all five services) in this process, for a laptop.
    Dev(dev::DevArgs),
    /// Validate manifests and apply them, all or nothing.
    Apply(apply::ApplyArgs),
    /// Start a run of an agent.
    Run(run::RunArgs),
    /// List objects of a kind, or show one: manifests (agent, tool, modelroute, policy,
    /// secretbinding, budget), runs, approvals, keys, models.
    Get(get::GetArgs),
    /// Show one object in detail: an agent with its tools, their risk and where the risk came
    /// from; a run with its timeline; a manifest with its YAML.
    Describe(describe::DescribeArgs),
    /// Delete a manifest, or revoke an API key (--dry-run: say what would go).
    Delete(delete::DeleteArgs),
    /// List and inspect runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// List and decide pending approvals.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// List the tenant's model routes with each target's price and where it comes from.
    ///
    /// Prices are US dollars per million tokens (input, output, cache read, cache write), from
    /// the router's price table (with the operator's `prices_file` over it) or the target's own
    /// `price`. A target without a known price is marked: its calls' cost is unknown, and an
    /// agent with a cost budget cannot use its route.
    Models,
    /// Who changed a manifest, when, and to what (KIND/NAME).
    History(history::HistoryArgs),
    /// What the tenant spent on models, from the spend ledger, grouped by person, end user,
    /// API key, agent or model.
    Spend(spend::SpendArgs),
    /// Authorize remote MCP servers that use OAuth (login, logout).
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// The approvals audit trail (reads Redis directly).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Contexts: named harnesses (addresses, TLS, API key, tenant) in the config file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script (bash, zsh or fish).
    ///
    /// bash: `source <(bridle completion bash)`; zsh: `bridle completion zsh >
    /// "${fpath[1]}/_bridle"`; fish: `bridle completion fish >
    /// ~/.config/fish/completions/bridle.fish`.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Command {
    /// Whether the command reads and prints (so takes -o); the rest refuse -o by name.
    fn reads(&self) -> bool {
        matches!(
            self,
            Command::Get(_)
                | Command::Describe(_)
                | Command::Runs(_)
                | Command::Approvals(_)
                | Command::Keys(_)
                | Command::Models
                | Command::History(_)
                | Command::Spend(_)
                | Command::Config(_)
        )
    }

    /// Whether the command talks to the harness (so needs the context settled).
    fn connects(&self) -> bool {
        !matches!(
            self,
            Command::Dev(_) | Command::Audit(_) | Command::Config(_) | Command::Completion { .. }
        )
    }

    fn name(&self) -> &'static str {
        match self {
            Command::Dev(_) => "dev",
            Command::Apply(_) => "apply",
            Command::Run(_) => "run",
            Command::Get(_) => "get",
            Command::Describe(_) => "describe",
            Command::Delete(_) => "delete",
            Command::Runs(_) => "runs",
            Command::Approvals(_) => "approvals",
            Command::Keys(_) => "keys",
            Command::Models => "models",
            Command::History(_) => "history",
            Command::Spend(_) => "spend",
            Command::Mcp(_) => "mcp",
            Command::Audit(_) => "audit",
            Command::Config(_) => "config",
            Command::Completion { .. } => "completion",
        }
    }
}

/// A usage error like clap's own: exit 2, with the usage line.
fn usage_exit(msg: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}

/// The connection flags given on the command line itself (not from the environment), which
/// `config set-context` stores.
fn given_flags(m: &clap::ArgMatches) -> config::Given {
    // Global flags are seen in the innermost subcommand's matches.
    let mut m = m;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let mut v = Vec::new();
    for (id, key) in [
        ("server", "server"),
        ("approvals_server", "approvals-server"),
        ("tenant", "tenant"),
        ("tls_ca", "tls-ca"),
        ("tls_cert", "tls-cert"),
        ("tls_key", "tls-key"),
        ("api_key", "api-key"),
        ("context", "context"),
    ] {
        if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let val = m
            .get_raw(id)
            .and_then(|mut r| r.next())
            .map(|s| s.to_string_lossy().into_owned());
        if let Some(val) = val {
            v.push((key, val));
        }
    }
    v
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let format = cli.output.unwrap_or(output::Format::Table);
    if cli.output.is_some() && !cli.command.reads() {
        usage_exit(format!(
            "-o/--output is for reading commands (get, describe, runs, approvals list, keys \
             list, keys whoami, models, history, spend, config get-contexts); `bridle {}` does \
             not take it",
            cli.command.name()
        ));
    }
    if let Command::Completion { shell } = cli.command {
        let mut cmd = Cli::command();
        let mut buf = Vec::new();
        match shell {
            Shell::Bash => {
                clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "bridle", &mut buf)
            }
            Shell::Zsh => {
                clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "bridle", &mut buf)
            }
            Shell::Fish => {
                clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "bridle", &mut buf)
            }
        }
        out::text(&String::from_utf8_lossy(&buf));
        return ExitCode::SUCCESS;
    }
    let given = given_flags(&matches);
    if let Command::Config(c) = cli.command {
        if let Some((flag, _)) = given.iter().find(|(k, _)| *k == "api-key") {
            usage_exit(format!(
                "--{flag}: a context does not keep the key itself; use --api-key-file FILE or \
                 --api-key-command COMMAND"
            ));
        }
        if let Some((flag, _)) = given.iter().find(|(k, _)| *k == "context") {
            usage_exit(format!(
                "--{flag} does not apply to config commands: they name the context they change"
            ));
        }
        return finish(config::config(format, c, given));
    }
    let conn = if cli.command.connects() {
        match cli.conn.resolve() {
            Ok(c) => c,
            Err(e) => return finish(Err(e)),
        }
    } else {
        conn::ConnArgs::default()
    };
    if let Err(msg) = conn.check() {
        usage_exit(msg);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out::err(&format!("bridle: cannot start the async runtime: {e}"));
            return ExitCode::from(70);
        }
    };
    let conn = &conn;
    finish(rt.block_on(async move {
        match cli.command {
            Command::Dev(a) => dev::dev(a).await,
            Command::Apply(a) => apply::apply(conn, a).await,
            Command::Run(a) => run::run(conn, a).await,
            Command::Get(a) => get::get(conn, format, a).await,
            Command::Describe(a) => describe::describe(conn, format, a).await,
            Command::Delete(a) => delete::delete(conn, a).await,
            Command::Runs(c) => runs::runs(conn, format, c).await,
            Command::Approvals(c) => approvals::approvals(conn, format, c).await,
            Command::Keys(c) => keys::keys(conn, format, c).await,
            Command::Models => models::models(conn, format).await,
            Command::Spend(a) => spend::spend(conn, format, a).await,
            Command::History(a) => history::history(conn, format, a).await,
            Command::Mcp(c) => mcp::mcp(conn, c).await,
            Command::Audit(c) => audit::audit(c).await,
            Command::Config(_) | Command::Completion { .. } => Ok(ExitCode::SUCCESS),
        }
    }))
}

/// The exit status for how a command went: its own, 2 for a usage error found after
/// parsing, 1 for any other error.
fn finish(r: anyhow::Result<ExitCode>) -> ExitCode {
    match r {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<output::Usage>() {
            Some(u) => usage_exit(u),
            None => {
                out::err(&format!("error: {e:#}"));
                ExitCode::from(1)
            }
        },
    }
}
