//! The tool service against real Redis, the real Docker engine with the locally built sandbox
//! image, and (for secrets) a real OpenBao behind the real secrets broker.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs each listed test (an `async fn(on: On)`) twice: under the engine's default runtime
/// (`runc::<name>`) and under gVisor (`runsc::<name>`, which scripts/install-deps.sh registers
/// with the engine).
#[macro_export]
macro_rules! under_each_runtime {
    ($($name:ident),* $(,)?) => {
        mod runc {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::On::Runc).await } )*
        }
        mod runsc {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::On::Runsc).await } )*
        }
    };
}

/// Runs each listed test once more on a rootless Docker engine (`rootless::<name>`), with the
/// limits it says it cannot enforce accepted: only tests that do not depend on those limits.
#[macro_export]
macro_rules! on_rootless_engine {
    ($($name:ident),* $(,)?) => {
        mod rootless {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::On::Rootless).await } )*
        }
    };
}

/// Runs each listed test once more in the Helm chart's default tools pod (`pod::<name>`): on
/// its rootless engine sidecar, run here with the securityContext the chart renders, with the
/// tools settings the chart gives (workspace folders, the limits that engine cannot enforce).
#[macro_export]
macro_rules! in_the_tools_pod {
    ($($name:ident),* $(,)?) => {
        mod pod {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::On::Pod).await } )*
        }
    };
}

mod boundary;
mod execute;
mod hardening;
mod helpers;
mod hostile;
mod idempotency;
mod lifecycle;
mod mcp;
mod net;
mod pool;
mod quota;
mod rootless;
mod runtimes;
mod secrets_and_list;
mod workspace;
