use std::process::ExitCode;

// A call allocates many small, short-lived buffers (JSON, headers, protobuf); glibc's malloc
// took about a quarter of the router's CPU under load (see benches/overhead.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bridle_core::service::run_main::<bridle_router::Options, _, _>(
        "bridle-router",
        |o| o.server.grace_period,
        bridle_router::start,
    )
}
