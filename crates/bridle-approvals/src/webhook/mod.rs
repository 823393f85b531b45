//! The webhook: every new pending approval is POSTed, as a Slack-compatible message (`text`
//! plus `blocks`), to the configured URL, so a team can route it to chat.
//!
//! Delivery follows the approval event stream with a Redis consumer group, not a queue inside
//! Evaluate: Evaluate only writes its event (it never waits on the webhook), each event goes to
//! one replica, and an event whose replica died before it was delivered is claimed by another
//! after `CLAIM_IDLE`. Each approval is delivered on its own task (up to `IN_FLIGHT` at once),
//! so a slow or failing endpoint does not hold up the others; failed attempts are retried with
//! exponential backoff, and after `max_attempts` the approval is logged as not announced (it is
//! still in the inbox). An event is acknowledged only once it needs nothing more.

mod message;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bridle_core::Shutdown;
use bridle_core::redis_util::RedisConn;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use message::render;

use crate::options::WebhookOptions;
use crate::store::Store;
use crate::{Error, record};

const GROUP: &str = "webhook";
/// How long one XREADGROUP waits for new events.
const BLOCK: Duration = Duration::from_secs(5);
/// An event delivered to a replica but not acknowledged this long (a crashed replica, or one
/// stopped mid-delivery) is taken over by another.
const CLAIM_IDLE: Duration = Duration::from_secs(600);
const BATCH: usize = 50;
/// Deliveries under way at once per replica; past this, reading new events waits.
const IN_FLIGHT: usize = 32;

type Entry = (String, HashMap<String, String>);

struct Delivery {
    client: reqwest::Client,
    url: SecretString,
    opts: WebhookOptions,
    inbox_url: Option<String>,
    stop: CancellationToken,
    shutdown: Shutdown,
    acks: RedisConn,
    events: String,
}

/// Starts the delivery task when a webhook URL is configured.
pub async fn spawn(
    store: &Store,
    opts: &WebhookOptions,
    inbox_url: Option<String>,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let Some(url) = opts.url.clone() else {
        return Ok(());
    };
    // Redirects are not followed: the message (tool arguments too, when configured) would go
    // to wherever the answer points, another host included.
    let client = bridle_core::http_client::builder()
        .timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| bridle_core::Error::Config(format!("webhook client: {}", e.without_url())))?;
    let mut conn = store
        .dedicated_connection(BLOCK + Duration::from_secs(10))
        .await?;
    let events = store.keys().events();
    // "$": events written before the webhook was first configured are not announced.
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&events)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(e.into());
    }
    let d = Arc::new(Delivery {
        client,
        url,
        opts: opts.clone(),
        inbox_url,
        stop: shutdown.token(),
        shutdown: shutdown.clone(),
        acks: store.conn(),
        events,
    });
    let consumer = format!("approvals-{}", ulid::Ulid::new());
    tracing::info!(consumer, "webhook delivery started");
    shutdown.spawn(async move { d.run(conn, consumer).await });
    Ok(())
}

async fn read(
    conn: &mut RedisConn,
    events: &str,
    consumer: &str,
    claim: bool,
) -> Result<Vec<Entry>, redis::RedisError> {
    if claim {
        let (_next, entries, _deleted): (String, Vec<Entry>, Vec<String>) =
            redis::cmd("XAUTOCLAIM")
                .arg(events)
                .arg(GROUP)
                .arg(consumer)
                .arg(CLAIM_IDLE.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
        return Ok(entries);
    }
    let reply: Option<Vec<(String, Vec<Entry>)>> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(events)
        .arg(">")
        .query_async(conn)
        .await?;
    Ok(reply.into_iter().flatten().flat_map(|(_, e)| e).collect())
}

impl Delivery {
    async fn run(self: Arc<Self>, mut conn: RedisConn, consumer: String) {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut last_claim: Option<tokio::time::Instant> = None;
        'read: loop {
            let claim = last_claim.is_none_or(|t| t.elapsed() >= CLAIM_IDLE / 2);
            if claim {
                last_claim = Some(tokio::time::Instant::now());
            }
            let batch = tokio::select! {
                _ = self.stop.cancelled() => break,
                r = read(&mut conn, &self.events, &consumer, claim) => r,
            };
            let entries = match batch {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("webhook: reading approval events failed (retrying): {e}");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(self.opts.backoff) => continue,
                    }
                }
            };
            for entry in entries {
                let permit = tokio::select! {
                    _ = self.stop.cancelled() => break 'read,
                    p = in_flight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'read,
                    },
                };
                let d = self.clone();
                self.shutdown.spawn(async move {
                    // Stopped mid-delivery: left unacknowledged, claimed again later.
                    if d.deliver(&entry).await {
                        d.ack(&entry.0).await;
                    }
                    drop(permit);
                });
            }
        }
        tracing::debug!("webhook delivery stopped");
    }

    async fn ack(&self, id: &str) {
        let acked: Result<u64, _> = redis::cmd("XACK")
            .arg(&self.events)
            .arg(GROUP)
            .arg(id)
            .query_async(&mut self.acks.clone())
            .await;
        if let Err(e) = acked {
            // Delivered but not acknowledged: announced again after CLAIM_IDLE at worst.
            tracing::warn!(
                event = id,
                "webhook: cannot acknowledge a delivered event: {e}"
            );
        }
    }

    /// Announces one event when it is a new approval. True once it needs nothing more (sent,
    /// given up on, or not an announcement); false only when stopped.
    async fn deliver(&self, (id, fields): &Entry) -> bool {
        if fields.get("kind").map(String::as_str) != Some("created") {
            return true;
        }
        let approval = match record::from_fields(fields) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(event = %id, "webhook: unreadable approval event, skipped: {e}");
                return true;
            }
        };
        let context = record::run_context(fields);
        let body = render(
            &approval,
            &context,
            self.opts.include_arguments,
            self.inbox_url.as_deref(),
        );
        let mut wait = self.opts.backoff;
        for attempt in 1..=self.opts.max_attempts {
            let outcome = self
                .client
                .post(self.url.expose_secret())
                .json(&body)
                .send()
                .await;
            // Never log the URL: a Slack webhook URL is a credential.
            let retry_after = match outcome {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(approval = %approval.id, attempt, "webhook delivered");
                    return true;
                }
                Ok(r) if r.status().is_redirection() => {
                    tracing::error!(
                        approval = %approval.id,
                        status = %r.status(),
                        "webhook answered with a redirect, which Bridle does not follow (the \
                         message would go to another address); configure the final URL; not \
                         retried"
                    );
                    return true;
                }
                Ok(r) => {
                    let status = r.status();
                    let permanent = status.is_client_error()
                        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                        && status != reqwest::StatusCode::REQUEST_TIMEOUT;
                    if permanent {
                        tracing::error!(
                            approval = %approval.id,
                            %status,
                            "webhook refused the message; not retried"
                        );
                        return true;
                    }
                    tracing::warn!(approval = %approval.id, attempt, %status, "webhook attempt failed");
                    r.headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                }
                Err(e) => {
                    tracing::warn!(
                        approval = %approval.id,
                        attempt,
                        "webhook attempt failed: {}",
                        e.without_url()
                    );
                    None
                }
            };
            if attempt == self.opts.max_attempts {
                break;
            }
            let pause = retry_after
                .map_or(wait, |r| r.max(wait))
                .min(self.opts.max_backoff);
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
            wait = (wait * 2).min(self.opts.max_backoff);
        }
        tracing::error!(
            approval = %approval.id,
            attempts = self.opts.max_attempts,
            "webhook not delivered; the approval is still pending in the inbox"
        );
        true
    }
}
