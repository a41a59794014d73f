//! The PostgreSQL backend: one row per resource in a lease table, every time from the server's
//! clock, LISTEN/NOTIFY to wake waiters.
//!
//! # URL and settings
//!
//! `postgres://user[:password]@host[:port]/db?sslmode=...` (or `postgresql://`), with the
//! parameters tokio-postgres accepts (`host=/run/postgresql` for a socket, `connect_timeout`,
//! `options`, `application_name`, ...). A missing user is `PGUSER`, then `USER`; a missing host
//! is `PGHOST`, then `/var/run/postgresql` when it exists, then `localhost`. The password is
//! taken from the URL, else the `password_file` setting, else `LOCKRUN_POSTGRES_PASSWORD`, else
//! `PGPASSWORD`, else libpq's password file (`PGPASSFILE`, else `~/.pgpass`; see the `pgpass` module).
//! Passwords never appear in messages or `Debug`.
//!
//! `sslmode` follows libpq: `disable`; `prefer` (the default: TLS when the server offers it);
//! `require` (TLS or fail). Like libpq, `prefer` and `require` encrypt but do **not** verify
//! the server certificate, unless `sslrootcert=FILE` is given, which makes them check the chain
//! against that file. `verify-ca` checks the chain (roots: `sslrootcert`, else
//! `~/.postgresql/root.crt`, else the system store; `sslrootcert=system` for the system store),
//! `verify-full` also the host name. `allow` is treated as `prefer`. Client certificates
//! (`sslcert`, `sslkey`) are not supported. TLS is rustls (TLS 1.2 and 1.3); the system store
//! is the `ca-certificates` bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`.
//!
//! `[backend.<name>]` keys: `table` (default `lockrun_leases`), `schema` (default: none, so the
//! `search_path` decides), `password_file`, `connect_timeout` (default 5s, or the URL's),
//! `statement_timeout` or its alias `command_timeout` (default 5s), `listen` (default true;
//! false turns LISTEN off, for poolers). Table and schema must be plain identifiers
//! (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes); they are always double-quoted, so case is kept.
//!
//! # Table
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS lockrun_leases (
//!     resource    text PRIMARY KEY,
//!     lease_id    text NOT NULL,
//!     principal   text NOT NULL,
//!     token       bigint NOT NULL,          -- fencing token: +1 with every grant
//!     acquired_at timestamptz NOT NULL,
//!     expires_at  timestamptz NOT NULL,
//!     ttl_ms      bigint NOT NULL,          -- TTL of the last grant or renewal
//!     released    boolean NOT NULL DEFAULT false
//! );
//! CREATE INDEX IF NOT EXISTS lockrun_leases_expires_at_idx ON lockrun_leases (expires_at);
//! ```
//!
//! `lockrun init` creates both (and the schema, if one is configured and missing). Ordinary
//! verbs create them on first use when the role may; a role without CREATE rights gets a
//! configuration error that points to `lockrun init`. Rows are never deleted: a release marks
//! the row released, so the token of a resource keeps increasing forever.
//!
//! # Statements
//!
//! Each write is a single statement (so a single implicit transaction):
//!
//! - acquire: `INSERT ... ON CONFLICT (resource) DO UPDATE SET ..., token = t.token + 1 WHERE
//!   (t.released OR t.expires_at <= clock_timestamp()) AND <row is valid> RETURNING ...`; when
//!   it returns nothing, `current` reads the holder's row with `expires_at - clock_timestamp()`,
//!   which becomes `Busy.expires_in`. (One plain statement plans in a fraction of the time a
//!   statement that also returns the holder did, and every lockrun process plans it afresh.)
//! - renew: `UPDATE ... SET expires_at = clock_timestamp() + ttl WHERE resource AND lease_id AND
//!   NOT released AND expires_at > clock_timestamp()`, so an expired lease is never revived.
//! - release: the same guard, `SET released = true, expires_at = clock_timestamp()`, and
//!   `pg_notify('lockrun_<table>', resource)` for the freed row, in the same statement; when
//!   nothing was freed, `current` tells a foreign row from a lease that is not ours. The release
//!   alone commits asynchronously (`set_config('synchronous_commit', 'off', true)`): it need not
//!   survive a crash, and it is on the handoff's path.
//! - current: the row, with liveness judged by the server.
//!
//! A row that lockrun did not write (token below 1, malformed lease id, NULLs) is never taken
//! over, renewed or released: the statements carry a validity guard, and the row is reported as
//! [`Error::Corrupt`]. A table with other columns is an [`Error::Config`].
//!
//! # Clocks
//!
//! Every time comes from the server's `clock_timestamp()` (not `now()`, which is frozen at the
//! start of the transaction); the client's clock is never used. Lease times are the server's.
//!
//! # Waiting
//!
//! [`Backend::watch`] puts the waiter in a line of waiters kept by the server (a session
//! advisory lock per table and resource, see the `watch` module); the first in line `LISTEN`s on the
//! table's channel and wakes on notifications whose payload is the resource, so a release wakes
//! one waiter. NOTIFY is sent only at commit, is not durable, and expiry sends none: the generic
//! policy in [`crate::lock`] also wakes at the holder's expiry (from `expires_in`) and polls as a
//! safety net.
//!
//! # Connection poolers
//!
//! The lease operations rely on no session state: no `SET`, no advisory locks, no temporary
//! objects, and no named prepared statements. Statements are sent with tokio-postgres' `query_typed`, which
//! parses, binds and executes the *unnamed* statement in one round trip ending in `Sync`, so
//! they work through PgBouncer in transaction mode. LISTEN does not work through a
//! transaction pooler, and neither does the waiters' line (session advisory locks):
//! set `listen = false` there, to poll instead.
//!
//! # Timeouts
//!
//! Connecting (including TLS and authentication) is bounded by `connect_timeout`, each
//! statement by `statement_timeout`, on the client side, so a paused or partitioned server never
//! hangs a heartbeat. A statement left unanswered (it timed out, or its caller stopped waiting:
//! a renewal gets at most a heartbeat) leaves its connection out of use, so a connection that
//! went silent while the server answers new ones is replaced at the next statement; one that
//! timed out is also cancelled on a best-effort basis. (Not one whose caller stopped waiting:
//! that may be a renewal dropped just as the run ends, whose answer has arrived unread, and the
//! cancel would hit the release queued behind it.) It may still commit on the server: an acquire
//! would then leave a lease that holds the resource until its TTL, so the connection of an
//! unanswered acquire is kept open and a release is sent behind it (see the `behind` module);
//! the error names the lease all the same (see [`crate::wait`]).
//!
//! # Errors
//!
//! Refused or timed-out connections, I/O errors, server shutdowns (57P01...) and overload are
//! [`Error::Unavailable`]. Authentication failures (28P01, 28000), an unknown database (3D000),
//! missing privileges (42501), a server that does not offer TLS when `sslmode` requires it, and a
//! table of the wrong shape are [`Error::Config`]. A damaged or foreign row is
//! [`Error::Corrupt`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::{
    Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Error, Fencing, Renewal, Settings,
    Watch,
};
use crate::lease::{escape, Lease, LeaseId, Resource};

mod behind;
mod errors;
mod options;

/// The keys a `[backend.NAME]` section of this backend may have.
pub(super) const SETTINGS: &[&str] = options::KEYS;
mod pgpass;
mod setup;
mod sql;
mod tls;
mod watch;

pub use options::{identifier, DEFAULT_TABLE, KEYS};

use errors::{classify, sqlstate};
use options::Options;
use sql::{Sql, Stored};

/// A lease table in a PostgreSQL database. One connection, opened at once and re-opened when
/// it breaks; a waiter borrows it to stand in the line of waiters (see the `watch` module).
pub struct Postgres {
    opts: Arc<Options>,
    sql: Sql,
    channel: String,
    conn: Slot,
    /// Unanswered acquires and their connections (see the `behind` module).
    behind: behind::Behind,
}

/// Where the backend keeps its connection; empty while a waiter has borrowed it.
type Slot = Arc<Mutex<Option<Live>>>;

/// An open connection: the client, the task that drives it, and the watches waiting for its
/// notifications. Dropping it closes the connection.
struct Live {
    client: Arc<Client>,
    task: AbortHandle,
    hub: Arc<watch::Hub>,
    /// Set when a statement on it went unanswered (see [`InFlight`]): not used again.
    silent: Arc<AtomicBool>,
}

/// A statement in flight on the shared connection. Dropped before [`InFlight::answered`], that
/// is when its time ran out or its caller stopped waiting (the heartbeat gives a renewal at most
/// a heartbeat, less than `statement_timeout`), it marks the connection silent, so that the next
/// statement goes out on a new one.
struct InFlight {
    client: Arc<Client>,
    silent: Arc<AtomicBool>,
    tls: tls::Connector,
    answered: bool,
}

impl InFlight {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.silent.store(true, Ordering::Relaxed);
    }
}

/// How long a release sent behind an unanswered acquire waits for its answer. That connection
/// stalled, so the answer rarely comes; the wait keeps the statement alive until the
/// connection's task has written it.
const BEHIND_WAIT: Duration = Duration::from_millis(250);

/// Asks the server to cancel what `client` is running (best effort, in the background).
fn cancel(client: &Client, tls: &tls::Connector) {
    let token = client.cancel_token();
    let tls = tls.clone();
    tokio::spawn(async move {
        let cancel = token.cancel_query(tls);
        let _ = tokio::time::timeout(Duration::from_secs(2), cancel).await;
    });
}

impl Live {
    /// Connects, bounded by `connect_timeout`, and starts driving the connection.
    async fn open(opts: &Options) -> Result<Live, Error> {
        let connecting = opts.pg.connect(opts.tls.clone());
        let (client, connection) =
            match tokio::time::timeout(opts.connect_timeout, connecting).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    return Err(match (classify(&e, &opts.endpoint), &opts.password_note) {
                        (Error::Config(m), Some(note)) if errors::is_auth(&e) => {
                            Error::Config(format!("{m}; {note}"))
                        }
                        (other, _) => other,
                    })
                }
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "PostgreSQL at {}: no answer within {} while connecting",
                        opts.endpoint,
                        crate::duration::format(opts.connect_timeout)
                    )))
                }
            };
        let hub = Arc::new(watch::Hub::default());
        let task = tokio::spawn(watch::drive(
            connection,
            Arc::clone(&hub),
            opts.endpoint.clone(),
        ));
        Ok(Live {
            client: Arc::new(client),
            task: task.abort_handle(),
            hub,
            silent: Arc::default(),
        })
    }

    fn is_open(&self) -> bool {
        !self.client.is_closed() && !self.silent.load(Ordering::Relaxed)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Why a statement failed: a raw server error (so callers can look at the SQLSTATE), or one
/// already mapped.
enum Failed {
    Pg(tokio_postgres::Error),
    Mapped(Error),
}

type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

impl Postgres {
    /// Opens the backend and connects at once, so a server that is down or a wrong password is
    /// reported before anything else happens.
    pub async fn open(url: &BackendUrl, settings: &Settings) -> Result<Postgres, Error> {
        let opts = Options::new(url, settings, &|k| std::env::var(k).ok())?;
        let pg = Postgres {
            sql: Sql::new(&opts.table),
            channel: opts.table.channel(),
            opts: Arc::new(opts),
            conn: Slot::default(),
            behind: behind::Behind::default(),
        };
        pg.client().await?;
        Ok(pg)
    }

    /// The table, as `schema.table` or `table`.
    pub fn table(&self) -> String {
        self.opts.table.display()
    }

    /// The shared connection, (re)connecting when there is none or it broke.
    async fn client(&self) -> Result<Arc<Client>, Error> {
        let lent = self.lend().await?;
        let client = Arc::clone(&lent.client);
        lent.answered();
        Ok(client)
    }

    /// [`Postgres::client`], for one statement: unless it is answered, the connection is not
    /// used again.
    async fn lend(&self) -> Result<InFlight, Error> {
        let mut slot = self.conn.lock().await;
        let live = match slot.as_ref().filter(|l| l.is_open()) {
            Some(live) => live,
            // A connection that could not be made sent nothing.
            None => slot.insert(Live::open(&self.opts).await.map_err(Error::unreached)?),
        };
        Ok(InFlight {
            client: Arc::clone(&live.client),
            silent: Arc::clone(&live.silent),
            tls: self.opts.tls.clone(),
            answered: false,
        })
    }

    /// Forgets a broken connection (and closes it) so the next call reconnects.
    async fn discard(&self, client: &Arc<Client>) {
        let mut slot = self.conn.lock().await;
        if slot
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.client, client))
        {
            slot.take();
        }
    }

    fn map(&self, e: &tokio_postgres::Error) -> Error {
        classify(e, &self.opts.endpoint)
    }

    fn map_failed(&self, f: Failed) -> Error {
        match f {
            Failed::Mapped(e) => e,
            Failed::Pg(e) => match sqlstate(&e) {
                Some(c) if errors::WRONG_SHAPE.contains(&c) => self.wrong_shape(&e),
                Some(c) if errors::MISSING_TABLE.contains(&c) => Error::Config(format!(
                    "table {} does not exist in PostgreSQL at {}; run 'lockrun init'",
                    self.table(),
                    self.opts.endpoint
                )),
                Some("42501") => Error::Config(format!(
                    "role '{}' may not use table {}: {} (grant it SELECT, INSERT and UPDATE)",
                    self.opts.user,
                    self.table(),
                    e.as_db_error()
                        .map(|d| d.message())
                        .unwrap_or("permission denied")
                )),
                _ => self.map(&e),
            },
        }
    }

    fn wrong_shape(&self, e: &tokio_postgres::Error) -> Error {
        match e.as_db_error() {
            Some(db) => self.shape_error(db.message()),
            None => self.map(e),
        }
    }

    /// One statement with a client-side deadline.
    async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, Failed> {
        self.query_noting(sql, params, None).await
    }

    /// [`Postgres::query`]; `acquire` names the resource and lease id of an acquire, whose
    /// connection is kept when it goes unanswered (see the `behind` module).
    async fn query_noting(
        &self,
        sql: &str,
        params: &Params<'_>,
        acquire: Option<(&str, &str)>,
    ) -> Result<Vec<Row>, Failed> {
        let in_flight = self.lend().await.map_err(Failed::Mapped)?;
        let client = Arc::clone(&in_flight.client);
        let limit = self.opts.statement_timeout;
        match tokio::time::timeout(limit, client.query_typed(sql, params)).await {
            Ok(Ok(rows)) => {
                in_flight.answered();
                Ok(rows)
            }
            Ok(Err(e)) => {
                in_flight.answered();
                if errors::is_connection_lost(&e) {
                    self.discard(&client).await;
                }
                Err(Failed::Pg(e))
            }
            Err(_) => {
                // Unanswered: the statement is cancelled, and the connection closed, or for
                // an acquire kept open, for what is to be sent behind it.
                cancel(&client, &in_flight.tls);
                drop(in_flight);
                match acquire {
                    Some((resource, id)) => self.set_aside(&client, resource, id).await,
                    None => self.discard(&client).await,
                }
                Err(Failed::Mapped(Error::Unavailable(format!(
                    "PostgreSQL at {}: no answer within {}",
                    self.opts.endpoint,
                    crate::duration::format(limit)
                ))))
            }
        }
    }

    /// Runs a lease statement, creating the table first when it is missing (once).
    async fn rows(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, Error> {
        self.rows_noting(sql, params, None).await
    }

    /// [`Postgres::rows`], noting an acquire as [`Postgres::query_noting`] does.
    async fn rows_noting(
        &self,
        sql: &str,
        params: &Params<'_>,
        acquire: Option<(&str, &str)>,
    ) -> Result<Vec<Row>, Error> {
        match self.query_noting(sql, params, acquire).await {
            Err(Failed::Pg(e))
                if sqlstate(&e).is_some_and(|c| errors::MISSING_TABLE.contains(&c)) =>
            {
                tracing::debug!("{}; creating table {}", self.map(&e), self.table());
                self.create().await.map_err(|f| match f {
                    Failed::Pg(e) if sqlstate(&e) == Some("42501") => Error::Config(format!(
                        "table {} does not exist in PostgreSQL at {} and role '{}' may not \
                         create it; run 'lockrun init' as a role that can",
                        self.table(),
                        self.opts.endpoint,
                        self.opts.user
                    )),
                    other => self.map_failed(other),
                })?;
                self.query_noting(sql, params, acquire)
                    .await
                    .map_err(|f| self.map_failed(f))
            }
            other => other.map_err(|f| self.map_failed(f)),
        }
    }

    /// Runs a lease statement and decodes its rows.
    async fn stored(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Stored>, Error> {
        self.decode(self.rows(sql, params).await?)
    }

    fn decode(&self, rows: Vec<Row>) -> Result<Vec<Stored>, Error> {
        rows.iter()
            .map(|r| Stored::decode(r).map_err(|why| self.shape_error(&why)))
            .collect()
    }

    /// The lease in `row`, or a Corrupt error naming the row.
    fn lease(&self, resource: &Resource, row: &Stored) -> Result<Lease, Error> {
        row.lease(resource).map_err(|why| {
            Error::Corrupt(format!(
                "table {} in PostgreSQL at {}: the row of resource '{}' is not a lockrun lease \
                 ({why}); lockrun leaves it untouched",
                self.table(),
                self.opts.endpoint,
                escape(resource.as_str())
            ))
        })
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[async_trait]
impl Backend for Postgres {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: Fencing::Strict,
            server_time: true,
            watch: self.opts.listen,
            may_evict: false,
            local: false,
            fair: false,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let (res, id, ms) = (req.resource.as_str(), req.id.as_str(), ttl_ms(req.ttl));
        let ms_f = ms as f64;
        let params: &Params<'_> = &[
            (&res, Type::TEXT),
            (&id, Type::TEXT),
            (&req.principal, Type::TEXT),
            (&ms, Type::INT8),
            (&ms_f, Type::FLOAT8),
        ];
        let rows = self
            .rows_noting(&self.sql.acquire, params, Some((res, id)))
            .await?;
        let rows = self.decode(rows)?;
        match rows.first() {
            Some(row) if row.done => {
                let lease = self.lease(req.resource, row)?;
                if let Some(token) = lease.fencing_token {
                    self.undo_late_grants(res, id, token).await;
                }
                Ok(Acquire::Acquired(lease))
            }
            // Not granted: busy (or a row that is not a lease), as a fresh read tells.
            _ => self.busy_now(req.resource).await,
        }
    }

    async fn renew(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let (res, lid, ms) = (resource.as_str(), id.as_str(), ttl_ms(ttl));
        let ms_f = ms as f64;
        let params: &Params<'_> = &[
            (&res, Type::TEXT),
            (&lid, Type::TEXT),
            (&ms, Type::INT8),
            (&ms_f, Type::FLOAT8),
        ];
        let rows = self.stored(&self.sql.renew, params).await?;
        match rows.first() {
            Some(row) => {
                let lease = self.lease(resource, row)?;
                Ok(if row.done {
                    Renewal::Renewed(lease)
                } else {
                    Renewal::Lost
                })
            }
            None => Ok(Renewal::Lost),
        }
    }

    async fn release(&self, resource: &Resource, id: &LeaseId) -> Result<bool, Error> {
        let (res, lid, ch) = (resource.as_str(), id.as_str(), self.channel.as_str());
        let params: &Params<'_> = &[(&res, Type::TEXT), (&lid, Type::TEXT), (&ch, Type::TEXT)];
        let behind = self.behind.take(res, lid);
        let released = if behind.is_empty() {
            !self.rows(&self.sql.release, params).await?.is_empty()
        } else {
            // Also behind each unanswered acquire of this lease, on its connection: should
            // the server get that acquire late, the lease it grants is released right after.
            let fresh = self.rows(&self.sql.release, params);
            let behind = self.release_behind(behind, res, lid, None);
            let (fresh, behind) = futures_util::future::join(fresh, behind).await;
            behind || !fresh?.is_empty()
        };
        if released {
            return Ok(true);
        }
        // Not released: say whether that is because the row is not a lockrun lease.
        let rows = self
            .stored(&self.sql.current, &[(&res, Type::TEXT)])
            .await?;
        match rows.first() {
            Some(row) => self.lease(resource, row).map(|_| false),
            None => Ok(false),
        }
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        let res = resource.as_str();
        let rows = self
            .stored(&self.sql.current, &[(&res, Type::TEXT)])
            .await?;
        match rows.first() {
            Some(row) => {
                let lease = self.lease(resource, row)?;
                Ok(row.live.then_some(lease))
            }
            None => Ok(None),
        }
    }

    async fn init(&self) -> Result<Option<String>, Error> {
        self.set_up().await.map(Some)
    }

    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        let rows = self.rows(&self.sql.live, &[]).await?;
        Ok(Some(
            rows.iter()
                .filter_map(|r| r.try_get::<_, String>(0).ok())
                .filter_map(|name| Resource::new(name).ok())
                .collect(),
        ))
    }

    async fn watch(&self, resource: &Resource) -> Result<Option<Box<dyn Watch>>, Error> {
        if !self.opts.listen {
            return Ok(None);
        }
        Ok(Some(watch::line(self, resource)))
    }
}

impl Postgres {
    /// Takes the connection of an acquire of lease `id` on `resource` that went unanswered
    /// out of use, and keeps it open (see the `behind` module); unless the slot holds another
    /// connection by now, which the statement's connection then was not kept in.
    async fn set_aside(&self, client: &Arc<Client>, resource: &str, id: &str) {
        let mut slot = self.conn.lock().await;
        if slot
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.client, client))
        {
            if let Some(live) = slot.take() {
                self.behind.note(resource, id, live);
            }
        }
    }

    /// Lease `id` was granted with fencing token `token` after an acquire of the same id went
    /// unanswered: behind that acquire, a release that keeps the lease holding `token`.
    async fn undo_late_grants(&self, resource: &str, id: &str, token: u64) {
        let behind = self.behind.take(resource, id);
        if !behind.is_empty() {
            self.release_behind(behind, resource, id, Some(token)).await;
        }
    }

    /// Sends the release of lease `id` (keeping a lease that holds token `keep`) on each of
    /// `conns`, and waits [`BEHIND_WAIT`] for the answers: whether one released the lease. The
    /// connections are closed then: by that time each has written what it carries, which the
    /// kernel still delivers, in order, after the close.
    async fn release_behind(
        &self,
        conns: Vec<Live>,
        resource: &str,
        id: &str,
        keep: Option<u64>,
    ) -> bool {
        let keep = keep.and_then(|t| i64::try_from(t).ok());
        let channel = self.channel.as_str();
        let sends = conns.iter().map(|live| {
            let client = Arc::clone(&live.client);
            async move {
                let sent = match keep {
                    Some(token) => {
                        let params: &Params<'_> = &[
                            (&resource, Type::TEXT),
                            (&id, Type::TEXT),
                            (&channel, Type::TEXT),
                            (&token, Type::INT8),
                        ];
                        let send = client.query_typed(&self.sql.release_unless, params);
                        tokio::time::timeout(BEHIND_WAIT, send).await
                    }
                    None => {
                        let params: &Params<'_> = &[
                            (&resource, Type::TEXT),
                            (&id, Type::TEXT),
                            (&channel, Type::TEXT),
                        ];
                        let send = client.query_typed(&self.sql.release, params);
                        tokio::time::timeout(BEHIND_WAIT, send).await
                    }
                };
                matches!(sent, Ok(Ok(rows)) if !rows.is_empty())
            }
        });
        futures_util::future::join_all(sends).await.contains(&true)
    }

    /// A fresh look at a resource the acquire statement did not grant. Free now means it was
    /// freed (or expired) after the statement's snapshot, by a writer the INSERT waited for.
    async fn busy_now(&self, resource: &Resource) -> Result<Acquire, Error> {
        let res = resource.as_str();
        let rows = self
            .stored(&self.sql.current, &[(&res, Type::TEXT)])
            .await?;
        match rows.first() {
            Some(row) if row.live => Ok(Acquire::Busy {
                holder: Some(self.lease(resource, row)?),
                expires_in: row.expires_in(),
            }),
            Some(row) => {
                self.lease(resource, row)?;
                Ok(Self::free_again())
            }
            None => Ok(Self::free_again()),
        }
    }

    /// Busy a moment ago, free now: the caller should try again at once.
    fn free_again() -> Acquire {
        Acquire::Busy {
            holder: None,
            expires_in: Some(Duration::ZERO),
        }
    }
}
