//! Providers: one try against one target. A provider turns the normalized request into its
//! wire format, calls, and turns the answer back; it reports a failure as a [`TryError`] that
//! says whether to retry, refetch the key, or fail over. Retrying, failover, attempts and cost
//! live in the engine, so a new provider only has to translate and classify.

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod scripted;
pub mod sse;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bridle_core::manifest::{ProviderKind, Target};
use bridle_proto::complete_chunk::Chunk;
use bridle_proto::{CompleteChunk, FinishReason, Message, Usage};
use tokio::sync::mpsc;

use crate::error::FailureCode;

/// The model a target calls: the one it names, or the scripted provider's own. Here, with the
/// providers, so that what prices, budgets and admission read of a route does not go through
/// the engine that calls it.
pub fn model_of(target: &Target) -> &str {
    match target.provider {
        ProviderKind::Scripted => scripted::MODEL,
        ProviderKind::Openai | ProviderKind::Anthropic => {
            target.model.as_deref().unwrap_or_default()
        }
    }
}

/// What one successful try produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderReply {
    pub message: Message,
    pub finish_reason: FinishReason,
    /// As the provider reported it.
    pub model: String,
    pub response_id: String,
    pub usage: Usage,
    pub http_status: Option<u16>,
}

/// What the engine should do after a failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// 429, 5xx, a connection that failed or broke: retry the same target with backoff.
    Retryable,
    /// 401: drop the cached key, resolve it again and retry once.
    Unauthorized,
    /// Anything else: do not retry this target; fail over.
    Rejected,
    /// The caller of a stream went away: stop everything.
    ClientGone,
}

#[derive(Clone, Debug)]
pub struct TryError {
    pub kind: FailureKind,
    pub code: FailureCode,
    pub http_status: Option<u16>,
    /// The provider's `retry-after`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The failure says the target is unhealthy (5xx, 429, no connection, a timeout, a
    /// malformed or truncated answer), so it counts toward the target's circuit breaker. A
    /// request the provider refused for its content, or a key that cannot be resolved, does
    /// not.
    pub unhealthy: bool,
    /// Safe to show: holds no key and no header value.
    pub message: String,
}

impl TryError {
    /// Not retried, and not the target's fault (a refused request, a missing secret).
    pub fn rejected(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Rejected,
            code,
            http_status: None,
            retry_after: None,
            unhealthy: false,
            message: message.into(),
        }
    }

    /// Retried with backoff, and counted against the target.
    pub fn retryable(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            unhealthy: true,
            ..Self::rejected(code, message)
        }
    }

    /// Not retried (failing over is the better bet), but counted against the target: a
    /// timeout, an answer that is not what the API promises.
    pub fn faulty(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            unhealthy: true,
            ..Self::rejected(code, message)
        }
    }

    pub fn client_gone() -> Self {
        Self {
            kind: FailureKind::ClientGone,
            ..Self::rejected(FailureCode::Unavailable, "the caller cancelled the stream")
        }
    }
}

pub type StreamItem = Result<CompleteChunk, tonic::Status>;

/// Where a streaming try sends its deltas. Remembers whether any was sent, because after the
/// first delta the call may no longer fail over (the caller has already shown it).
pub struct DeltaSink {
    tx: mpsc::Sender<StreamItem>,
    started: AtomicBool,
}

impl DeltaSink {
    pub fn new(tx: mpsc::Sender<StreamItem>) -> Self {
        Self {
            tx,
            started: AtomicBool::new(false),
        }
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Sends a delta; fails when the caller is gone.
    pub async fn delta(&self, chunk: Chunk) -> Result<(), TryError> {
        self.started.store(true, Ordering::SeqCst);
        self.tx
            .send(Ok(CompleteChunk { chunk: Some(chunk) }))
            .await
            .map_err(|_| TryError::client_gone())
    }

    /// Resolves once the caller has dropped the stream.
    pub async fn gone(&self) {
        self.tx.closed().await
    }

    /// Sends the final chunk or the error that ends the stream.
    pub async fn finish(&self, item: StreamItem) {
        // A caller that went away needs no last word.
        let _ = self.tx.send(item).await;
    }
}
