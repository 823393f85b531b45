//! Compiles proto/bridle/v1 with protox (pure Rust; no system protoc) and tonic-prost-build.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: cargo shares a target
    // directory's build-script binaries between checkouts of the workspace at other paths (a
    // CI clone, a worktree), and a baked path would name a checkout that may be gone.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "bridle/v1/common.proto",
        "bridle/v1/events.proto",
        "bridle/v1/manifests.proto",
        "bridle/v1/orchestrator.proto",
        "bridle/v1/router.proto",
        "bridle/v1/tools.proto",
        "bridle/v1/approvals.proto",
        "bridle/v1/secrets.proto",
        "bridle/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("bridle_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
