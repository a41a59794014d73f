//! Waiting for a release: the backend's connection LISTENs on the table's channel, and its
//! driver hands each notification to the watches of the resource it names.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, OnceCell};
use tokio_postgres::{AsyncMessage, Connection, Socket};

use super::errors::classify;
use super::{options, tls, Postgres};
use crate::backend::{Error, Watch};
use crate::lease::Resource;

type Sender = mpsc::UnboundedSender<Result<(), Error>>;

/// The watches on one connection: who waits for which resource, and whether the connection
/// LISTENs yet.
#[derive(Default)]
pub(super) struct Hub {
    watches: Mutex<Vec<(String, Sender)>>,
    listening: OnceCell<()>,
}

impl Hub {
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

/// Subscribes to `resource`'s notifications, LISTENing on the connection first if it does not
/// yet.
pub(super) async fn listen(pg: &Postgres, resource: &Resource) -> Result<Box<dyn Watch>, Error> {
    let (client, hub) = pg.live().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut watches) = hub.watches.lock() {
        watches.push((resource.as_str().to_owned(), tx));
    }
    let listen = format!("LISTEN {}", options::quote(&pg.channel));
    hub.listening
        .get_or_try_init(|| async {
            match tokio::time::timeout(pg.opts.statement_timeout, client.batch_execute(&listen))
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(pg.map(&e)),
                Err(_) => Err(Error::Unavailable(format!(
                    "PostgreSQL at {}: LISTEN took longer than {}",
                    pg.opts.endpoint,
                    crate::duration::format(pg.opts.statement_timeout)
                ))),
            }
        })
        .await?;
    Ok(Box::new(PgWatch { rx }))
}

/// The notifications of one resource.
struct PgWatch {
    rx: mpsc::UnboundedReceiver<Result<(), Error>>,
}

#[async_trait]
impl Watch for PgWatch {
    async fn changed(&mut self) -> Result<(), Error> {
        let first = self
            .rx
            .recv()
            .await
            .unwrap_or_else(|| Err(Error::Unavailable("the LISTEN connection ended".into())));
        // Several releases since the last call are one change.
        while let Ok(Ok(())) = self.rx.try_recv() {}
        first
    }
}
