//! The Lease object: reading it back as a lease, and the objects each write sends.
//!
//! | Lease field | lockrun meaning |
//! |---|---|
//! | `spec.holderIdentity` | the principal; empty when free (as client-go's `ReleaseOnCancel`) |
//! | `spec.leaseDurationSeconds` | the TTL of the last grant or renewal, rounded up to seconds |
//! | `spec.acquireTime` | when this holder was granted the lease (holder's wall clock) |
//! | `spec.renewTime` | when the holder last wrote (holder's wall clock, before sending) |
//! | `spec.leaseTransitions` | the fencing token: incremented by every grant |
//! | `metadata.resourceVersion` | the record version for optimistic writes and rule (b) |
//! | annotation `lockrun.dev/resource` | the resource name, checked on every read |
//! | annotation `lockrun.dev/lease-id` | the holder's lease id (removed by release) |
//! | annotation `lockrun.dev/fencing-token` | `leaseTransitions` of the grant the lease id belongs to |
//! | label `app.kubernetes.io/managed-by` | `lockrun` |
//!
//! The lease id counts only while `lockrun.dev/fencing-token` equals `leaseTransitions`: a
//! client-go candidate that takes over an expired lockrun Lease keeps the annotations but bumps
//! `leaseTransitions`, and from then on the Lease is that foreign holder's, not the old lease
//! id's.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease as Object, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::{DateTime, SubsecRound, Utc};

use crate::lease::{Lease, LeaseId, Resource};

/// Annotation: the resource name.
pub const RESOURCE: &str = "lockrun.dev/resource";
/// Annotation: the lease id of the lockrun holder.
pub const LEASE_ID: &str = "lockrun.dev/lease-id";
/// Annotation: the `leaseTransitions` value the lease id was granted with.
pub const FENCING_TOKEN: &str = "lockrun.dev/fencing-token";
const OURS: &str = "lockrun.dev/";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Who holds a Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holder {
    /// Nobody: no `holderIdentity`, or an empty one.
    Free,
    /// A lockrun lease.
    Ours(LeaseId),
    /// Someone without a lockrun lease id, such as a client-go leader elector.
    Foreign,
}

/// A Lease object, read back and checked.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub holder: Holder,
    /// `holderIdentity`.
    pub principal: String,
    pub transitions: u64,
    /// What rule (b) watches for change: the object's uid with its resourceVersion, holder,
    /// transitions and renewTime. resourceVersions alone start again in a cluster created anew
    /// behind the same URL (or restored from a backup), and a sighting kept from before would
    /// then match a live lease.
    pub sighting: String,
    pub acquired: SystemTime,
    pub renewed: SystemTime,
    pub duration: Duration,
}

impl Stored {
    /// Checks a Lease; the error says why it cannot be trusted.
    pub fn parse(resource: &Resource, obj: &Object) -> Result<Stored, String> {
        let empty = BTreeMap::new();
        let notes = obj.metadata.annotations.as_ref().unwrap_or(&empty);
        let ours = notes.keys().any(|k| k.starts_with(OURS));
        match notes.get(RESOURCE) {
            Some(r) if r == resource.as_str() => {}
            Some(r) => {
                return Err(format!(
                    "annotation {RESOURCE} names resource '{}'",
                    crate::lease::escape(r)
                ))
            }
            None if ours => return Err(format!("annotation {RESOURCE} is missing")),
            None => {}
        }
        let version = obj.metadata.resource_version.clone().unwrap_or_default();
        if version.is_empty() {
            return Err("metadata.resourceVersion is empty".into());
        }
        let spec = obj.spec.clone().unwrap_or_default();
        let transitions = match spec.lease_transitions {
            None => 0,
            Some(t) => u64::try_from(t).map_err(|_| format!("leaseTransitions is {t}"))?,
        };
        let principal = spec.holder_identity.unwrap_or_default();
        let renewed = spec.renew_time.map(|t| SystemTime::from(t.0));
        let acquired = spec.acquire_time.map(|t| SystemTime::from(t.0));
        let seconds = spec.lease_duration_seconds.unwrap_or(0);
        let sighting = format!(
            "{}:{version}:{principal}:{transitions}:{:?}",
            obj.metadata.uid.as_deref().unwrap_or(""),
            renewed
        );
        let mut stored = Stored {
            holder: Holder::Free,
            principal,
            transitions,
            sighting,
            acquired: acquired.or(renewed).unwrap_or(UNIX_EPOCH),
            renewed: renewed.unwrap_or(UNIX_EPOCH),
            duration: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        };
        let id = match notes.get(LEASE_ID) {
            None => None,
            Some(id) => Some(
                LeaseId::parse(id)
                    .map_err(|_| format!("annotation {LEASE_ID} is not a lease id"))?,
            ),
        };
        let token = match notes.get(FENCING_TOKEN) {
            None => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| format!("annotation {FENCING_TOKEN} is not a number"))?,
            ),
        };
        if id.is_some() != token.is_some() {
            return Err(format!(
                "annotations {LEASE_ID} and {FENCING_TOKEN} must come together"
            ));
        }
        if stored.principal.is_empty() {
            return Ok(stored);
        }
        if renewed.is_none() || seconds <= 0 {
            return Err("it has a holderIdentity but no renewTime or leaseDurationSeconds".into());
        }
        stored.holder = match (id, token) {
            (Some(id), Some(token)) if token == transitions => Holder::Ours(id),
            _ => Holder::Foreign,
        };
        Ok(stored)
    }

    /// When the holder's lease runs out by the holder's clock: `renewTime + leaseDurationSeconds`.
    pub fn expires(&self) -> SystemTime {
        self.renewed
            .checked_add(self.duration)
            .unwrap_or(self.renewed)
    }

    /// The lease this object describes, if anyone holds it. A foreign holder gets a made-up
    /// lease id (`foreign-<leaseTransitions>`) that no lockrun lease ever has.
    pub fn lease(&self, resource: &Resource) -> Option<Lease> {
        let id = match &self.holder {
            Holder::Free => return None,
            Holder::Ours(id) => id.clone(),
            Holder::Foreign => LeaseId::parse(&format!("foreign-{}", self.transitions)).ok()?,
        };
        Some(Lease {
            resource: resource.clone(),
            id,
            principal: self.principal.clone(),
            fencing_token: Some(self.transitions),
            acquired_at: self.acquired,
            expires_at: self.expires(),
            ttl: self.duration,
        })
    }
}

/// This host's wall clock, to the microsecond a MicroTime keeps.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A TTL as `leaseDurationSeconds`: whole seconds, rounded up, at least 1.
pub(super) fn seconds(ttl: Duration) -> i32 {
    let s = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i32::try_from(s.max(1)).unwrap_or(i32::MAX)
}

/// What a grant writes: a new holder, lease id and times, the token plus one. `base` is the
/// object being taken over (its other fields are kept), or `None` to create one.
pub(super) struct Grant<'a> {
    pub name: &'a str,
    pub resource: &'a Resource,
    pub id: &'a LeaseId,
    pub principal: &'a str,
    pub ttl: Duration,
    pub now: DateTime<Utc>,
}

impl Grant<'_> {
    pub fn object(&self, base: Option<&Object>) -> Result<Object, String> {
        let mut obj = base.cloned().unwrap_or_else(|| Object {
            metadata: ObjectMeta {
                name: Some(self.name.to_owned()),
                labels: Some(BTreeMap::from([(MANAGED_BY.into(), "lockrun".into())])),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let before = obj.spec.as_ref().and_then(|s| s.lease_transitions);
        let token = before.unwrap_or(0).checked_add(1).ok_or(
            "leaseTransitions cannot be incremented any further; delete the Lease to start over",
        )?;
        let notes = obj.metadata.annotations.get_or_insert_with(BTreeMap::new);
        notes.insert(RESOURCE.into(), self.resource.as_str().into());
        notes.insert(LEASE_ID.into(), self.id.as_str().into());
        notes.insert(FENCING_TOKEN.into(), token.to_string());
        let spec = obj.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.principal.to_owned());
        spec.lease_duration_seconds = Some(seconds(self.ttl));
        spec.acquire_time = Some(MicroTime(self.now));
        spec.renew_time = Some(MicroTime(self.now));
        spec.lease_transitions = Some(token);
        Ok(obj)
    }
}

/// A renewal: the same holder, a new renewTime and duration.
pub(super) fn renewal(base: &Object, ttl: Duration, now: DateTime<Utc>) -> Object {
    let mut obj = base.clone();
    let spec = obj.spec.get_or_insert_with(LeaseSpec::default);
    spec.lease_duration_seconds = Some(seconds(ttl));
    spec.renew_time = Some(MicroTime(now));
    obj
}

/// A release, as client-go's `ReleaseOnCancel` writes it: an empty holderIdentity, renewTime
/// now, a one-second duration; `leaseTransitions` is kept, the lease id annotations go.
pub(super) fn release(base: &Object, now: DateTime<Utc>) -> Object {
    let mut obj = base.clone();
    if let Some(notes) = obj.metadata.annotations.as_mut() {
        notes.remove(LEASE_ID);
        notes.remove(FENCING_TOKEN);
    }
    let spec = obj.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(String::new());
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> Resource {
        Resource::new("Deploy/Prod").unwrap()
    }

    fn granted(id: &LeaseId) -> Object {
        let g = Grant {
            name: "lockrun-deploy-prod--x",
            resource: &res(),
            id,
            principal: "me@host",
            ttl: Duration::from_millis(1500),
            now: now(),
        };
        let mut obj = g.object(None).unwrap();
        obj.metadata.resource_version = Some("7".into());
        obj
    }

    #[test]
    fn a_lease_recreated_with_the_same_resource_version_is_a_new_sighting() {
        // A cluster created anew behind the same URL (or restored from a backup) hands out the
        // same resourceVersions again: rule (b) must not take the new lease for the old one.
        let id = LeaseId::generate();
        let mut a = granted(&id);
        a.metadata.uid = Some("uid-a".into());
        let mut b = a.clone();
        b.metadata.uid = Some("uid-b".into());
        let sa = Stored::parse(&res(), &a).unwrap().sighting;
        let sb = Stored::parse(&res(), &b).unwrap().sighting;
        assert_ne!(sa, sb);
        assert_eq!(sa, Stored::parse(&res(), &a.clone()).unwrap().sighting);
        // Same uid and resourceVersion, another holder: another sighting too.
        let mut c = a.clone();
        c.spec.as_mut().unwrap().holder_identity = Some("other@host".into());
        assert_ne!(sa, Stored::parse(&res(), &c).unwrap().sighting);
    }

    #[test]
    fn a_grant_reads_back_as_our_lease() {
        let id = LeaseId::generate();
        let obj = granted(&id);
        let spec = obj.spec.clone().unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(2));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.holder_identity.as_deref(), Some("me@host"));
        let st = Stored::parse(&res(), &obj).unwrap();
        assert_eq!(st.holder, Holder::Ours(id.clone()));
        let lease = st.lease(&res()).unwrap();
        assert_eq!((lease.id, lease.fencing_token), (id, Some(1)));
        assert_eq!(lease.ttl, Duration::from_secs(2));
        // A second grant on the same object: the token goes up.
        let g = Grant {
            name: "n",
            resource: &res(),
            id: &LeaseId::generate(),
            principal: "b",
            ttl: Duration::from_secs(1),
            now: now(),
        };
        let again = g.object(Some(&obj)).unwrap();
        assert_eq!(again.spec.unwrap().lease_transitions, Some(2));
    }

    #[test]
    fn release_frees_and_keeps_the_token() {
        let obj = release(&granted(&LeaseId::generate()), now());
        let st = Stored::parse(&res(), &obj).unwrap();
        assert_eq!(st.holder, Holder::Free);
        assert_eq!(st.transitions, 1);
        assert!(st.lease(&res()).is_none());
    }

    #[test]
    fn client_go_records() {
        let mut obj = Object::default();
        obj.metadata.resource_version = Some("3".into());
        obj.spec = Some(LeaseSpec {
            holder_identity: Some("controller-0_1234".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now())),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        });
        let st = Stored::parse(&res(), &obj).unwrap();
        assert_eq!(st.holder, Holder::Foreign);
        let lease = st.lease(&res()).unwrap();
        assert_eq!(lease.id.as_str(), "foreign-4");
        assert_eq!(lease.principal, "controller-0_1234");
        // A client-go takeover of a lockrun Lease keeps our annotations but not our lease.
        let mut taken = granted(&LeaseId::generate());
        let spec = taken.spec.as_mut().unwrap();
        spec.holder_identity = Some("controller-1".into());
        spec.lease_transitions = Some(2);
        assert_eq!(
            Stored::parse(&res(), &taken).unwrap().holder,
            Holder::Foreign
        );
        // Released by client-go: free.
        obj.spec.as_mut().unwrap().holder_identity = Some(String::new());
        assert_eq!(Stored::parse(&res(), &obj).unwrap().holder, Holder::Free);
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = granted(&LeaseId::generate());
        type Damage = Box<dyn Fn(&mut Object)>;
        let cases: Vec<(&str, Damage)> = vec![
            (RESOURCE, Box::new(|o| note(o, RESOURCE, Some("other")))),
            (RESOURCE, Box::new(|o| note(o, RESOURCE, None))),
            (
                LEASE_ID,
                Box::new(|o| note(o, LEASE_ID, Some("not an id!"))),
            ),
            (
                FENCING_TOKEN,
                Box::new(|o| note(o, FENCING_TOKEN, Some("-1"))),
            ),
            (FENCING_TOKEN, Box::new(|o| note(o, FENCING_TOKEN, None))),
            (
                "leaseTransitions",
                Box::new(|o| spec(o).lease_transitions = Some(-1)),
            ),
            ("renewTime", Box::new(|o| spec(o).renew_time = None)),
            (
                "renewTime",
                Box::new(|o| spec(o).lease_duration_seconds = Some(0)),
            ),
            (
                "resourceVersion",
                Box::new(|o| o.metadata.resource_version = None),
            ),
        ];
        for (what, damage) in cases {
            let mut obj = good.clone();
            damage(&mut obj);
            let why = Stored::parse(&res(), &obj).unwrap_err();
            assert!(why.contains(what), "{what}: {why}");
        }
    }

    fn note(o: &mut Object, key: &str, value: Option<&str>) {
        let notes = o.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match value {
            Some(v) => notes.insert(key.into(), v.into()),
            None => notes.remove(key),
        };
    }

    fn spec(o: &mut Object) -> &mut LeaseSpec {
        o.spec.get_or_insert_with(LeaseSpec::default)
    }

    #[test]
    fn durations_round_up() {
        assert_eq!(seconds(Duration::ZERO), 1);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(30)), 30);
        assert_eq!(seconds(Duration::from_millis(30_001)), 31);
        assert_eq!(seconds(Duration::MAX), i32::MAX);
    }
}
