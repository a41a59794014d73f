//! Waiting for a release: a dedicated connection that LISTENs on the table's channel.

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_postgres::{AsyncMessage, Client};

use super::errors::classify;
use super::{options, Postgres};
use crate::backend::{Error, Watch};
use crate::lease::Resource;

/// Opens a connection, LISTENs, and keeps the notifications whose payload is `resource`.
pub(super) async fn listen(pg: &Postgres, resource: &Resource) -> Result<Box<dyn Watch>, Error> {
    let (client, mut connection) = pg.connect().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let want = resource.as_str().to_owned();
    let endpoint = pg.opts.endpoint.clone();
    let task = tokio::spawn(async move {
        loop {
            let msg = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            let sent = match msg {
                Some(Ok(AsyncMessage::Notification(n))) if n.payload() == want => tx.send(Ok(())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    let _ = tx.send(Err(classify(&e, &endpoint)));
                    break;
                }
                None => {
                    let _ = tx.send(Err(Error::Unavailable(format!(
                        "PostgreSQL at {endpoint}: the LISTEN connection closed"
                    ))));
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    });
    let listen = format!("LISTEN {}", options::quote(&pg.channel));
    let watch = PgWatch {
        rx,
        client,
        task: task.abort_handle(),
    };
    match tokio::time::timeout(
        pg.opts.statement_timeout,
        watch.client.batch_execute(&listen),
    )
    .await
    {
        Ok(Ok(())) => Ok(Box::new(watch)),
        Ok(Err(e)) => Err(pg.map(&e)),
        Err(_) => Err(Error::Unavailable(format!(
            "PostgreSQL at {}: LISTEN took longer than {}",
            pg.opts.endpoint,
            crate::duration::format(pg.opts.statement_timeout)
        ))),
    }
}

/// A LISTEN connection filtered to one resource.
struct PgWatch {
    rx: mpsc::UnboundedReceiver<Result<(), Error>>,
    client: Client,
    task: AbortHandle,
}

impl Drop for PgWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
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
