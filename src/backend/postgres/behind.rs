//! Acquires left unanswered, kept with their connections, so that what they may still be granted
//! is released behind them.
//!
//! A statement whose answer did not come in time may still reach the server: a stalled
//! connection (a proxy, a partition, a paused server process) can deliver it seconds later.
//! An acquire delivered late grants its lease id to nobody, for the lease's whole TTL. A release
//! sent on another connection cannot be ordered after it; one sent on the same connection can,
//! since a server session runs its statements in the order they came. So the connection of an
//! unanswered acquire is kept open, and:
//!
//! - when the wait fails, the give-back (`release`) also goes out behind the acquire;
//! - when the wait gets the lease under the same id on a new connection, a release that keeps
//!   the lease holding the genuine grant's fencing token goes out behind it: it undoes only a
//!   grant made by the late acquire, after the genuine lease was released.
//!
//! A connection that carries such a release is closed once the release has been written (after
//! a short wait for its answer): the kernel still delivers what it holds, in order, before the
//! close.

use std::sync::Mutex;

use super::Live;

/// How many unanswered acquires are remembered.
const KEPT: usize = 8;

/// An acquire whose answer never came, and the connection it went out on.
struct Unanswered {
    resource: String,
    id: String,
    live: Live,
}

#[derive(Default)]
pub(super) struct Behind {
    unanswered: Mutex<Vec<Unanswered>>,
}

impl Behind {
    /// Notes an acquire of lease `id` on `resource` that went unanswered on `live`.
    pub fn note(&self, resource: &str, id: &str, live: Live) {
        if let Ok(mut list) = self.unanswered.lock() {
            if list.len() >= KEPT {
                list.remove(0);
            }
            list.push(Unanswered {
                resource: resource.to_owned(),
                id: id.to_owned(),
                live,
            });
        }
    }

    /// The connections of unanswered acquires of lease `id` on `resource`, taken out of the list.
    pub fn take(&self, resource: &str, id: &str) -> Vec<Live> {
        let Ok(mut list) = self.unanswered.lock() else {
            return Vec::new();
        };
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|u| u.resource == resource && u.id == id);
        *list = others;
        mine.into_iter().map(|u| u.live).collect()
    }
}
