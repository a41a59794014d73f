//! The memcached backend: `memcached://host[:port][,host[:port]...]` (default port 11211).
//!
//! **memcached may evict a lock under memory pressure.** It is a cache: when it runs out of
//! memory it drops items, live leases included, and a second holder can then be granted the same
//! resource. It also has no replication and no persistence. Use it only where a duplicate run is
//! harmless (an efficiency lock); [`Capabilities::may_evict`] is true, and `lockrun run` warns.
//!
//! # URLs and settings
//!
//! Keys of a `[backend.NAME]` section: `prefix` (default `lockrun:`), `connect_timeout` and
//! `command_timeout` (both 5s: every call, all its round trips included, gets `command_timeout`),
//! `skew_allowance` (default: none, takeover rule (a) below off). [`Memcached::open`] asks every server for its
//! version, so a server that is down is reported at once.
//!
//! # Several servers
//!
//! Each resource lives on one server, chosen by rendezvous hashing of its name over the servers'
//! `host:port` as written in the URL (see [`Location`]). The order of the list does not matter,
//! but every client must use the same list: **changing the server list moves locks**, and while
//! clients disagree about it, two of them can hold the same resource.
//!
//! # Keys and values
//!
//! For a resource `R` and prefix `P`: `P` `lease:` `R` holds the lease record and `P` `token:`
//! `R` the fencing counter. A name that is not plain `[A-Za-z0-9._/:-]`, or too long for
//! memcached's 250-byte keys, is replaced by its hex SHA-256 after a `#`: `P` `lease#` `HEX`.
//! The record is JSON with the real resource name, checked on every read (see `record.rs`).
//!
//! # Operations
//!
//! - Acquire: `add` the record with the lease's expiry. If the key exists, `gets` it: a release
//!   tombstone, our own lease id (an attempt whose answer was lost), or a lease expired by the
//!   rules below is replaced with `cas`; anything else is busy. Once the key is ours, `incr` the
//!   counter (created by `add` at 0 if missing, no expiry) and `cas` the token into the record.
//! - Renew: `gets`, check the lease id, `cas` the record with the new expiry (same id, token).
//! - Release: `gets`, check the lease id, `cas` a tombstone with a 1 s expiry (the text protocol
//!   has no conditional delete; a blind `delete` or `touch` could hit someone else's lease).
//! - Current: `gets`; a tombstone is no lease.
//!
//! # Expiry and clocks
//!
//! memcached's expiry is the server's clock, in whole seconds: lockrun rounds the TTL up and adds
//! one second, since memcached may drop a key up to a second before its expiry time. An expiry of
//! 30 days or more would be read as a date, so a TTL of 30 days or more is refused
//! ([`Error::Config`], exit 78); renew a shorter lease instead. The record also carries the
//! writer's wall-clock expiry, and as a backstop for keys memcached keeps, a waiter may take a
//! lease over when (b) it saw the same record (CAS unique, lease id and expiry) for a full TTL
//! on its monotonic clock, as the DynamoDB backend does, or (a), only when `skew_allowance` is
//! set, that expiry plus the allowance has passed on its clock. There
//! are no change notifications: waiters poll.
//!
//! # Fencing
//!
//! [`Fencing::BestEffort`]: tokens increase while memcached keeps the counter. Eviction or a
//! restart drops it, and tokens start again from 1.
//!
//! # Errors
//!
//! Connection refused, a timeout or a broken connection is [`Error::Unavailable`] (exit 69), as
//! is `SERVER_ERROR out of memory`. A bad URL or setting, a TTL memcached cannot express, or a
//! server without `gets`/`cas` is [`Error::Config`] (78). A key holding anything but a lockrun
//! record (or a counter holding anything but a number) is [`Error::Corrupt`] (65) and is left as
//! it is. Other protocol surprises are [`Error::Other`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

use super::{
    Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Error, Fencing, Renewal, Settings,
};
use crate::lease::{Lease, LeaseId, Resource};

mod keys;
mod ops;
mod options;

/// The keys a `[backend.NAME]` section of this backend may have.
pub(super) const SETTINGS: &[&str] = options::KEYS;
mod proto;
mod record;
mod takeover;

pub use keys::Location;
use ops::{Fault, Place};
use proto::{Conn, ProtoError};
use takeover::Observations;

/// Leases in one or more memcached servers.
pub struct Memcached {
    servers: Vec<String>,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    skew: Option<Duration>,
    seen: Observations,
}

impl fmt::Debug for Memcached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memcached")
            .field("servers", &self.servers)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("skew_allowance", &self.skew)
            .finish_non_exhaustive()
    }
}

impl Memcached {
    /// Opens the backend for a `memcached://` URL and checks that every server answers.
    pub async fn open(url: &BackendUrl, settings: &Settings) -> Result<Memcached, Error> {
        let o = options::Options::parse(url, settings)?;
        let seen = Observations::kept(&format!("memcached\0{}\0{}", o.servers.join(","), o.prefix));
        let mc = Memcached {
            servers: o.servers,
            prefix: o.prefix,
            connect_timeout: o.connect_timeout,
            command_timeout: o.command_timeout,
            skew: o.skew,
            seen,
        };
        let checks = (0..mc.servers.len()).map(|i| mc.check(i));
        for result in futures_util::future::join_all(checks).await {
            result?;
        }
        Ok(mc)
    }

    /// Which server and keys hold `resource`.
    pub fn locate(&self, resource: &Resource) -> Location {
        let (lease_key, token_key) = keys::keys(&self.prefix, resource);
        Location {
            server: self.servers[keys::pick(&self.servers, resource)].clone(),
            lease_key,
            token_key,
        }
    }

    async fn check(&self, server: usize) -> Result<(), Error> {
        let name = &self.servers[server];
        let mut c = self.connect(name).await?;
        let out = self
            .timed(async { c.version().await.map_err(Fault::from) })
            .await;
        let version = self.finish(name, "version", out)?;
        tracing::debug!("memcached {version} at {name}");
        Ok(())
    }

    async fn connect(&self, server: &str) -> Result<Conn<TcpStream>, Error> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(server)).await {
                // A connection that could not be made sent nothing.
                Err(_) => {
                    return Err(Error::Unreached(format!(
                        "cannot connect to memcached at {server}: no answer within {}",
                        crate::duration::format(self.connect_timeout)
                    )))
                }
                Ok(Err(e)) => {
                    return Err(Error::Unreached(format!(
                        "cannot connect to memcached at {server}: {e}"
                    )))
                }
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream))
    }

    /// A new connection to the server that holds `resource`. Connections are not reused, so
    /// none is ever stale.
    async fn session(&self, resource: &Resource) -> Result<(Location, Conn<TcpStream>), Error> {
        let loc = self.locate(resource);
        let c = self.connect(&loc.server).await?;
        Ok((loc, c))
    }

    fn place<'a>(&'a self, resource: &'a Resource, loc: &'a Location) -> Place<'a> {
        Place {
            resource,
            lease_key: &loc.lease_key,
            token_key: &loc.token_key,
            skew: self.skew,
            seen: &self.seen,
        }
    }

    /// Runs one operation within the command timeout.
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, Fault>>,
    ) -> Result<Result<T, Fault>, tokio::time::error::Elapsed> {
        tokio::time::timeout(self.command_timeout, op).await
    }

    fn finish<T>(
        &self,
        server: &str,
        op: &str,
        out: Result<Result<T, Fault>, tokio::time::error::Elapsed>,
    ) -> Result<T, Error> {
        let fault = match out {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(fault)) => fault,
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "memcached at {server} did not answer {op} within {}",
                    crate::duration::format(self.command_timeout)
                )))
            }
        };
        Err(match fault {
            Fault::Corrupt { key, why } => Error::Corrupt(format!(
                "the memcached key '{key}' at {server} is not a lockrun lease ({why}); it was \
                 left alone"
            )),
            Fault::Contended => Error::Unavailable(format!(
                "memcached at {server}: the record kept changing during {op}; try again"
            )),
            Fault::Proto(e) => match e {
                ProtoError::Io(e) => {
                    Error::Unavailable(format!("memcached at {server}: {op} failed: {e}"))
                }
                ProtoError::Server(m) if m.contains("out of memory") || m.contains("temporar") => {
                    Error::Unavailable(format!("memcached at {server}: {op}: SERVER_ERROR {m}"))
                }
                ProtoError::UnknownCommand(cmd) => Error::Config(format!(
                    "the server at {server} does not support '{cmd}'; lockrun needs memcached's \
                     text protocol with gets, cas and incr"
                )),
                // Typically another kind of server on that port (Redis answers `version` with
                // -ERR): unavailable, as Redis and etcd report a server of the wrong kind.
                ProtoError::Unexpected(m) => Error::Unavailable(format!(
                    "the server at {server} does not answer like memcached ({op}: unexpected \
                     reply {m}); is this a memcached port?"
                )),
                other => Error::Other(format!("memcached at {server}: {op}: {other}")),
            },
        })
    }
}

/// The memcached expiry for `ttl`, or a configuration error.
fn exptime(ttl: Duration) -> Result<u32, Error> {
    ops::exptime(ttl).ok_or_else(|| {
        Error::Config(format!(
            "a TTL of {} is too long for memcached: it must be less than 30 days (memcached \
             reads longer expiry times as dates); use a shorter TTL and renew",
            crate::duration::format(ttl)
        ))
    })
}

#[async_trait]
impl Backend for Memcached {
    /// Best-effort fencing (eviction drops the counter), expiry by the server's clock, no watch,
    /// and eviction.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: Fencing::BestEffort,
            server_time: true,
            watch: false,
            may_evict: true,
            local: false,
            fair: false,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let exptime = exptime(req.ttl)?;
        let (loc, mut c) = self.session(req.resource).await?;
        let place = self.place(req.resource, &loc);
        let op = ops::acquire(&mut c, &place, req.id, req.principal, req.ttl, exptime);
        self.finish(&loc.server, "acquire", self.timed(op).await)
    }

    async fn renew(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let exptime = exptime(ttl)?;
        let (loc, mut c) = self.session(resource).await?;
        let place = self.place(resource, &loc);
        let op = ops::renew(&mut c, &place, id, ttl, exptime);
        self.finish(&loc.server, "renew", self.timed(op).await)
    }

    async fn release(&self, resource: &Resource, id: &LeaseId) -> Result<bool, Error> {
        let (loc, mut c) = self.session(resource).await?;
        let place = self.place(resource, &loc);
        let op = ops::release(&mut c, &place, id);
        self.finish(&loc.server, "release", self.timed(op).await)
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        let (loc, mut c) = self.session(resource).await?;
        let place = self.place(resource, &loc);
        let op = ops::current(&mut c, &place);
        self.finish(&loc.server, "current", self.timed(op).await)
    }
}
