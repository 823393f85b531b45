use std::process::ExitCode;

// A call allocates many small, short-lived buffers (JSON, headers, protobuf); glibc's malloc
// took an eighth of the harness's CPU under load (tests/examples/load.rs), mimalloc far less.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_tools::Options, _, _>(
        "bridle-tools",
        |o| o.server.grace_period,
        bridle_tools::start,
    )
}
