//! The unprivileged user every sandbox process runs as, and so the owner of what tools write
//! in their workspace. A leaf of the crate: the sandboxes run as it ([`crate::sandbox`]), the
//! workspace is made for it ([`crate::workspace`]) and snapshots restore files to it
//! ([`crate::affinity`]), none of them through another.

/// The user every tool runs as (nobody:nogroup on Debian images; owns /workspace).
pub const SANDBOX_USER: &str = "65534:65534";
/// Its uid (and gid), as [`SANDBOX_USER`] spells it.
pub const SANDBOX_UID: u32 = 65534;
