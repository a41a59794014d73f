//! The DynamoDB backend: `dynamodb://TABLE?region=REGION&endpoint=URL`.
//!
//! Credentials, and the region unless given, come from the standard AWS chain (environment,
//! profile, instance or container role) through `aws-config`. URL parameters and
//! `[backend.NAME]` settings: `region`, `endpoint` (e.g. a local DynamoDB-compatible server),
//! `profile`, `skew_allowance` (default: none, rule (a) off) and `command_timeout` (default 5s: no request,
//! retries included, takes longer, so a hung endpoint never stalls a heartbeat). Credentials
//! never appear in the URL, messages or logs.
//!
//! # Table and item
//!
//! `lockrun init` creates the table (on-demand, string hash key `resource`), waits until it is
//! ACTIVE and enables DynamoDB TTL on `ttl_epoch`. Other verbs never create it: a missing table is
//! a configuration error that says to run `lockrun init`. One item per resource:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `resource` | S | the resource name (hash key) |
//! | `lease_id` | S | the holder's lease id |
//! | `principal` | S | who holds it |
//! | `token` | N | fencing token: a counter incremented by every grant |
//! | `version` | S | record version number: random, replaced by every write, renewals included |
//! | `acquired_ms`, `expires_ms` | N | the holder's wall clock (ms since the epoch) |
//! | `ttl_ms` | N | the lease duration of the last grant or renewal |
//! | `released` | BOOL | set by release; the item stays, so the token keeps increasing |
//! | `ttl_epoch` | N | for DynamoDB's TTL sweeper only: 30 days after `expires_ms` |
//!
//! # Conditional writes
//!
//! Every write is one `UpdateItem` with a condition, so exactly one of several contenders wins:
//!
//! - acquire a free resource: `attribute_not_exists(resource) OR released = true`;
//! - take over a held one: `version = :the_version_judged_expired`;
//! - renew and release: `lease_id = :id AND released = false AND expires_ms > :now`. The last
//!   part, with the writer's own clock, means renewal never resurrects an expired lease and
//!   release never touches one.
//!
//! Every condition on an existing item also requires each attribute to have its type
//! (`attribute_type(token, N)`, ...), so a foreign item is reported as [`Error::Corrupt`] and is
//! never overwritten. A refused write returns the item it found, which is how a busy holder is
//! read without a second round trip.
//!
//! # Clocks
//!
//! DynamoDB has no server time. A held item may be taken over when
//!
//! - (b) the taker has seen the same record version, unchanged, for a full lease duration (the
//!   item's `ttl_ms`) on its own monotonic clock: the clock-free rule of the DynamoDB lock
//!   client. Only the rate of clocks matters, not their offset. A backend opened from a URL
//!   keeps its first sightings on disk too (`src/backend/takeover.rs`), so rule (b)
//!   counts from the first sighting by any `lockrun` on this host; or
//! - (a), only when `skew_allowance` is set: its stored expiry plus the allowance has passed on
//!   the taker's wall clock (fast, but it trusts the hosts' clocks to agree within the
//!   allowance).
//!
//! A busy answer's `expires_in` is the earlier of the two, so a waiter wakes exactly when it may
//! take over. There are no change notifications: waiters poll (see [`crate::lock`]).
//!
//! # Fencing
//!
//! The token increases by one with every grant. A new item's counter starts at the wall clock in
//! milliseconds, so an item deleted by hand, or by DynamoDB's TTL sweeper 30 days after its
//! last lease expired, and created again starts above every token it handed out (unless it
//! granted more than once a millisecond over its whole life, or the creating host's clock is
//! that far behind).
//!
//! # Errors
//!
//! Classified by the AWS error code (by the HTTP status when the body cannot be read), after the
//! SDK's own retries: connection refused, timeouts, throttling and 5xx are
//! [`Error::Unavailable`]; a missing table, missing or rejected credentials, access denied and
//! validation errors (a table whose key is not `resource`) are [`Error::Config`]. A wrong region
//! shows up as a missing table, and the message names the region and endpoint used; a region
//! name that does not exist shows up as an endpoint that cannot be reached.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use super::Settings;
use super::{Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Error, Fencing, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

mod errors;
mod item;
mod ops;
mod options;

/// The keys a `[backend.NAME]` section of this backend may have.
pub(super) const SETTINGS: &[&str] = options::KEYS;
pub use options::http_client;
mod table;
mod takeover;

use errors::Place;
use takeover::Observations;

/// Leases in a DynamoDB table.
pub struct DynamoDb {
    client: aws_sdk_dynamodb::Client,
    place: Place,
    skew: Option<Duration>,
    timeout: Duration,
    seen: Observations,
}

impl fmt::Debug for DynamoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDb")
            .field("table", &self.place.table)
            .field("region", &self.place.region)
            .field("endpoint", &self.place.endpoint)
            .field("skew_allowance", &self.skew)
            .field("command_timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DynamoDb {
    /// Opens the backend for a `dynamodb://TABLE?...` URL with settings from a config section.
    /// Nothing is sent to DynamoDB yet.
    pub async fn open(url: &BackendUrl, settings: &Settings) -> Result<DynamoDb, Error> {
        let opts = options::Options::parse(url, settings)?;
        let client = opts.client().await?;
        let mut db = DynamoDb::with_client(client, &opts.table)?;
        db.place.endpoint = opts.endpoint.as_deref().map(options::redact);
        db.skew = opts.skew;
        db.seen = Observations::kept(&format!(
            "dynamodb\0{}\0{}\0{}",
            db.place.region,
            db.place.endpoint.as_deref().unwrap_or(""),
            db.place.table
        ));
        Ok(db.command_timeout(opts.timeout))
    }

    /// A backend on `table` through a client configured by the caller (credentials, region,
    /// endpoint, retries).
    pub fn with_client(client: aws_sdk_dynamodb::Client, table: &str) -> Result<DynamoDb, Error> {
        options::check_table(table)
            .map_err(|why| Error::Config(format!("bad DynamoDB table: {why}")))?;
        let region = client
            .config()
            .region()
            .map_or_else(|| "(none)".to_owned(), |r| r.to_string());
        Ok(DynamoDb {
            client,
            place: Place {
                table: table.to_owned(),
                region,
                endpoint: None,
            },
            skew: None,
            timeout: options::DEFAULT_TIMEOUT,
            seen: Observations::default(),
        })
    }

    /// Turns on takeover rule (a): a lease is also taken over once its stored expiry plus
    /// `skew` has passed on this host's wall clock. Off by default, since it is only safe where
    /// every host's clock stays within `skew` of the others' (see the `takeover` module).
    pub fn skew_allowance(mut self, skew: Duration) -> Self {
        self.skew = Some(skew);
        self
    }

    /// The longest any one operation may take, retries included (default 5s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.place.table
    }

    /// Runs one SDK call under the command timeout.
    async fn send<T, E>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<Result<T, SdkError<E>>, Error> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| errors::timeout(&self.place, op))
    }

    fn fail<E>(&self, op: &str, err: &SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        errors::map(&self.place, op, err)
    }

    /// Reads an item back, reporting a foreign one as [`Error::Corrupt`].
    fn parse(&self, resource: &Resource, found: &item::Item) -> Result<item::Stored, Error> {
        item::Stored::parse(resource, found).map_err(|why| {
            Error::Corrupt(format!(
                "the DynamoDB item for {} in table '{}' is not a lockrun lease ({why}); it was \
                 left alone",
                quoted(resource),
                self.place.table
            ))
        })
    }
}

fn quoted(resource: &Resource) -> String {
    format!("'{}'", crate::lease::escape(resource.as_str()))
}

#[async_trait]
impl Backend for DynamoDb {
    /// Strict fencing (while the item exists), no server time (clock-free takeover instead), no
    /// watch (waiters poll), no eviction.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: Fencing::Strict,
            server_time: false,
            watch: false,
            may_evict: false,
            local: false,
            fair: false,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        self.acquire(req).await
    }

    async fn renew(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        self.extend(resource, id, ttl).await
    }

    async fn release(&self, resource: &Resource, id: &LeaseId) -> Result<bool, Error> {
        self.end(resource, id).await
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        self.live(resource).await
    }

    async fn init(&self) -> Result<Option<String>, Error> {
        table::init(self).await.map(Some)
    }

    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        self.scan_resources().await.map(Some)
    }
}
