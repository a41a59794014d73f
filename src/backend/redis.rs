//! The Redis backend: leases in a single Redis node (`redis://`, `rediss://`, `redis+unix://`).
//!
//! # URLs and settings
//!
//! `redis://[user:password@]host[:port][/db]`, `rediss://…` for TLS (`#insecure` skips certificate
//! and host name checks), `redis+unix:///path/to/redis.sock[?db=N]`. The password may instead
//! come from `LOCKRUN_REDIS_PASSWORD` or from the file named by `password_file`; a password in the
//! URL wins, then the file, then the environment. Keys of a `[backend.<name>]` section: `prefix`
//! (default `lockrun:`), `password_file`, `username`, `connect_timeout` and `command_timeout`
//! (both default 5s), and `ca_file` (`rediss://` only). A server that cannot be reached within
//! `connect_timeout` is reported at once (exit 69); every call gets `command_timeout`, so a
//! stalled server never hangs a caller, which is what lets a supervised command be stopped
//! before its lease could expire. A call left unanswered, by its timeout or by a caller that
//! stopped waiting (a renewal gets at most a heartbeat), takes its connection out of use, so a
//! connection that went silent while the server answers new ones is replaced at the next call.
//! The give-back of an unanswered acquire is also sent behind it, on its connection (see
//! [`Redis::release`]).
//!
//! TLS is rustls (TLS 1.2 and 1.3). `rediss://` checks the server's certificate chain and its
//! host name (or IP address) against the system's trusted roots (the `ca-certificates` bundle,
//! or `SSL_CERT_FILE` / `SSL_CERT_DIR`), or against the PEM bundle named by `ca_file` instead.
//! Client certificates are not supported.
//!
//! # Keys
//!
//! For a resource `R` and the prefix `P`:
//!
//! - `P` `lease:` `R`: a hash with `lockrun = 1`, `id`, `principal`, `token`, `acquired_ms`,
//!   `ttl_ms` and `renewed_ms`, expiring with the lease (`PEXPIRE`, milliseconds). Redis deletes
//!   it at expiry, so an expired lease can never be renewed back to life.
//! - `P` `token:` `R`: the fencing counter, `INCR`ed by every grant and never expiring.
//! - `P` `released:` `R`: the pub/sub channel a release publishes on.
//!
//! # Scripts
//!
//! Acquire, renew, release and current are each one Lua script (`EVALSHA`, loaded on first use):
//! one round trip, atomic on the server. Acquire grants only when the lease key is absent;
//! renew extends and release deletes only when the stored `id` is the caller's, so nobody ever
//! frees or extends someone else's lease. Each script first checks that the key is a lockrun
//! lease (type, marker field, numeric fields, an expiry) and reports anything else as
//! [`Error::Corrupt`] without touching it. Acquire is idempotent for its lease id: if the answer
//! to a grant is lost and the same request is retried, it is granted again from that moment.
//!
//! # Clocks
//!
//! Expiry is the server's (`PEXPIRE`); `acquired_at` and `expires_at` come from the server's
//! `TIME` inside the scripts, never from this host's clock. Waiters are woken by the release's
//! pub/sub message, or at the holder's remaining `PTTL`, whichever comes first.
//!
//! # Safety caveats
//!
//! - One Redis node is a single point of truth. With replication, a failover can promote a
//!   replica that never saw a grant, and a second holder can then be granted the same resource.
//!   Treat a Redis lease as an *efficiency* lock unless the command checks the fencing token
//!   (`LOCKRUN_FENCING_TOKEN`) at the resource it protects.
//! - Fencing tokens are declared [`Fencing::Strict`] (best effort under an `allkeys-*` eviction
//!   policy, below): they strictly increase as long as the server keeps the counter. With persistence off (no RDB/AOF), a restart resets the counters and the
//!   leases together, and tokens start again from 1.
//! - Eviction: under `maxmemory` with any policy but `noeviction`, Redis may delete live lease
//!   keys (they have an expiry, so `volatile-*` policies pick them too) and `allkeys-*` policies
//!   may delete the counters. lockrun reads `maxmemory*` when it connects and warns; the
//!   capabilities then say so (`may_evict`, and best-effort fencing under `allkeys-*`), and
//!   `lockrun doctor` counts it as a warning.
//! - Redis Cluster is not supported (the two keys of a resource may live on different shards).
//!
//! # Errors
//!
//! Connection refused, a timeout or a broken connection is [`Error::Unavailable`] (exit 69, worth
//! retrying; the next call opens a new connection). A wrong or missing password (`WRONGPASS`,
//! `NOAUTH`), `NOPERM`, an unknown database, a failed TLS handshake, a read-only replica or a
//! cluster redirect is [`Error::Config`] (exit 78). `rediss://` against a server without TLS on
//! that port gets no answer at all, so it is reported as unavailable after `connect_timeout`,
//! with a hint to use `redis://`. A key holding anything but a lockrun lease (or a counter holding
//! anything but a number) is [`Error::Corrupt`] (exit 65) and is left as it is.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSub};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, Script, TlsCertificates, Value};
use async_trait::async_trait;
use futures_util::StreamExt;

use super::in_flight::InFlight;
use super::{
    Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Change, Error, Fencing, Renewal,
    Settings, Watch,
};
use crate::lease::{Lease, LeaseId, Resource};

mod errors;
mod options;

/// The keys a `[backend.NAME]` section of this backend may have.
pub(super) const SETTINGS: &[&str] = options::KEYS;
mod script;

use errors::Conn;
use script::{corrupt, millis, Reply, Scripts};

/// Leases in one Redis node.
pub struct Redis {
    /// Holds the password: never printed.
    client: Client,
    /// The shared connection, numbered; `None` after a failure that made it suspect.
    conn: Mutex<Shared>,
    /// Acquires left unanswered, each with the connection it went out on (see
    /// [`Redis::release`]). A few at most.
    unanswered: Mutex<Vec<Unanswered>>,
    scripts: Scripts,
    prefix: String,
    /// The URL with secrets redacted.
    url: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// What the server's eviction policy may delete, read when connecting.
    evicts: Evicts,
}

/// The shared connection and how many were opened before it, so that a call that found its
/// connection suspect forgets that one, never a newer one another call opened meanwhile.
#[derive(Default)]
struct Shared {
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

/// An acquire whose answer never came, and the connection it went out on, which may still
/// deliver it to the server.
struct Unanswered {
    lease_key: String,
    id: String,
    conn: MultiplexedConnection,
}

/// How many unanswered acquires are remembered.
const UNANSWERED_KEPT: usize = 8;

/// How long a release waits for the answer of its copy sent behind an unanswered acquire (see
/// [`Redis::release`]). That connection stalled, so the answer rarely comes; the wait keeps the
/// request alive until the connection has written it.
const BEHIND_WAIT: Duration = Duration::from_millis(250);

/// What a Redis server's `maxmemory-policy` lets it delete under memory pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evicts {
    /// Nothing (`noeviction`, no `maxmemory`, or the policy could not be read).
    Nothing,
    /// Keys with an expiry, so leases (`volatile-*`).
    Leases,
    /// Any key, the fencing counters too (`allkeys-*`).
    Everything,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// What a script call is, for [`Redis::eval_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// An acquire: an answer that never comes is noted as an unanswered acquire of the lease
    /// `args[0]` under `keys[0]`, for the release that gives it back.
    Acquire,
    /// A release: sent again, its "not held" is no answer (the first may have released it).
    Release,
    /// Anything else (renew, current): the same when repeated.
    Repeatable,
}

impl Redis {
    /// Connects to the server named by `url`, so that a server that is down, a wrong password or
    /// an unknown database is reported here, before any lease is attempted.
    pub async fn open(url: &BackendUrl, settings: &Settings) -> Result<Redis, Error> {
        let opts = options::options(url, settings, &|k| std::env::var(k).ok())?;
        if opts.tls() {
            // The redis client builds its rustls configuration from the process default.
            super::tls::ensure_provider();
        }
        let client = match opts.ca {
            None => Client::open(opts.info),
            Some(pem) => Client::build_with_tls(
                opts.info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
        }
        .map_err(|e| Error::Config(format!("bad redis URL '{}': {e}", opts.display)))?;
        let redis = Redis {
            client,
            conn: Mutex::default(),
            unanswered: Mutex::default(),
            scripts: Scripts::new(),
            prefix: opts.prefix,
            url: opts.display,
            connect_timeout: opts.connect_timeout,
            command_timeout: opts.command_timeout,
            evicts: Evicts::Nothing,
        };
        let (generation, conn) = redis.connect().await?;
        let evicts = redis.check_eviction(generation, conn).await?;
        Ok(Redis { evicts, ..redis })
    }

    /// `{prefix}{kind}:{resource}`.
    fn key(&self, kind: &str, resource: &Resource) -> String {
        format!("{}{kind}:{}", self.prefix, resource.as_str())
    }

    /// Opens a new shared connection (authenticated, on the right database), and its number.
    async fn connect(&self) -> Result<(u64, MultiplexedConnection), Error> {
        let config = AsyncConnectionConfig::new();
        let attempt = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let conn = match tokio::time::timeout(self.connect_timeout, attempt).await {
            Err(_) => {
                // A server without TLS on the port never answers a TLS handshake: say so.
                let hint = if self.url.starts_with("rediss://") {
                    " (if the server does not speak TLS on this port, use redis://)"
                } else {
                    ""
                };
                return Err(Error::Unavailable(format!(
                    "cannot connect to redis at {}: no answer within {}{hint}",
                    self.url,
                    crate::duration::format(self.connect_timeout)
                )));
            }
            Ok(Err(e)) => return Err(errors::map_connect(&e, &self.url).0),
            Ok(Ok(c)) => c,
        };
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        slot.generation += 1;
        slot.conn = Some(conn.clone());
        Ok((slot.generation, conn))
    }

    /// The shared connection and its number, reconnecting if the last one failed.
    async fn conn(&self) -> Result<(u64, MultiplexedConnection), Error> {
        let existing = self.conn.lock().ok().and_then(|slot| {
            let conn = slot.conn.clone()?;
            Some((slot.generation, conn))
        });
        match existing {
            Some(c) => Ok(c),
            // A connection that could not be made sent nothing.
            None => self.connect().await.map_err(Error::unreached),
        }
    }

    /// A script call on connection `generation` went unanswered: the connection is taken out
    /// of use, and an acquire (its lease key and id) is noted with its connection, for the
    /// release that gives it back.
    fn unanswered_call(
        &self,
        generation: u64,
        conn: MultiplexedConnection,
        acquire: Option<(String, String)>,
    ) {
        tracing::debug!(
            "a call to redis at {} went unanswered; the next call opens a new connection",
            self.url
        );
        self.forget_conn(generation);
        if let Some((lease_key, id)) = acquire {
            if let Ok(mut list) = self.unanswered.lock() {
                if list.len() >= UNANSWERED_KEPT {
                    list.remove(0);
                }
                list.push(Unanswered {
                    lease_key,
                    id,
                    conn,
                });
            }
        }
    }

    /// Takes connection number `generation` out of use, unless a newer one replaced it already.
    fn forget_conn(&self, generation: u64) {
        if let Ok(mut slot) = self.conn.lock() {
            if slot.generation == generation {
                slot.conn = None;
            }
        }
    }

    /// Runs a script with the command timeout and decodes its reply; see [`Call`].
    async fn eval(&self, script: &Script, keys: &[&str], args: &[&str]) -> Result<Reply, Error> {
        self.eval_as(script, keys, args, Call::Repeatable).await
    }

    /// [`Redis::eval`] as `call` says.
    ///
    /// A shared connection found dropped (the server restarted, or it or a proxy in between
    /// closed an idle connection) is replaced and the call sent again at once, once: a renewal
    /// should not wait for the heartbeat's next retry to learn that its lease is gone, nor a
    /// release leave the lease held. A dropped connection does not mean the call was not sent:
    /// renew and current are the same when repeated, and a repeated acquire finds its own lease
    /// and is granted it again, with the same token; a repeated release that finds the lease
    /// not held answers with the first call's error, since the first may have released it. If
    /// the second call cannot connect, the first one's error is the answer too.
    async fn eval_as(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
        call: Call,
    ) -> Result<Reply, Error> {
        let acquire = call == Call::Acquire;
        let first = match self.eval_once(script, keys, args, acquire).await {
            Err((e, true)) => e,
            out => return out.map_err(|(e, _)| e),
        };
        tracing::debug!("{first}; sending it again on a new connection");
        match self.eval_once(script, keys, args, acquire).await {
            Err((Error::Unreached(_), _)) => Err(first),
            // The first release may have been the one that freed it.
            Ok(Reply::Plain(status)) if call == Call::Release && status == "not-held" => Err(first),
            out => out.map_err(|(e, _)| e),
        }
    }

    /// One [`Redis::eval_as`] call; an error says whether the connection was found dropped.
    async fn eval_once(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
        acquire: bool,
    ) -> Result<Reply, (Error, bool)> {
        let (generation, mut conn) = self.conn().await.map_err(|e| (e, false))?;
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(*k);
        }
        for a in args {
            call.arg(*a);
        }
        let (on, give_back) = (
            conn.clone(),
            acquire.then(|| (keys[0].to_owned(), args[0].to_owned())),
        );
        let in_flight = InFlight::new(move || self.unanswered_call(generation, on, give_back));
        let answer =
            tokio::time::timeout(self.command_timeout, call.invoke_async::<Value>(&mut conn)).await;
        match answer {
            // A stalled or half-open connection: dropping `in_flight` unanswered makes the next
            // call use a new one.
            Err(_) => Err((
                errors::timeout(&self.url, Some(self.command_timeout)),
                false,
            )),
            Ok(Err(e)) => {
                in_flight.answered();
                let (err, conn) = errors::map(&e, &self.url);
                if conn == Conn::Drop {
                    self.forget_conn(generation);
                }
                Err((err, e.is_connection_dropped()))
            }
            Ok(Ok(value)) => {
                in_flight.answered();
                Reply::decode(value).map_err(|e| (e, false))
            }
        }
    }

    /// The connections of unanswered acquires of lease `id` under `lease_key`, taken out of
    /// the list.
    fn take_unanswered(&self, lease_key: &str, id: &LeaseId) -> Vec<MultiplexedConnection> {
        let Ok(mut list) = self.unanswered.lock() else {
            return Vec::new();
        };
        let (mine, others) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|u| u.lease_key == lease_key && u.id == id.as_str());
        *list = others;
        mine.into_iter().map(|u: Unanswered| u.conn).collect()
    }

    /// Sends the release of `id` on `conn`, as a plain `EVAL` (an `EVALSHA` that met an empty
    /// script cache would need a second round trip), and waits [`BEHIND_WAIT`] for the answer:
    /// true when it released the lease. With `keep`, a lease holding that fencing token is
    /// kept (see [`Redis::undo_late_grants`]).
    async fn release_behind(
        &self,
        mut conn: MultiplexedConnection,
        lease_key: &str,
        id: &LeaseId,
        channel: &str,
        keep: Option<u64>,
    ) -> bool {
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(script::release_source())
            .arg(1)
            .arg(lease_key)
            .arg(id.as_str())
            .arg(channel);
        if let Some(token) = keep {
            cmd.arg(token.to_string());
        }
        let answer = tokio::time::timeout(BEHIND_WAIT, conn.send_packed_command(&cmd)).await;
        matches!(
            answer.map(|a| a.map(Reply::decode)),
            Ok(Ok(Ok(Reply::Plain(status)))) if status == "released"
        )
    }

    /// Lease `id` was granted with fencing token `token`, after an earlier acquire of the same
    /// id went unanswered. That acquire may still reach the server, after this lease has been
    /// released: it would then grant the id again, to nobody, for its whole TTL. So a release
    /// of the id is sent behind it on its connection (which runs its commands in order), one
    /// that keeps the lease holding `token`: it undoes only a grant made by the late acquire.
    async fn undo_late_grants(&self, resource: &Resource, id: &LeaseId, token: u64) {
        let lease_key = self.key("lease", resource);
        let behind = self.take_unanswered(&lease_key, id);
        if behind.is_empty() {
            return;
        }
        let channel = self.key("released", resource);
        futures_util::future::join_all(
            behind
                .into_iter()
                .map(|conn| self.release_behind(conn, &lease_key, id, &channel, Some(token))),
        )
        .await;
    }

    /// The resources with a lease key (SCAN over `PREFIX lease:*`, in pages).
    async fn scan_resources(&self) -> Result<Vec<Resource>, Error> {
        let (generation, mut conn) = self.conn().await?;
        let pattern = format!("{}lease:*", escape_glob(&self.prefix));
        let strip = format!("{}lease:", self.prefix);
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let mut scan = ::redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500);
            let page = scan.query_async::<(u64, Vec<Vec<u8>>)>(&mut conn);
            let (next, keys) = match tokio::time::timeout(self.command_timeout, page).await {
                Err(_) => {
                    self.forget_conn(generation);
                    return Err(errors::timeout(&self.url, Some(self.command_timeout)));
                }
                Ok(Err(e)) => return Err(errors::map(&e, &self.url).0),
                Ok(Ok(page)) => page,
            };
            out.extend(
                keys.iter()
                    .filter_map(|k| std::str::from_utf8(k).ok()?.strip_prefix(strip.as_str()))
                    .filter_map(|name| Resource::new(name).ok()),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Warns when the server may evict lease keys, and says what it may evict. Servers that hide
    /// `CONFIG` are not checked.
    async fn check_eviction(
        &self,
        generation: u64,
        mut conn: MultiplexedConnection,
    ) -> Result<Evicts, Error> {
        let mut cmd = ::redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory*");
        let answer = tokio::time::timeout(
            self.command_timeout,
            cmd.query_async::<Vec<String>>(&mut conn),
        )
        .await;
        let pairs = match answer {
            Err(_) => {
                self.forget_conn(generation);
                return Err(errors::timeout(&self.url, Some(self.command_timeout)));
            }
            Ok(Err(e)) if e.code() == Some("NOPERM") || e.kind() == ErrorKind::ResponseError => {
                tracing::debug!(
                    "cannot read the eviction policy of redis at {}: {e}",
                    self.url
                );
                return Ok(Evicts::Nothing);
            }
            Ok(Err(e)) => return Err(errors::map(&e, &self.url).0),
            Ok(Ok(pairs)) => pairs,
        };
        let get = |name: &str| {
            pairs
                .chunks(2)
                .find(|kv| kv[0] == name)
                .and_then(|kv| kv.get(1).cloned())
        };
        let (limit, policy) = (get("maxmemory"), get("maxmemory-policy"));
        let (Some(limit), Some(policy)) = (limit, policy) else {
            return Ok(Evicts::Nothing);
        };
        if limit == "0" || policy == "noeviction" {
            return Ok(Evicts::Nothing);
        }
        let counters = if policy.starts_with("allkeys") {
            ", and with it the fencing-token counter (tokens would start again at 1)"
        } else {
            ""
        };
        tracing::warn!(
            "redis at {} may evict keys (maxmemory {limit}, maxmemory-policy {policy}): \
             a live lease could vanish{counters}; set maxmemory-policy noeviction",
            self.url
        );
        Ok(if policy.starts_with("allkeys") {
            Evicts::Everything
        } else {
            Evicts::Leases
        })
    }

    /// The server's `appendonly` and `save` settings; `None` when they cannot be read (`CONFIG`
    /// hidden or renamed, no answer in time).
    async fn persistence(&self) -> Option<(String, String)> {
        let (_, mut conn) = self.conn().await.ok()?;
        let mut pipe = ::redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("appendonly");
        pipe.cmd("CONFIG").arg("GET").arg("save");
        let answer = tokio::time::timeout(
            self.command_timeout,
            pipe.query_async::<(Vec<String>, Vec<String>)>(&mut conn),
        )
        .await
        .ok()?
        .ok()?;
        let value = |pairs: &[String]| pairs.get(1).cloned();
        Some((value(&answer.0)?, value(&answer.1)?))
    }

    /// A server without the append-only file comes back from a restart with its last snapshot
    /// at best: the leases and fencing tokens granted since are forgotten, and those tokens
    /// are handed out again.
    async fn persistence_warnings(&self) -> Vec<String> {
        match self.persistence().await {
            Some((aof, save)) if aof != "yes" => {
                let lost = if save.trim().is_empty() {
                    "every lease, and starts fencing tokens again at 1 (save \"\": no snapshots)"
                } else {
                    "the leases granted since its last snapshot, and hands their fencing tokens \
                     out again"
                };
                vec![format!(
                    "redis at {} does not log writes to an append-only file (appendonly no): a \
                     restart forgets {lost}; set appendonly yes",
                    self.url
                )]
            }
            _ => Vec::new(),
        }
    }

    /// Whether the server refuses this user a `PUBLISH` on the release channels (an ACL without
    /// them: Redis 7 gives new users none, `acl-pubsub-default resetchannels`). Probed on a
    /// channel of those nobody listens to.
    async fn may_not_publish(&self) -> bool {
        let Ok((_, mut conn)) = self.conn().await else {
            return false;
        };
        let mut publish = ::redis::cmd("PUBLISH");
        publish
            .arg(format!("{}released:", self.prefix))
            .arg("doctor");
        let answer =
            tokio::time::timeout(self.command_timeout, publish.query_async::<i64>(&mut conn)).await;
        matches!(answer, Ok(Err(e)) if e.code() == Some("NOPERM")
            || e.to_string().contains("can't publish"))
    }

    fn unexpected(&self, op: &str, reply: &Reply) -> Error {
        Error::Other(format!(
            "unexpected answer from redis at {} to {op}: {reply:?}",
            self.url
        ))
    }
}

#[async_trait]
impl Backend for Redis {
    /// Strict fencing, expiry by the server's clock, watch; under an eviction policy, leases may
    /// vanish, and under an `allkeys-*` one the fencing counters too.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: if self.evicts == Evicts::Everything {
                Fencing::BestEffort
            } else {
                Fencing::Strict
            },
            server_time: true,
            watch: true,
            may_evict: self.evicts != Evicts::Nothing,
            local: false,
            fair: false,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let lease_key = self.key("lease", req.resource);
        let counter = self.key("token", req.resource);
        let ttl = millis(req.ttl).to_string();
        let reply = self
            .eval_as(
                &self.scripts.acquire,
                &[&lease_key, &counter],
                &[req.id.as_str(), req.principal, &ttl],
                Call::Acquire,
            )
            .await?;
        match reply {
            Reply::Lease(status, rec) if status == "acquired" => {
                let lease = rec.lease(req.resource, &lease_key)?;
                if let Some(token) = lease.fencing_token {
                    self.undo_late_grants(req.resource, req.id, token).await;
                }
                Ok(Acquire::Acquired(lease))
            }
            Reply::Lease(status, rec) if status == "busy" => Ok(Acquire::Busy {
                holder: Some(rec.lease(req.resource, &lease_key)?),
                expires_in: Some(rec.expires_in()),
            }),
            Reply::Corrupt { key, reason } => Err(corrupt(&key, &reason, key == counter)),
            other => Err(self.unexpected("acquire", &other)),
        }
    }

    async fn renew(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let lease_key = self.key("lease", resource);
        let ttl = millis(ttl).to_string();
        let reply = self
            .eval(&self.scripts.renew, &[&lease_key], &[id.as_str(), &ttl])
            .await?;
        match reply {
            Reply::Lease(status, rec) if status == "renewed" => {
                Ok(Renewal::Renewed(rec.lease(resource, &lease_key)?))
            }
            Reply::Plain(status) if status == "lost" => Ok(Renewal::Lost),
            Reply::Corrupt { key, reason } => Err(corrupt(&key, &reason, false)),
            other => Err(self.unexpected("renew", &other)),
        }
    }

    /// Releases on the shared connection. If an acquire of this very lease went unanswered, the
    /// release is also sent on that acquire's connection, behind it: Redis runs the commands of
    /// one connection in order, so should the server get that acquire late, the lease it grants
    /// is released right after, where a release on a new connection could have come first.
    async fn release(&self, resource: &Resource, id: &LeaseId) -> Result<bool, Error> {
        let lease_key = self.key("lease", resource);
        let channel = self.key("released", resource);
        let behind = self.take_unanswered(&lease_key, id);
        let (keys, args) = ([lease_key.as_str()], [id.as_str(), channel.as_str()]);
        let fresh = self.eval_as(&self.scripts.release, &keys, &args, Call::Release);
        let reply = if behind.is_empty() {
            fresh.await?
        } else {
            let behind = futures_util::future::join_all(
                behind
                    .into_iter()
                    .map(|conn| self.release_behind(conn, &lease_key, id, &channel, None)),
            );
            let (fresh, behind) = futures_util::future::join(fresh, behind).await;
            if behind.contains(&true) {
                return Ok(true);
            }
            fresh?
        };
        match reply {
            Reply::Plain(status) if status == "released" => Ok(true),
            Reply::Plain(status) if status == "not-held" => Ok(false),
            Reply::Corrupt { key, reason } => Err(corrupt(&key, &reason, false)),
            other => Err(self.unexpected("release", &other)),
        }
    }

    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        self.scan_resources().await.map(Some)
    }

    /// A server without the append-only file comes back from a restart with its last snapshot
    /// at best: the leases and fencing tokens granted since are forgotten, and those tokens
    /// are handed out again. A user that may not publish on the release channels wakes no
    /// waiter when it releases.
    async fn setup_warnings(&self) -> Vec<String> {
        let mut warnings = self.persistence_warnings().await;
        if self.may_not_publish().await {
            warnings.push(format!(
                "redis at {} does not let this user publish on the release channels \
                 ({}released:*): a release wakes no waiter, and waiters notice it at their \
                 5-second poll; grant them (ACL SETUSER <user> &{}released:*)",
                self.url, self.prefix, self.prefix
            ));
        }
        warnings
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        let lease_key = self.key("lease", resource);
        let reply = self.eval(&self.scripts.current, &[&lease_key], &[]).await?;
        match reply {
            Reply::Lease(status, rec) if status == "held" => {
                Ok(Some(rec.lease(resource, &lease_key)?))
            }
            Reply::Plain(status) if status == "none" => Ok(None),
            Reply::Corrupt { key, reason } => Err(corrupt(&key, &reason, false)),
            other => Err(self.unexpected("current", &other)),
        }
    }

    async fn watch(&self, resource: &Resource) -> Result<Option<Box<dyn Watch>>, Error> {
        let channel = self.key("released", resource);
        let mut pubsub = match tokio::time::timeout(
            self.connect_timeout,
            self.client.get_async_pubsub(),
        )
        .await
        {
            Err(_) => return Err(errors::timeout(&self.url, Some(self.connect_timeout))),
            Ok(Err(e)) => return Err(errors::map(&e, &self.url).0),
            Ok(Ok(p)) => p,
        };
        match tokio::time::timeout(self.command_timeout, pubsub.subscribe(&channel)).await {
            Err(_) => Err(errors::timeout(&self.url, Some(self.command_timeout))),
            Ok(Err(e)) => Err(errors::map(&e, &self.url).0),
            Ok(Ok(())) => Ok(Some(Box::new(Released {
                pubsub,
                url: self.url.clone(),
            }))),
        }
    }
}

/// A subscription to a resource's release channel, on a connection of its own.
struct Released {
    pubsub: PubSub,
    url: String,
}

#[async_trait]
impl Watch for Released {
    async fn changed(&mut self) -> Result<Change, Error> {
        match self.pubsub.on_message().next().await {
            Some(_) => Ok(Change::MayBeFree),
            None => Err(Error::Unavailable(format!(
                "the pub/sub connection to redis at {} closed",
                self.url
            ))),
        }
    }
}

/// Escapes Redis glob characters, so a prefix is matched literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_is_down_is_unavailable_at_open() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = BackendUrl::parse(&format!("redis://:hunter2@127.0.0.1:{port}/0")).unwrap();
        let err = Redis::open(&url, &Settings::default()).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_at_open() {
        // A listener that accepts (the kernel does) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = BackendUrl::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap();
        let settings = Settings::new(
            "test",
            "connect_timeout = \"300ms\""
                .parse::<toml::Table>()
                .unwrap(),
        );
        let start = std::time::Instant::now();
        let err = Redis::open(&url, &settings).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("no answer within 300ms"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
        drop(listener);
    }
}
