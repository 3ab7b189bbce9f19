//! Keys already read from the store, by the hash of their secret: a busy client costs no
//! store reads, and each key's rate limiter lives here.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// How long a key read from the store is trusted before it is read again: a revocation or a
/// team change made through another server sharing the database reaches this one within it.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// One key as the server checks it.
pub struct Known {
    /// Who it is.
    pub caller: Caller,
    expires_at: Option<DateTime<Utc>>,
    limit: Option<NonZeroU32>,
    limiter: Option<std::sync::Arc<DefaultDirectRateLimiter>>,
    /// Unix seconds of the last `last_used_at` written.
    touched: AtomicI64,
    /// When it was read from the store.
    read_at: std::time::Instant,
}

impl Known {
    fn new(key: &ApiKey, team_limit: Option<u32>) -> Known {
        // A key's own limit may only be stricter than its team's.
        let limit = match (key.rate_limit, team_limit) {
            (Some(k), Some(t)) => Some(k.min(t)),
            (k, t) => k.or(t),
        }
        .and_then(NonZeroU32::new);
        Known {
            caller: Caller {
                key_id: key.id.clone(),
                team: key.team.clone(),
                scope: key.scope,
            },
            expires_at: key.expires_at,
            limit,
            // A second's worth at once: a client may burst, then keeps to the rate.
            limiter: limit.map(|n| std::sync::Arc::new(RateLimiter::direct(Quota::per_second(n)))),
            touched: AtomicI64::new(key.last_used_at.map_or(0, |t| t.timestamp())),
            read_at: std::time::Instant::now(),
        }
    }

    /// Read again: keeps counting against the limiter it had while its limit is the same.
    fn carry_on_from(mut self, old: &Known) -> Known {
        if self.limit == old.limit {
            self.limiter.clone_from(&old.limiter);
        }
        self
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

/// Keys seen, by hash. A key not seen yet is read from the store without any lock (so a
/// flood of unknown keys never holds up known ones) and remembered only if no revocation
/// or team change happened meanwhile: each bumps `epoch` under the write lock.
#[derive(Default)]
pub struct KnownKeys {
    map: RwLock<HashMap<String, std::sync::Arc<Known>>>,
    epoch: AtomicU64,
}

/// Reads of one key tried while revocations keep changing the set, before it is answered
/// from the store without being remembered.
const TRIES: usize = 3;

impl KnownKeys {
    /// The key whose secret is `secret`, if it is one in force (not revoked, not expired).
    pub async fn find(
        &self,
        service: &Service,
        secret: &str,
    ) -> Result<Option<std::sync::Arc<Known>>, ApiError> {
        let hash = super::hash_key(secret);
        let seen = self.map.read().await.get(&hash).cloned();
        if let Some(k) = &seen {
            if k.read_at.elapsed() < FRESH_FOR {
                return Ok((!k.expired()).then_some(k.clone()));
            }
        }
        for _ in 0..TRIES {
            let epoch = self.epoch.load(Ordering::Acquire);
            let Some(fresh) = Self::read(service, &hash).await? else {
                // Revoked (or its team gone) since: forgotten here too.
                if seen.is_some() {
                    self.map.write().await.remove(&hash);
                }
                return Ok(None);
            };
            let mut map = self.map.write().await;
            if self.epoch.load(Ordering::Acquire) == epoch {
                // Another request may have read it meanwhile: that one's limiter goes on.
                if let Some(old) = map.get(&hash) {
                    if old.read_at.elapsed() < FRESH_FOR {
                        let k = old.clone();
                        return Ok((!k.expired()).then_some(k));
                    }
                }
                let k = std::sync::Arc::new(match map.get(&hash) {
                    Some(old) => fresh.carry_on_from(old),
                    None => fresh,
                });
                map.insert(hash, k.clone());
                return Ok((!k.expired()).then_some(k));
            }
        }
        // The set kept changing: answer from the store as it is now, without remembering.
        Ok(Self::read(service, &hash)
            .await?
            .filter(|k| !k.expired())
            .map(std::sync::Arc::new))
    }

    async fn read(service: &Service, hash: &str) -> Result<Option<Known>, ApiError> {
        let store = service.store();
        let Some(key) = store.api_key_by_hash(hash).await? else {
            return Ok(None);
        };
        if key.revoked_at.is_some() {
            return Ok(None);
        }
        // A key whose team is gone (and its keys with it) is none.
        let Some(team) = store.get_team(&key.team).await? else {
            return Ok(None);
        };
        Ok(Some(Known::new(&key, team.rate_limit)))
    }

    /// Forgets the keys `drop` picks (a team's whose limits changed): the next request reads
    /// them again.
    pub async fn forget(&self, drop: impl Fn(&Caller) -> bool) {
        let mut map = self.map.write().await;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, k| !drop(&k.caller));
    }

    /// Runs `change` (a revocation, a team's deletion) with the set held, then forgets the
    /// keys `drop` picks: no request can remember a key as it was before the change.
    pub async fn changing<T>(
        &self,
        change: impl std::future::Future<Output = T>,
        drop: impl Fn(&Caller) -> bool,
    ) -> T {
        let mut map = self.map.write().await;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let out = change.await;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, k| !drop(&k.caller));
        out
    }
}
