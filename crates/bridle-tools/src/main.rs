use std::process::ExitCode;

// A call allocates many small, short-lived buffers (JSON, headers, protobuf): glibc's malloc
// was about 10% of the load benchmark's CPU samples (tests/examples/load.rs), mimalloc about 7%.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_tools::Options, _, _>(
        "bridle-tools",
        |o| o.server.grace_period,
        bridle_tools::start,
    )
}
