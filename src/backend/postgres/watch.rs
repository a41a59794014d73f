//! Waiting for a release, one waiter at a time.
//!
//! The waiters of a resource stand in a line kept by the server: each one asks for a session
//! advisory lock whose key is derived from the table's channel and the resource, and
//! PostgreSQL grants it to them one at a time, in the order they asked. Only the first in line
//! `LISTEN`s (on the same connection, right after the lock is granted, in one round trip), so a
//! release wakes one waiter and one server process, not every waiter with a statement each.
//! A waiter asks for its place for at most [`ASK_FOR`] per statement and then asks again (at the
//! back), so that no waiter keeps a transaction, and with it a snapshot, open for long.
//! When the first in line stops waiting (it got the lease, gave up, or died), its lock goes, by
//! an unlock or with its connection, and the next in line moves up.
//!
//! A waiter lends its connection to the line while it stands there, since the connection
//! is blocked in `pg_advisory_lock` meanwhile; anything else the backend must do in that time
//! (the policy's expiry wake-up and safety poll) opens another. Once first, the waiter hands
//! the connection back, so its attempts use it, warm. The line only orders wake-ups: an attempt
//! from outside the line can still take a free resource first.
//!
//! The connection's driver hands each notification to the watches of the resource it names.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Connection, Socket};

use super::errors::{classify, sqlstate};
use super::options::{self, Options};
use super::sql::Stored;
use super::{tls, Live, Params, Postgres, Slot};
use crate::backend::{Change, Error, Watch};
use crate::lease::Resource;

type Sender = mpsc::UnboundedSender<Result<(), Error>>;

/// The watches on one connection: who waits for which resource.
#[derive(Default)]
pub(super) struct Hub {
    watches: Mutex<Vec<(String, Sender)>>,
}

impl Hub {
    fn add(&self, resource: &str) -> mpsc::UnboundedReceiver<Result<(), Error>> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut watches) = self.watches.lock() {
            watches.push((resource.to_owned(), tx));
        }
        rx
    }

    /// Whether a watch other than closed ones still waits on this connection.
    fn in_use(&self) -> bool {
        self.watches
            .lock()
            .map(|mut w| {
                w.retain(|(_, tx)| !tx.is_closed());
                !w.is_empty()
            })
            .unwrap_or(true)
    }

    fn notify(&self, resource: &str) {
        if let Ok(mut watches) = self.watches.lock() {
            watches.retain(|(r, tx)| {
                if r == resource {
                    tx.send(Ok(())).is_ok()
                } else {
                    !tx.is_closed()
                }
            });
        }
    }

    /// The connection ended: every watch learns it (and its waiter falls back to polling).
    fn fail(&self, e: &Error) {
        if let Ok(mut watches) = self.watches.lock() {
            for (_, tx) in watches.drain(..) {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// Drives the connection (as awaiting it would), handing notifications to the hub's watches.
pub(super) async fn drive(
    mut connection: Connection<Socket, tls::Stream>,
    hub: Arc<Hub>,
    endpoint: String,
) {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => hub.notify(n.payload()),
            Some(Ok(_)) => {} // notices
            Some(Err(e)) => {
                tracing::debug!("PostgreSQL connection to {endpoint} ended: {e}");
                hub.fail(&classify(&e, &endpoint));
                return;
            }
            None => {
                hub.fail(&Error::Unavailable(format!(
                    "PostgreSQL at {endpoint}: the connection closed"
                )));
                return;
            }
        }
    }
}

/// The key of a resource's line: FNV-1a (64 bits) of the channel and the resource, so that
/// every lockrun version computes the same key, and lines of different tables differ.
fn line_key(channel: &str, resource: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes().chain([0]).chain(resource.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// A watch on `resource` that joins the line when its waiter first waits.
pub(super) fn line(pg: &Postgres, resource: &Resource) -> Box<dyn Watch> {
    let key = line_key(&pg.channel, resource.as_str());
    let channel = options::quote(&pg.channel);
    Box::new(LineWatch {
        line: Arc::new(Line {
            resource: resource.as_str().to_owned(),
            join: format!(
                "SELECT set_config('lock_timeout', '{}s', true); \
                 SELECT pg_advisory_lock({key}); LISTEN {channel}",
                ASK_FOR.as_secs()
            ),
            listen: format!("LISTEN {channel}"),
            unlock: format!("SELECT pg_advisory_unlock({key})"),
            unlisten: format!("UNLISTEN {channel}"),
            current: pg.sql.current.clone(),
            opts: Arc::clone(&pg.opts),
            slot: Arc::clone(&pg.conn),
        }),
        state: State::Outside,
    })
}

/// How long a waiter waits for its place in one statement before it asks again. The statement
/// holds a snapshot while it waits, and a snapshot held for long keeps VACUUM from cleaning up
/// after every other transaction in the database; asking again bounds that, at the price of the
/// place (the waiter goes to the back).
const ASK_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// What a place in the line needs: the statements, and where to borrow a connection from.
struct Line {
    resource: String,
    /// Waits for the line's lock (at most [`ASK_FOR`]), then LISTENs: one round trip.
    join: String,
    /// LISTEN alone, when the line's lock is not available (a role that may not use it).
    listen: String,
    unlock: String,
    unlisten: String,
    /// The resource's row, read once first in line.
    current: String,
    opts: Arc<Options>,
    slot: Slot,
}

struct LineWatch {
    line: Arc<Line>,
    state: State,
}

enum State {
    /// Not in line yet.
    Outside,
    /// Waiting in line, on a borrowed connection, in a task of its own (so that the place is
    /// kept while the waiter does other things).
    InLine {
        task: JoinHandle<()>,
        first: oneshot::Receiver<Result<First, Error>>,
    },
    /// First in line, LISTENing.
    First(First),
    /// The line failed; the waiter polls.
    Failed,
}

/// The first in line: its notifications and the connection that holds its place.
struct First {
    rx: mpsc::UnboundedReceiver<Result<(), Error>>,
    held: Held,
    /// Whether the resource may be free now (its row, read once LISTEN was in force, was not a
    /// live lease): then the waiter should try at once rather than wait for a notification.
    may_be_free: bool,
}

enum Held {
    /// The connection went back to the backend's slot: the place is given up with an unlock.
    Returned(Arc<Client>, Arc<Hub>),
    /// The backend had opened another connection meanwhile: this one is the watch's own, and
    /// closing it gives up the place.
    Own(Live),
    /// No place was held (the line's lock could not be taken): only LISTEN is undone.
    Listening(Arc<Client>, Arc<Hub>),
}

impl Line {
    /// Borrows the backend's connection (or opens one) and waits in line on it. A connection
    /// another task is using right now (a statement in flight, in a library that shares the
    /// backend between locks) is not borrowed: that task's next statements would queue behind
    /// the wait.
    async fn stand(self: Arc<Self>) -> Result<First, Error> {
        let borrowed = {
            let mut slot = self.slot.lock().await;
            match slot.as_ref() {
                Some(live) if live.is_open() && Arc::strong_count(&live.client) == 1 => slot.take(),
                _ => None,
            }
        };
        let live = match borrowed {
            Some(live) => live,
            None => Live::open(&self.opts).await?,
        };
        let rx = live.hub.add(&self.resource);
        let placed = loop {
            match live.client.batch_execute(&self.join).await {
                Ok(()) => break true,
                // lock_timeout (ours, ASK_FOR) or the server's statement_timeout: ask again.
                Err(e) if matches!(sqlstate(&e), Some("55P03" | "57014")) => continue,
                Err(e) if e.as_db_error().is_some() => {
                    // Refused by the server (say, a role that may not take advisory locks): wait
                    // without the line, as every waiter did before it.
                    tracing::debug!("no line of waiters ({e}); listening only");
                    live.client
                        .batch_execute(&self.listen)
                        .await
                        .map_err(|e| classify(&e, &self.opts.endpoint))?;
                    break false;
                }
                Err(e) => return Err(classify(&e, &self.opts.endpoint)),
            }
        };
        let may_be_free = self.may_be_free(&live.client).await;
        let mut slot = self.slot.lock().await;
        let held = if slot.as_ref().is_some_and(Live::is_open) {
            Held::Own(live)
        } else {
            let (client, hub) = (Arc::clone(&live.client), Arc::clone(&live.hub));
            *slot = Some(live);
            if placed {
                Held::Returned(client, hub)
            } else {
                Held::Listening(client, hub)
            }
        };
        Ok(First {
            rx,
            held,
            may_be_free,
        })
    }

    /// Reads the resource's row now that LISTEN is in force (the join committed it): a release
    /// after this read sends a notification this waiter gets, so a live lease here means the
    /// waiter can wait, without an acquire attempt (which costs several times this read).
    async fn may_be_free(&self, client: &Client) -> bool {
        let res = self.resource.as_str();
        let params: &Params<'_> = &[(&res, Type::TEXT)];
        let read = client.query_typed(&self.current, params);
        match tokio::time::timeout(self.opts.statement_timeout, read).await {
            Ok(Ok(rows)) => !rows
                .first()
                .and_then(|r| Stored::decode(r).ok())
                .is_some_and(|s| s.live),
            _ => true, // the attempt will tell
        }
    }

    /// Gives up the first place.
    fn give_up(self: &Arc<Self>, first: First) {
        drop(first.rx); // so that the hub no longer counts this watch
        match first.held {
            Held::Returned(client, hub) => self.leave(client, hub, true),
            Held::Listening(client, hub) => self.leave(client, hub, false),
            Held::Own(live) => drop(live),
        }
    }

    /// Gives up the place (and the LISTEN, when no other watch needs it) on a connection that
    /// stays open, in the background: nobody needs to wait for it.
    fn leave(self: &Arc<Self>, client: Arc<Client>, hub: Arc<Hub>, placed: bool) {
        let line = Arc::clone(self);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the process is ending, and its connections with it
        };
        rt.spawn(async move {
            let mut sql = String::new();
            if placed {
                sql.push_str(&line.unlock);
            }
            if !hub.in_use() {
                if !sql.is_empty() {
                    sql.push_str("; ");
                }
                sql.push_str(&line.unlisten);
            }
            if sql.is_empty() {
                return;
            }
            let limit = line.opts.statement_timeout;
            if let Ok(Err(e)) = tokio::time::timeout(limit, client.batch_execute(&sql)).await {
                tracing::debug!("leaving the line of waiters: {e}");
            }
        });
    }
}

#[async_trait]
impl Watch for LineWatch {
    async fn changed(&mut self) -> Result<Change, Error> {
        loop {
            match &mut self.state {
                State::Outside => {
                    let (tx, first) = oneshot::channel();
                    let line = Arc::clone(&self.line);
                    let task = tokio::spawn(async move {
                        let got = Arc::clone(&line).stand().await;
                        if let Err(Ok(first)) = tx.send(got) {
                            line.give_up(first); // the watch ended meanwhile
                        }
                    });
                    self.state = State::InLine { task, first };
                }
                State::InLine { first, .. } => {
                    let got = first.await.unwrap_or_else(|_| {
                        Err(Error::Unavailable("the line of waiters ended".into()))
                    });
                    match got {
                        Ok(f) => {
                            let try_now = f.may_be_free;
                            self.state = State::First(f);
                            if try_now {
                                return Ok(Change::MayBeFree);
                            }
                        }
                        Err(e) => {
                            self.state = State::Failed;
                            return Err(e);
                        }
                    }
                }
                State::First(f) => {
                    let first = f.rx.recv().await.unwrap_or_else(|| {
                        Err(Error::Unavailable("the LISTEN connection ended".into()))
                    });
                    // Several releases since the last call are one change.
                    while let Ok(Ok(())) = f.rx.try_recv() {}
                    return first.map(|()| Change::MayBeFree);
                }
                State::Failed => return std::future::pending().await,
            }
        }
    }

    fn wakes_once_armed(&self) -> bool {
        true
    }
}

impl Drop for LineWatch {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::InLine { task, mut first } => {
                // Still waiting for the lock: ending the task closes the borrowed connection,
                // and the server passes the place on once it finds the connection gone. A task
                // that finished already left its place here.
                task.abort();
                if let Ok(Ok(f)) = first.try_recv() {
                    self.line.give_up(f);
                }
            }
            State::First(f) => self.line.give_up(f),
            State::Outside | State::Failed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::line_key;

    #[test]
    fn line_keys_are_stable_and_distinct() {
        // Every lockrun build must agree on the key: it is FNV-1a, not Rust's hasher.
        assert_eq!(line_key("", ""), 0xaf63_bd4c_8601_b7df_u64 as i64);
        assert_ne!(
            line_key("lockrun_t", "a"),
            line_key("lockrun_u", "a"),
            "tables"
        );
        assert_ne!(line_key("lockrun_t", "a"), line_key("lockrun_t", "b"));
        assert_ne!(line_key("lockrun_ta", ""), line_key("lockrun_t", "a"));
    }
}
