use std::process::ExitCode;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_approvals::Options, _, _>(
        "bridle-approvals",
        |o| o.server.grace_period,
        bridle_approvals::start,
    )
}
