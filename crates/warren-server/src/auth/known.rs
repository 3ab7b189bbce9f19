//! Keys already read from the store, by the hash of their secret: a busy client costs no
//! store reads, and each key's rate limiter lives here.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::RwLock;
use warren_api::ApiKey;

use super::Caller;
use crate::error::ApiError;
use crate::service::Service;

/// How often a key's `last_used_at` is written, at most: a busy key costs one store write a
/// minute, and the listing is right to the minute.
const TOUCH_EVERY_S: i64 = 60;

/// One key as the server checks it.
pub struct Known {
    /// Who it is.
    pub caller: Caller,
    expires_at: Option<DateTime<Utc>>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Unix seconds of the last `last_used_at` written.
    touched: AtomicI64,
}

impl Known {
    fn new(key: &ApiKey, team_limit: Option<u32>) -> Known {
        let limit = key.rate_limit.or(team_limit).and_then(NonZeroU32::new);
        Known {
            caller: Caller {
                key_id: key.id.clone(),
                team: key.team.clone(),
                scope: key.scope,
            },
            expires_at: key.expires_at,
            // A second's worth at once: a client may burst, then keeps to the rate.
            limiter: limit.map(|n| RateLimiter::direct(Quota::per_second(n))),
            touched: AtomicI64::new(key.last_used_at.map_or(0, |t| t.timestamp())),
        }
    }

    /// Whether it has expired.
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|t| t <= Utc::now())
    }

    /// Counts one request against its rate limit: how long to wait when over it.
    pub fn over_limit(&self) -> Option<Duration> {
        let limiter = self.limiter.as_ref()?;
        limiter
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Notes its use in the store, once a minute at most (in a task of its own: the request
    /// does not wait for it).
    pub fn touch(&self, service: &Service) {
        let now = Utc::now();
        let last = self.touched.load(Ordering::Relaxed);
        if now.timestamp() - last < TOUCH_EVERY_S
            || self
                .touched
                .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = service.store_arc();
        let id = self.caller.key_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&id, now).await {
                tracing::warn!(key = %id, "noting a key's use: {e}");
            }
        });
    }
}

/// Keys seen, by hash.
#[derive(Default)]
pub struct KnownKeys(RwLock<HashMap<String, std::sync::Arc<Known>>>);

impl KnownKeys {
    /// The key whose secret is `secret`, if it is one in force (not revoked, not expired).
    pub async fn find(
        &self,
        service: &Service,
        secret: &str,
    ) -> Result<Option<std::sync::Arc<Known>>, ApiError> {
        let hash = super::hash_key(secret);
        let found = self.0.read().await.get(&hash).cloned();
        let known = match found {
            Some(k) => k,
            None => {
                // Read again under the write lock a revocation takes too, so a key revoked
                // between the read and the insert is never remembered as good.
                let mut known = self.0.write().await;
                let store = service.store();
                let Some(key) = store.api_key_by_hash(&hash).await? else {
                    return Ok(None);
                };
                if key.revoked_at.is_some() {
                    return Ok(None);
                }
                let team_limit = match store.get_team(&key.team).await? {
                    Some(team) => team.rate_limit,
                    // Its team is gone (and its keys with it).
                    None => return Ok(None),
                };
                let k = std::sync::Arc::new(Known::new(&key, team_limit));
                known.insert(hash, k.clone());
                k
            }
        };
        Ok((!known.expired()).then_some(known))
    }

    /// Forgets the keys `drop` picks (a team's whose limits changed): the next request reads
    /// them again.
    pub async fn forget(&self, drop: impl Fn(&Caller) -> bool) {
        self.0.write().await.retain(|_, k| !drop(&k.caller));
    }

    /// Holds off every first read of a key while `change` runs (a revocation, a team's
    /// deletion), then forgets the keys `drop` picks: no request can remember a key as it
    /// was before the change.
    pub async fn changing<T>(
        &self,
        change: impl std::future::Future<Output = T>,
        drop: impl Fn(&Caller) -> bool,
    ) -> T {
        let mut known = self.0.write().await;
        let out = change.await;
        known.retain(|_, k| !drop(&k.caller));
        out
    }
}
