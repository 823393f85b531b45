use std::process::ExitCode;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_secrets::Options, _, _>(
        "bridle-secrets",
        |o| o.server.grace_period,
        bridle_secrets::start,
    )
}
