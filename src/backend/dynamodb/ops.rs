//! The four lease operations as conditional writes and consistent reads.

use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::item::{self, gc_epoch, millis, n, new_version, now_ms, s, Item, Placeholders, TYPED};
use super::takeover::{judge, Verdict};
use super::{quoted, DynamoDb};
use crate::backend::{Acquire, AcquireRequest, Error, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

/// A grant: a new lease id, principal and expiry, a new version, and the token plus one. A new
/// item counts on from the wall clock in milliseconds (`:floor`), not from zero, so that an item
/// deleted (by hand, or by the TTL sweeper after 30 idle days) and created again hands out
/// tokens above every one its predecessor did, short of a grant a millisecond over its life.
const GRANT: &str = "SET #token = if_not_exists(#token, :floor) + :one, #lease_id = :id, \
     #principal = :principal, #version = :version, #acquired_ms = :now, \
     #expires_ms = :expires, #ttl_ms = :ttl, #released = :false, #ttl_epoch = :gc";
const RENEW: &str =
    "SET #expires_ms = :expires, #ttl_ms = :ttl, #version = :version, #ttl_epoch = :gc";
const RELEASE: &str = "SET #released = :true, #version = :version";

/// No item, or a released lockrun item.
fn free() -> String {
    format!("attribute_not_exists(#resource) OR (#released = :true AND {TYPED})")
}

/// The very record that was judged expired.
fn unchanged() -> String {
    format!("#version = :seen AND #released = :false AND {TYPED}")
}

/// A live lease held by `:id`, by the writer's clock.
fn held_by() -> String {
    format!("#lease_id = :id AND #released = :false AND #expires_ms > :now AND {TYPED}")
}

/// Lease `:id`'s item, not released, expired or not: nobody else can hold it under that id, so a
/// release may free an expired one too (waiters would otherwise watch it for a full lease
/// duration first, as for any item that stopped changing).
fn ours() -> String {
    format!("#lease_id = :id AND #released = :false AND {TYPED}")
}

/// The outcome of a conditional write.
enum Write {
    /// Written; the item as it is now.
    Done(Item),
    /// The condition failed; the item it was checked against (`None`: there is none).
    Refused(Option<Item>),
}

/// Attempts per acquire: a free write, then a takeover, then one more if the item moved on.
const ATTEMPTS: usize = 3;

impl DynamoDb {
    pub(super) async fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let res = req.resource;
        let op = format!("acquiring {}", quoted(res));
        let mut seen_version: Option<String> = None;
        let mut holder: Option<Lease> = None;
        for _ in 0..ATTEMPTS {
            // The expiry is computed for each attempt, never before waiting.
            let now = now_ms();
            let ttl = millis(req.ttl);
            let expires = now.saturating_add(ttl);
            let mut values = vec![
                (":floor", n(now)),
                (":one", n(1)),
                (":id", s(req.id.as_str())),
                (":principal", s(req.principal)),
                (":version", new_version()),
                (":now", n(now)),
                (":expires", n(expires)),
                (":ttl", n(ttl)),
                (":gc", gc_epoch(expires)),
            ];
            let condition = match &seen_version {
                None => free(),
                Some(v) => {
                    values.push((":seen", s(v.clone())));
                    unchanged()
                }
            };
            let found = match self.update(&op, res, GRANT, &condition, values).await? {
                Write::Done(granted) => {
                    self.seen.forget(res.as_str());
                    return Ok(Acquire::Acquired(self.parse(res, &granted)?.lease(res)));
                }
                Write::Refused(found) => found,
            };
            let Some(found) = found else {
                seen_version = None; // deleted meanwhile: try as free
                continue;
            };
            let stored = self.parse(res, &found)?;
            if stored.released {
                seen_version = None;
                continue;
            }
            let unchanged_for = self.seen.observe(res.as_str(), &stored.version);
            holder = Some(stored.lease(res));
            match judge(&stored, now_ms(), self.skew, unchanged_for) {
                Verdict::TakeOver => seen_version = Some(stored.version),
                Verdict::Wait(left) => {
                    return Ok(Acquire::Busy {
                        holder,
                        expires_in: Some(left),
                    })
                }
            }
        }
        // Others kept winning the race: busy, and the caller polls.
        Ok(Acquire::Busy {
            holder,
            expires_in: None,
        })
    }

    pub(super) async fn extend(
        &self,
        res: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let op = format!("renewing the lease on {}", quoted(res));
        let now = now_ms();
        let ttl = millis(ttl);
        let expires = now.saturating_add(ttl);
        let values = vec![
            (":id", s(id.as_str())),
            (":now", n(now)),
            (":expires", n(expires)),
            (":ttl", n(ttl)),
            (":version", new_version()),
            (":gc", gc_epoch(expires)),
        ];
        match self.update(&op, res, RENEW, &held_by(), values).await? {
            Write::Done(renewed) => Ok(Renewal::Renewed(self.parse(res, &renewed)?.lease(res))),
            Write::Refused(found) => {
                if let Some(found) = found {
                    self.parse(res, &found)?;
                }
                Ok(Renewal::Lost)
            }
        }
    }

    pub(super) async fn end(&self, res: &Resource, id: &LeaseId) -> Result<bool, Error> {
        let op = format!("releasing the lease on {}", quoted(res));
        let values = vec![(":id", s(id.as_str())), (":version", new_version())];
        let now = now_ms();
        match self.update(&op, res, RELEASE, &ours(), values).await? {
            // Whether it still held the resource, by this host's clock.
            Write::Done(item) => {
                self.seen.forget(res.as_str());
                Ok(self.parse(res, &item)?.expires_ms > now)
            }
            Write::Refused(found) => {
                if let Some(found) = found {
                    self.parse(res, &found)?;
                }
                Ok(false)
            }
        }
    }

    /// The live lease: not released, not expired by this host's clock, and not unchanged for a
    /// full lease duration as far as this process has seen (rule (b)).
    pub(super) async fn live(&self, res: &Resource) -> Result<Option<Lease>, Error> {
        let op = format!("reading the lease on {}", quoted(res));
        let Some(found) = self.get(&op, res).await? else {
            return Ok(None);
        };
        let stored = self.parse(res, &found)?;
        if stored.released || stored.expires_ms <= now_ms() {
            return Ok(None);
        }
        let unchanged_for = self.seen.observe(res.as_str(), &stored.version);
        if unchanged_for >= Duration::from_millis(stored.ttl_ms) {
            return Ok(None);
        }
        Ok(Some(stored.lease(res)))
    }

    /// One conditional `UpdateItem` that returns the new item, or the old one when refused.
    async fn update(
        &self,
        op: &str,
        res: &Resource,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Write, Error> {
        // Every write sets a new random version: finding it already there means an earlier try
        // of this very request was applied (the SDK retries a request whose answer was lost).
        let mine = values
            .iter()
            .find(|(k, _)| *k == ":version")
            .and_then(|(_, v)| v.as_s().ok().cloned());
        let p = Placeholders::for_exprs(&[update, condition], values);
        let call = self
            .client
            .update_item()
            .table_name(&self.place.table)
            .key(item::RESOURCE, s(res.as_str()))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(p.names))
            .set_expression_attribute_values(Some(p.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send();
        match self.send(op, call).await? {
            Ok(out) => Ok(Write::Done(out.attributes.unwrap_or_default())),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    // A server that ignores `ReturnValuesOnConditionCheckFailure` (or no item):
                    // read what the write was checked against.
                    let found = match c.item() {
                        Some(it) => Some(it.clone()),
                        None => self.get(op, res).await?,
                    };
                    let applied = |it: &Item| {
                        it.get(item::VERSION).and_then(|v| v.as_s().ok()) == mine.as_ref()
                    };
                    match found {
                        Some(it) if mine.is_some() && applied(&it) => Ok(Write::Done(it)),
                        found => Ok(Write::Refused(found)),
                    }
                }
                _ => Err(self.fail(op, &e)),
            },
        }
    }

    /// A strongly consistent read of the item.
    async fn get(&self, op: &str, res: &Resource) -> Result<Option<Item>, Error> {
        let call = self
            .client
            .get_item()
            .table_name(&self.place.table)
            .key(item::RESOURCE, s(res.as_str()))
            .consistent_read(true)
            .send();
        match self.send(op, call).await? {
            Ok(out) => Ok(out.item),
            Err(e) => Err(self.fail(op, &e)),
        }
    }

    /// Every resource with an item in the table (a paginated scan of the key attribute only).
    pub(super) async fn scan_resources(&self) -> Result<Vec<Resource>, Error> {
        let op = "listing";
        let mut out = Vec::new();
        let mut start: Option<
            std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
        > = None;
        loop {
            let call = self
                .client
                .scan()
                .table_name(&self.place.table)
                .projection_expression("#r")
                .expression_attribute_names("#r", item::RESOURCE)
                .set_exclusive_start_key(start.take())
                .send();
            let page = match self.send(op, call).await? {
                Ok(page) => page,
                Err(e) => return Err(self.fail(op, &e)),
            };
            for it in page.items() {
                if let Some(Ok(name)) = it.get(item::RESOURCE).map(|v| v.as_s()) {
                    if let Ok(r) = Resource::new(name.as_str()) {
                        out.push(r);
                    }
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
}
