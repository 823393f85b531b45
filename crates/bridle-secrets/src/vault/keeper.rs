//! Keeps the broker's own token alive: renews it at two thirds of its TTL; logs in again
//! (AppRole, Kubernetes) when renewal fails, when the token cannot be renewed, or once it has
//! reached its max TTL (a renewal that returns less than asked).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridle_core::Shutdown;

use super::{Session, Vault, VaultError, classify};

/// Spawns the renewal task on `shutdown`. Tokens that never expire need none.
pub fn spawn_keeper(vault: Arc<Vault>, shutdown: &Shutdown) {
    let stop = shutdown.token();
    shutdown.spawn(async move {
        let mut failures = 0u32;
        loop {
            let s = vault.current();
            if s.ttl.is_zero() {
                tracing::debug!("the broker's vault token does not expire; nothing to renew");
                return;
            }
            let due = if failures == 0 {
                s.at + s.ttl * 2 / 3
            } else {
                Instant::now() + backoff(failures)
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.cancelled() => return,
            }
            // A request that found the token dead may have logged in meanwhile.
            if vault.current().generation != s.generation {
                failures = 0;
                continue;
            }
            match refresh(&vault, &s).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    let left = (s.at + s.ttl).saturating_duration_since(Instant::now());
                    tracing::warn!(
                        error = ?e,
                        attempt = failures,
                        token_ttl_left = ?left,
                        "could not renew the broker's vault token or log in again; retrying"
                    );
                }
            }
        }
    });
}

/// Renews, or logs in again when renewal cannot help.
async fn refresh(vault: &Vault, s: &Session) -> Result<(), VaultError> {
    let relogin = vault.login.can_relogin();
    if s.renewable && !s.capped {
        let increment = format!("{}s", s.base_ttl.as_secs().max(1));
        match vaultrs::token::renew_self(&*s.client, Some(&increment)).await {
            Ok(auth) => {
                let ttl = Duration::from_secs(auth.lease_duration);
                let capped = ttl < s.base_ttl;
                tracing::debug!(ttl = ?ttl, capped, "renewed the broker's vault token");
                let renewed = Session {
                    client: s.client.clone(),
                    ttl,
                    base_ttl: s.base_ttl,
                    renewable: auth.renewable,
                    capped,
                    at: Instant::now(),
                    generation: s.generation,
                };
                if !ttl.is_zero() {
                    vault.replace(renewed);
                    return Ok(());
                }
            }
            Err(e) if !relogin => return Err(classify(e)),
            Err(e) => {
                tracing::info!(error = ?classify(e), "renewing the broker's vault token failed; logging in again");
            }
        }
    }
    if !relogin {
        // Capped or not renewable, and nothing to log in with: it expires; say so once.
        tracing::warn!(
            "the broker's vault token reaches its max TTL and cannot be renewed; give the broker a new token or use approle/kubernetes auth"
        );
        return Err(VaultError::Login(
            "the broker's token cannot be renewed".into(),
        ));
    }
    vault.relogin(s.generation).await
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(failures.min(6))).min(Duration::from_secs(30))
}
