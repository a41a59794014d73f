//! Talking to the cluster: one client per endpoint, failover, time limits and logging in.
//!
//! Each endpoint of the URL gets its own client, connected (and logged in) when first used.
//! Calls go to the current member. A call that could not even connect moves on to the next
//! member at once (nothing was sent, so repeating it is safe); a call that times out is reported,
//! and the next call starts at the next member, so a paused or partitioned member is left
//! behind. A call left unanswered (timed out, or its caller stopped waiting) also drops the
//! member's client, so a connection that went silent is not used again. etcd's auth tokens
//! lapse when idle: a call refused for that reason reconnects, which logs in again, and is
//! retried once (etcd refused it before applying it).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::RwLock;
use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;

use super::options::Options;
use super::{errors, Etcd};
use crate::backend::in_flight::InFlight;
use crate::backend::Error;

/// One endpoint and its client.
pub(super) struct Member {
    endpoint: String,
    client: RwLock<Option<Client>>,
}

/// A time limit and the setting it comes from, for messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit(pub Duration, pub &'static str);

impl Etcd {
    /// The members of `opts`, not yet connected.
    pub(super) fn members(opts: &Options) -> Vec<Member> {
        opts.endpoints
            .iter()
            .map(|e| Member {
                endpoint: e.clone(),
                client: RwLock::new(None),
            })
            .collect()
    }

    pub(super) fn command_limit(&self) -> Limit {
        Limit(self.opts.command_timeout, "command_timeout")
    }

    /// The client of member `i`, connecting (and logging in) first if needed.
    async fn client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        let member = &self.members[i];
        if let Some(c) = member
            .client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let mut options = self.connect.clone();
        if let Some((user, password)) = &self.opts.credentials {
            options = options.with_user(user.clone(), password.0.clone());
        }
        let client = Client::connect([&member.endpoint], Some(options)).await?;
        *member.client.write().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }

    /// Drops member `i`'s client, so that the next call connects and logs in again.
    fn forget(&self, i: usize) {
        *self.members[i]
            .client
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Runs one etcd call within `limit` and returns etcd's own answer (see the module docs for
    /// failover and logging in again).
    pub(super) async fn call_raw<T, F, Fut>(
        &self,
        what: &str,
        limit: Limit,
        f: F,
    ) -> Result<Result<T, etcd_client::Error>, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + limit.0;
        let n = self.members.len();
        let first = self.current.load(Ordering::Relaxed);
        let (mut hops, mut logged_in_again) = (0, false);
        loop {
            let i = (first + hops) % n;
            let attempt = async { f(self.client(i).await?).await };
            // Unanswered, the member's client is forgotten: the next call connects anew.
            let in_flight = InFlight::new(move || self.forget(i));
            let Ok(out) = tokio::time::timeout_at(deadline, attempt).await else {
                // `in_flight`, dropped unanswered, forgets the member's connection.
                self.current.store((i + 1) % n, Ordering::Relaxed);
                return Err(Error::Unavailable(format!(
                    "{}: {what}: no answer within {} ({})",
                    self.opts.name,
                    crate::duration::format(limit.0),
                    limit.1
                )));
            };
            in_flight.answered();
            match out {
                Err(e) if hops + 1 < n && errors::is_connect_error(&e) => {
                    let endpoint = &self.members[i].endpoint;
                    tracing::debug!("etcd {endpoint}: {e}; trying the next endpoint");
                    hops += 1;
                    self.current.store((i + 1) % n, Ordering::Relaxed);
                }
                Err(e)
                    if !logged_in_again
                        && self.opts.credentials.is_some()
                        && errors::is_invalid_token(&e) =>
                {
                    tracing::debug!("etcd auth token lapsed; logging in again");
                    logged_in_again = true;
                    self.forget(i);
                }
                out => return Ok(out),
            }
        }
    }

    /// [`Etcd::call_raw`] within the command timeout, with etcd's errors mapped.
    pub(super) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        // The first call connects: it gets the connect timeout, and its failures are read as
        // connection failures (a TLS mismatch is a configuration error).
        let first = !self.connected.load(Ordering::Relaxed);
        let limit = if first {
            Limit(self.opts.connect_timeout, "connect_timeout")
        } else {
            self.command_limit()
        };
        match self.call_raw(what, limit, f).await? {
            Ok(v) => {
                self.connected.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) if first => {
                let tls = self.opts.tls.as_ref().map(|t| t.identity.is_some());
                Err(errors::map_connect(&self.opts.name, tls, e))
            }
            Err(e) => Err(errors::map(&self.opts.name, what, e)),
        }
    }
}
