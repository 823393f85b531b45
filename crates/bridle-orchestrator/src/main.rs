use std::process::ExitCode;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_orchestrator::Options, _, _>(
        "bridle-orchestrator",
        |o| o.server.grace_period,
        bridle_orchestrator::start,
    )
}
