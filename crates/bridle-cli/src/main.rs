//! `bridle`: the command line of the Bridle agent runtime.
//!
//! `bridle dev` runs the whole harness in one process (starting Redis and an OpenBao dev server
//! as child processes when none is configured); the other commands talk to a running harness
//! over gRPC. Output goes to stdout, diagnostics to stderr; the exit status says how it went.

mod apply;
mod approvals;
mod audit;
mod conn;
mod describe;
mod dev;
mod history;
mod keys;
mod mcp;
mod models;
mod out;
mod render;
mod run;
mod runs;
mod spend;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bridle",
    version,
    about = "The governed runtime for LLM agents"
)]
struct Cli {
    #[command(flatten)]
    conn: conn::ConnArgs,
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
    /// Show one agent in detail: its tools, their risk and where the risk came from.
    #[command(subcommand)]
    Describe(describe::DescribeCommand),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(msg) = cli.conn.check() {
        // A usage error like clap's own: exit 2, with the usage line.
        use clap::CommandFactory as _;
        Cli::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, msg)
            .exit();
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
    rt.block_on(async move {
        let r = match cli.command {
            Command::Dev(a) => dev::dev(a).await,
            Command::Apply(a) => apply::apply(&cli.conn, a).await,
            Command::Run(a) => run::run(&cli.conn, a).await,
            Command::Describe(c) => describe::describe(&cli.conn, c).await,
            Command::Runs(c) => runs::runs(&cli.conn, c).await,
            Command::Approvals(c) => approvals::approvals(&cli.conn, c).await,
            Command::Keys(c) => keys::keys(&cli.conn, c).await,
            Command::Models => models::models(&cli.conn).await,
            Command::Spend(a) => spend::spend(&cli.conn, a).await,
            Command::History(a) => history::history(&cli.conn, a).await,
            Command::Mcp(c) => mcp::mcp(&cli.conn, c).await,
            Command::Audit(c) => audit::audit(c).await,
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                out::err(&format!("error: {e:#}"));
                ExitCode::from(1)
            }
        }
    })
}
