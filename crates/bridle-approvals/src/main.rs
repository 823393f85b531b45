use std::process::ExitCode;

// A call allocates many small, short-lived buffers (JSON, headers, protobuf): glibc's malloc
// was about 10% of the load benchmark's CPU samples (tests/examples/load.rs), mimalloc about 7%.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_approvals::Options, _, _>(
        "bridle-approvals",
        |o| o.server.grace_period,
        bridle_approvals::start,
    )
}
