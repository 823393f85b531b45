use std::process::ExitCode;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_tools::Options, _, _>(
        "bridle-tools",
        |o| o.server.grace_period,
        bridle_tools::start,
    )
}
