//! The etcd backend: leases as etcd keys bound to etcd leases (`etcd://host:2379[,host2:2379]`,
//! `etcd+https://...` for TLS).
//!
//! # Key layout
//!
//! One key per resource: the `prefix` setting (default `lockrun/`) followed by the resource name,
//! byte for byte (`lockrun/deploy-prod`). Its value is a small JSON object (see the `record`
//! submodule) with lockrun's lease id, the principal, when it was acquired, the TTL asked for,
//! and the etcd lease the key is attached to. A key that is not such a value is reported as
//! [`Error::Corrupt`] and never overwritten.
//!
//! # Operations
//!
//! - **acquire**: `LeaseGrant(ttl)`, then one transaction: *if* the key's `create_revision` is 0
//!   (absent) *then* put the value attached to the new etcd lease, *else* read the key. Losing
//!   the race revokes the etcd lease at once, so failed attempts leak nothing; a transaction
//!   whose outcome is unknown (timeout) leaves its etcd lease to the give-back that follows
//!   (a release of that lease id revokes it, which undoes the grant if it happened and keeps a
//!   late one from happening), or to the next attempt.
//!   The fencing token is the revision of the put, i.e. the key's `create_revision`: etcd's
//!   revision is cluster-wide and only ever increases, so every grant gets a larger token.
//! - **renew**: read the key and check that it holds our lease id, then one keep-alive of its etcd
//!   lease. etcd refuses to keep an expired lease alive, so a renewal never resurrects one. A
//!   different TTL (`renew --ttl`) cannot be set on an existing etcd lease, so after the
//!   keep-alive the key is moved to a fresh etcd lease with the new TTL in one transaction guarded
//!   by the key's `mod_revision`, and the old etcd lease is revoked.
//! - **release**: read the key, check the lease id, delete it in a transaction guarded by its
//!   `mod_revision` (so a key that changed hands in between is never deleted), then revoke the
//!   etcd lease. A lease id that does not hold the resource releases nothing. When this process
//!   granted (or last moved) the lease itself, it knows the etcd lease the key is attached to,
//!   and the release is a single `LeaseRevoke`: revoking deletes exactly the keys attached to
//!   that etcd lease, atomically, so it can only ever delete our own key. If etcd no longer
//!   knows that etcd lease, the release falls back to the read-check-delete above.
//! - **current**: read the key, and `LeaseTimeToLive` of its etcd lease for the time left.
//! - **watch**: an etcd watch on the key; any PUT or DELETE (release, expiry) wakes the waiter.
//!   When the last event the watch has received put the key (the next holder's grant, which a
//!   waiter that runs late finds queued behind the release), the watch reports that holder
//!   instead, and the waiter waits on without an attempt.
//!   A waiter keeps the etcd lease of a failed attempt for the next one (see the `ready`
//!   submodule), and learns the holder from its record (its expiry shown as the granted TTL
//!   from now, an upper bound).
//!
//! # Clocks
//!
//! Expiry is enforced by the etcd leader's lease clock, never by a client. etcd TTLs are whole
//! seconds: a TTL is rounded **up** (at least 1 s), and etcd may raise it further to its minimum
//! (1.5 election timeouts, 2 s by default), so the server never expires a lease before lockrun's
//! local deadline. etcd has no wall-clock API, so `acquired_at` is the acquiring client's wall
//! clock and `expires_at` this client's clock plus the server's remaining TTL: both are for
//! display only.
//!
//! # Safety
//!
//! Every call is bounded by `command_timeout` (default 5 s), so a paused or partitioned server
//! cannot stall the heartbeat. `open` only checks the settings: the first call connects, within
//! `connect_timeout` (default 5 s), and its failures are read as connection failures (a server
//! that hangs up at once is a TLS mismatch, a configuration error). Sparing a round trip per
//! process matters: every `lockrun` is a new process. With several endpoints, a call that
//! cannot connect moves on to the next one at once, and after a timeout the next call starts at
//! the next endpoint (see the `cluster` submodule). Credentials come from the URL
//! (`etcd://user:password@host`), or `username` with `password_file` or `$LOCKRUN_ETCD_PASSWORD`;
//! they never appear in messages or `Debug` output. etcd's auth tokens lapse when idle: a call
//! refused for that reason logs in again and is retried once. `etcd+https://` verifies the
//! server against `ca_file` (default: the system's CA bundle) and presents `cert_file` and
//! `key_file` when given; TLS failures are configuration errors.
//!
//! # Fair waiting (`--fair`)
//!
//! Waiters that ask for it queue, as in etcd's own lock recipe: each puts a key under
//! `<prefix>\0queue\0<resource>\0`, attached to an etcd lease of its own with a short TTL that it
//! keeps alive while it waits, and waits for the queue key created just before its own (by
//! revision) to go away. The first in line waits for the resource as any waiter does, and
//! acquires in one transaction that also deletes its queue key, which wakes the next in line.
//! A release thus wakes one waiter, not all of them. A waiter that dies leaves the line when
//! its queue lease expires; one whose queue key expired (stopped, or cut off) joins again at the
//! back. Waiters without `--fair` do not queue and may still take a free resource first.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions, WatchStream, Watcher,
};
use futures_util::FutureExt;

use super::{
    Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Change, Error, Fencing, Renewal,
    Settings, Ticket, Watch,
};
use crate::lease::{Lease, LeaseId, Resource};

mod cluster;
mod errors;
mod ops;
mod options;

/// The keys a `[backend.NAME]` section of this backend may have.
pub(super) const SETTINGS: &[&str] = options::KEYS;
mod queue;
mod ready;
mod record;

/// Parses a stored etcd value as `resource`'s lease (for the fuzz targets): never panics.
#[doc(hidden)]
pub fn fuzz_decode(resource: &Resource, value: &[u8], key_lease: i64) {
    let _ = record::Record::decode(resource, value, key_lease);
}

use cluster::Member;
use options::Options;

/// Leases in an etcd cluster. Clones share the connections.
#[derive(Clone)]
pub struct Etcd {
    opts: Options,
    /// Connection options without the credentials (`ConnectOptions` would show them in `Debug`).
    connect: ConnectOptions,
    members: Arc<[Member]>,
    /// The member calls go to first.
    current: Arc<AtomicUsize>,
    /// The etcd lease of each key this process granted or renewed, by key: lets a release
    /// revoke it directly (see `release` in the module docs).
    granted: Arc<Mutex<Granted>>,
    /// A call has succeeded: the cluster answered and took the credentials.
    connected: Arc<AtomicBool>,
    /// The racing waiters of this process, by key (see the `ready` submodule).
    waiting: Arc<Mutex<HashMap<Vec<u8>, ready::Waiters>>>,
}

/// Keys this process holds: key → (lockrun lease id, etcd lease).
type Granted = HashMap<Vec<u8>, (LeaseId, i64)>;

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// The cluster of an `etcd://` or `etcd+https://` URL, with the settings `prefix`,
    /// `connect_timeout`, `command_timeout`, `ca_file`, `cert_file`, `key_file`, `username` and
    /// `password_file`. Fails with [`Error::Config`] for bad settings; the first call connects,
    /// and fails with [`Error::Unavailable`] when no member answers within the connect timeout,
    /// and [`Error::Config`] for rejected credentials or TLS failures.
    pub async fn open(url: &BackendUrl, settings: &Settings) -> Result<Etcd, Error> {
        let opts = Options::new(url, settings, &|k| std::env::var(k).ok())?;
        let etcd = Etcd {
            connect: opts.connect_options()?,
            members: Etcd::members(&opts).into(),
            current: Arc::new(AtomicUsize::new(0)),
            granted: Arc::default(),
            connected: Arc::default(),
            waiting: Arc::default(),
            opts,
        };
        Ok(etcd)
    }

    /// The etcd key that holds `resource`'s lease: the prefix followed by the name.
    pub fn key(&self, resource: &Resource) -> Vec<u8> {
        let mut key = self.opts.prefix.clone();
        key.extend_from_slice(resource.as_str().as_bytes());
        key
    }
}

#[async_trait]
impl Backend for Etcd {
    /// Strict fencing (etcd revisions), expiry by the server's lease clock, change events from
    /// etcd watches, no eviction.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: Fencing::Strict,
            server_time: true,
            watch: true,
            may_evict: false,
            local: false,
            fair: true,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        self.acquire_racing(req).await
    }

    /// A line of waiters under the key prefix (see the `queue` submodule).
    async fn enqueue(&self, req: &AcquireRequest<'_>) -> Result<Option<Box<dyn Ticket>>, Error> {
        let ticket = queue::EtcdTicket::join(self.clone(), req).await?;
        Ok(Some(Box::new(ticket)))
    }

    async fn renew(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        self.renew_lease(resource, id, ttl).await
    }

    async fn release(&self, resource: &Resource, id: &LeaseId) -> Result<bool, Error> {
        self.release_lease(resource, id).await
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        self.current_lease(resource).await
    }

    /// Every key under the prefix (keys only, one range read).
    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        let prefix = self.opts.prefix.clone();
        let resp = self
            .call("listing", |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(
                        prefix,
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
                }
            })
            .await?;
        let names = resp
            .kvs()
            .iter()
            .filter_map(|kv| kv.key().strip_prefix(self.opts.prefix.as_slice()))
            .filter_map(|k| std::str::from_utf8(k).ok())
            .filter_map(|k| Resource::new(k).ok())
            .collect();
        Ok(Some(names))
    }

    /// Watches the key, and registers a waiter on it (see the `ready` submodule).
    async fn watch(&self, resource: &Resource) -> Result<Option<Box<dyn Watch>>, Error> {
        let key = self.key(resource);
        let mut watch = self.key_watch(key.clone(), None).await?;
        self.start_waiting(&key);
        watch.waiter = Some((self.clone(), key, resource.clone()));
        Ok(Some(Box::new(watch)))
    }
}

impl Etcd {
    /// Watches one key.
    async fn key_watch(
        &self,
        key: Vec<u8>,
        options: Option<WatchOptions>,
    ) -> Result<KeyWatch, Error> {
        let (watcher, stream) = self
            .call("watching", |mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.watch(key, options).await }
            })
            .await?;
        Ok(KeyWatch::new(watcher, stream, self.opts.name.clone()))
    }
}

/// A watch on one key, created before the acquire attempt it backs up: etcd starts it at the
/// current revision, so a release after the attempt is never missed.
struct KeyWatch {
    /// Keeps the watch's request stream open; dropping it ends the watch.
    _watcher: Watcher,
    stream: WatchStream,
    name: String,
    /// For a waiter's watch: the backend and key it waits on, to unregister when it ends, and
    /// the resource, to read the new holder from an event that put the key.
    waiter: Option<(Etcd, Vec<u8>, Resource)>,
}

impl KeyWatch {
    fn new(watcher: Watcher, stream: WatchStream, name: String) -> KeyWatch {
        KeyWatch {
            _watcher: watcher,
            stream,
            name,
            waiter: None,
        }
    }

    /// The last event of a watch response: `Some(Some(kv))` put the key, `Some(None)` deleted
    /// it, `None`: no events (a progress notification).
    fn last_event(
        &self,
        resp: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) -> Result<Option<Option<KeyValue>>, Error> {
        let resp = match resp {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                return Err(Error::Unavailable(format!(
                    "{}: watch stream closed",
                    self.name
                )))
            }
            Err(e) => return Err(errors::map(&self.name, "watching", e)),
        };
        if resp.canceled() {
            return Err(Error::Unavailable(format!(
                "{}: watch canceled by etcd: {}",
                self.name,
                resp.cancel_reason()
            )));
        }
        Ok(resp.events().last().map(|e| match e.event_type() {
            EventType::Put => e.kv().cloned(),
            EventType::Delete => None,
        }))
    }
}

impl Drop for KeyWatch {
    /// Not closed (the wait was cancelled): revoke the waiter's leases in the background.
    fn drop(&mut self) {
        if let Some((etcd, key, _)) = self.waiter.take() {
            etcd.revoke_later(etcd.stop_waiting(&key));
        }
    }
}

#[async_trait]
impl Watch for KeyWatch {
    /// The wait is over: revoke the leases granted ahead that were not used.
    async fn close(mut self: Box<Self>) {
        if let Some((etcd, key, _)) = self.waiter.take() {
            for lease in etcd.stop_waiting(&key) {
                etcd.revoke(lease).await;
            }
        }
    }

    /// Resolves on the next PUT or DELETE of the key (a release, an expiry, a takeover, or a
    /// renewal that moved the key to a new etcd lease). Responses that have arrived meanwhile
    /// are read too, and only the last event counts: a waiter that runs late, on a busy
    /// machine, often finds the release that woke it followed by the next holder's grant, and
    /// then learns the new holder from the event instead of trying (an etcd transaction, a raft
    /// write, that could only fail).
    async fn changed(&mut self) -> Result<Change, Error> {
        let mut last = loop {
            let resp = self.stream.message().await;
            if let Some(event) = self.last_event(resp)? {
                break event;
            }
        };
        while let Some(resp) = self.stream.message().now_or_never() {
            if let Some(event) = self.last_event(resp)? {
                last = event;
            }
        }
        let (Some(kv), Some((_, _, resource))) = (last, self.waiter.as_ref()) else {
            return Ok(Change::MayBeFree);
        };
        // A record that does not decode is left to the attempt to report.
        Ok(match ops::waiter_view(resource, &kv) {
            Ok(holder) => Change::Held {
                holder: Some(holder),
                expires_in: None,
            },
            Err(_) => Change::MayBeFree,
        })
    }
}
