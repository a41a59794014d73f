//! Properties under stress and at the edges: racing contenders, awkward resource names, watches
//! and damaged records.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::ops::{acquire, current, release, req};
use super::{fail, Check, Outcome, Suite, LONG};
use crate::backend::{Acquire, Change, Error, Fencing};
use crate::lease::{LeaseId, Resource};

impl Suite {
    pub(super) async fn race_rounds(&self) -> Check {
        let res = self.resource("race")?;
        let mut backends = Vec::new();
        for _ in 0..self.contenders {
            backends.push(self.backend().await?);
        }
        let fencing = backends.first().map(|b| b.capabilities().fencing);
        let mut last_token = None;
        for round in 0..self.rounds {
            let start = Arc::new(tokio::sync::Barrier::new(backends.len()));
            let tasks: Vec<_> = backends
                .iter()
                .map(|b| {
                    let (b, res, start) = (Arc::clone(b), res.clone(), Arc::clone(&start));
                    tokio::spawn(async move {
                        let id = LeaseId::generate();
                        start.wait().await;
                        let out = b.try_acquire(&req(&res, &id, "racer", LONG)).await;
                        (b, id, out)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in join_all(tasks).await {
                let (b, id, out) = task.map_err(|e| format!("round {round}: task failed: {e}"))?;
                match out.map_err(|e| fail(&format!("round {round}: try_acquire"), e))? {
                    Acquire::Acquired(l) => winners.push((b, id, l)),
                    Acquire::Busy { .. } => {}
                }
            }
            ensure!(
                winners.len() == 1,
                "round {round}: {} winners",
                winners.len()
            );
            let (b, id, lease) = winners.remove(0);
            ensure!(
                lease.id == id,
                "round {round}: the winner's lease has another id"
            );
            if fencing != Some(Fencing::None) {
                ensure!(
                    lease.fencing_token > last_token,
                    "round {round}: token did not increase"
                );
                last_token = lease.fencing_token;
            }
            release(&*b, &res, &id, true).await?;
        }
        Ok(Outcome::Passed)
    }

    pub(super) async fn resource_names(&self) -> Check {
        let p = format!("{}/names", self.prefix);
        let pad = |fill: &str, tail: &str| {
            let mut s = format!("{p}/");
            while s.len() + fill.len() + tail.len() <= 255 {
                s.push_str(fill);
            }
            while s.len() + tail.len() < 255 {
                s.push('x');
            }
            s + tail
        };
        let names = vec![
            format!("{p}/a/b"),
            format!("{p}/a_b"),
            format!("{p}/a%2Fb"),
            format!("{p}/a%2fb"),
            format!("{p}/a b"),
            format!("{p}/a+b"),
            format!("{p}/a.b"),
            format!("{p}/A/B"),
            format!("{p}/.."),
            format!("../{p}"),
            format!("{p}/../../etc"),
            format!("{p}/ünï©ødé ✓ 锁"),
            format!("{p}/\"double\" 'single'"),
            format!("{p}/back\\slash;*?<>|"),
            format!("{p}/~tilde"),
            pad("x", ""),
            pad("x", "y"),
            pad("é", ""),
            pad("é", "z"),
            pad("/", ""),
            pad("/", "."),
        ];
        let mut leases = Vec::new();
        for name in &names {
            let res = Resource::new(name.clone()).map_err(|e| format!("{name:?}: {e}"))?;
            let b = self.backend().await?;
            let lease = acquire(&*b, &res, "conformance", LONG)
                .await
                .map_err(|e| format!("{name:?}: {e}"))?;
            ensure!(
                lease.resource == res,
                "{name:?}: lease names another resource"
            );
            leases.push((res, lease));
        }
        let b = self.backend().await?;
        for (res, lease) in &leases {
            let cur = current(&*b, res).await?;
            ensure!(
                cur.as_ref().map(|l| &l.id) == Some(&lease.id),
                "{res:?}: current shows another lease"
            );
            release(&*b, res, &lease.id, true).await?;
            ensure!(
                current(&*b, res).await?.is_none(),
                "{res:?}: held after release"
            );
        }
        Ok(Outcome::Passed)
    }

    pub(super) async fn watch_fires(&self) -> Check {
        let (a, w) = (self.backend().await?, self.backend().await?);
        let res = self.resource("watch")?;
        let la = acquire(&*a, &res, "conformance", LONG).await?;
        let Some(mut watch) = w.watch(&res).await.map_err(|e| fail("watch", e))? else {
            release(&*a, &res, &la.id, true).await?;
            let why = if w.capabilities().watch {
                "watch() returned None (e.g. OS limits)"
            } else {
                "the backend has no watch"
            };
            return Ok(Outcome::Skipped(why.into()));
        };
        if watch.wakes_once_armed() {
            // Such a watch may wake once when it comes into force (it need not, the resource
            // being held); only a wake-up after the release counts.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await
            {
                return Err(fail("watch.changed (arming)", e));
            }
        }
        release(&*self.backend().await?, &res, &la.id, true).await?;
        match tokio::time::timeout(Duration::from_secs(10), watch.changed()).await {
            Ok(Ok(Change::MayBeFree)) => Ok(Outcome::Passed),
            Ok(Ok(held)) => Err(format!("after a release the watch said {held:?}")),
            Ok(Err(e)) => Err(fail("watch.changed", e)),
            Err(_) => Err("the watch did not fire within 10 s of a release".into()),
        }
    }

    pub(super) async fn corrupt_record(&self) -> Check {
        let Some(corrupt) = self.corrupt.clone() else {
            return Ok(Outcome::Skipped("no corruption hook supplied".into()));
        };
        let res = self.resource("corrupt")?;
        let la = acquire(&*self.backend().await?, &res, "conformance", LONG).await?;
        corrupt(res.clone())
            .await
            .map_err(|e| format!("corrupting the record: {e}"))?;
        let b = self.backend().await?;
        let corrupt_err = |op: &str, r: Result<String, Error>| match r {
            Err(Error::Corrupt(m)) if !m.is_empty() => Ok(()),
            other => Err(format!(
                "{op} on a corrupt record gave {other:?}, not Error::Corrupt"
            )),
        };
        for _ in 0..2 {
            let id = LeaseId::generate();
            corrupt_err(
                "try_acquire",
                b.try_acquire(&req(&res, &id, "x", LONG))
                    .await
                    .map(|a| format!("{a:?}")),
            )?;
            corrupt_err("current", b.current(&res).await.map(|c| format!("{c:?}")))?;
            corrupt_err(
                "renew",
                b.renew(&res, &la.id, LONG).await.map(|r| format!("{r:?}")),
            )?;
            match b.release(&res, &la.id).await {
                Ok(false) | Err(Error::Corrupt(_)) => {}
                other => return Err(format!("release on a corrupt record gave {other:?}")),
            }
        }
        Ok(Outcome::Passed)
    }
}
