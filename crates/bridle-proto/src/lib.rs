//! Generated code for the `bridle.v1` gRPC contracts. Nothing but generated code and the
//! encoded file descriptor set (for gRPC reflection) lives here; the `.proto` files under
//! `proto/bridle/v1` are the source of truth and are recompiled whenever they change.

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]
pub mod v1 {
    tonic::include_proto!("bridle.v1");
}

pub use v1::*;

/// Encoded `FileDescriptorSet` of every bridle.v1 proto, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bridle_descriptor.bin"));
