//! The Kubernetes backend: `kubernetes://NAMESPACE` (or `k8s://NAMESPACE`), leases as
//! `coordination.k8s.io/v1` Lease objects.
//!
//! The client configuration is kube's usual inference: the kubeconfig named by `KUBECONFIG`
//! (else `~/.kube/config`) with its current context, else the pod's service account. An empty
//! namespace (`kubernetes://`) means the context's namespace, or the pod's. URL parameters and
//! `[backend.NAME]` settings: `context` (a kubeconfig context other than the current one),
//! `name_prefix` (default `lockrun-`), `skew_allowance` (default: none, rule (a) off) and `command_timeout`
//! (default 5s: no request takes longer, so a hung API server never stalls a heartbeat).
//! Credentials stay in the kubeconfig and never appear in messages or logs.
//!
//! The backend needs `get`, `create` and `update` on `leases.coordination.k8s.io` in the
//! namespace. It never deletes a Lease: release keeps the object, so the fencing token keeps
//! increasing.
//!
//! # Objects
//!
//! One Lease per resource, named `lockrun-<resource>` when that is a valid object name, else
//! `lockrun-<readable stem>--<128-bit hash>` (see [`object_name`]); the resource itself is kept
//! in the annotation `lockrun.dev/resource` and checked on every read. The fields are client-go
//! leader election's, so `kubectl get lease` shows the principal as HOLDER:
//! `holderIdentity` (principal), `leaseDurationSeconds` (TTL rounded up to whole seconds),
//! `acquireTime`, `renewTime` and `leaseTransitions` (the fencing token, incremented by every
//! grant). The lease id is the annotation `lockrun.dev/lease-id`, bound to the grant by
//! `lockrun.dev/fencing-token`. Release writes what client-go's `ReleaseOnCancel` writes: an empty
//! `holderIdentity`.
//!
//! # Writes
//!
//! Every write is optimistic: a create for a new object, otherwise a replace carrying the
//! `resourceVersion` the decision was made on; a 409 (someone else wrote) means read again and
//! decide again. Renew and release proceed only while the annotated lease id holds the Lease and
//! `renewTime + leaseDurationSeconds` has not passed on this host's clock, so renewal never
//! resurrects an expired lease.
//!
//! # Clocks
//!
//! The Lease API has no server time. A held Lease may be taken over when
//!
//! - (b) the taker has seen the same `resourceVersion` for a full `leaseDurationSeconds` on its own
//!   monotonic clock: client-go's rule, where only the rate of clocks matters. A backend opened
//!   from a URL keeps its first sightings on disk too (`src/backend/takeover.rs`); or
//! - (a), only when `skew_allowance` is set: its `renewTime + leaseDurationSeconds` plus the
//!   allowance has passed on the taker's wall clock (fast, but it trusts the hosts' clocks to
//!   agree within the allowance).
//!
//! A busy answer's `expires_in` is the earlier of the two. There is no watch: waiters poll.
//!
//! # Leases written by others
//!
//! A Lease without lockrun annotations, such as a client-go leader election record, is read by
//! the same rules: with a `holderIdentity` (and `renewTime` and `leaseDurationSeconds`) it is
//! held by that foreign holder (shown with the made-up lease id `foreign-<leaseTransitions>`,
//! which no lockrun lease has) until it expires by rule (a) or (b); with an empty
//! `holderIdentity` it is free. Likewise a client-go candidate respects a lockrun lease. A Lease
//! whose lockrun annotations are damaged or name another resource, or that has a holder but no
//! times, is [`Error::Corrupt`] and is never written.
//!
//! # Fencing
//!
//! Strict while the object exists: deleting the Lease by hand restarts `leaseTransitions`.
//!
//! # Errors
//!
//! See `errors.rs`: unreachable or failing API servers are [`Error::Unavailable`]; rejected
//! credentials (401), RBAC refusals (403), a missing namespace (404 on create), objects refused
//! as invalid (422), and a missing configuration are [`Error::Config`]. Reads do not check the
//! namespace, as the API server does not: `current` in a missing namespace finds nothing.
//!
//! # Testing
//!
//! The backend is tested against an in-process stand-in for the Kubernetes API
//! (`tests/common/k8s.rs`: Lease create/get/replace/delete with real resourceVersion conflict
//! semantics, namespaces, bearer tokens), not against a live cluster.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease as Object;
use kube::Api;

use super::Settings;
use super::{Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Error, Fencing, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

mod errors;
mod name;
mod ops;
mod options;

/// The keys a `[backend.NAME]` section of this backend may have.
pub(super) const SETTINGS: &[&str] = options::KEYS;
mod record;

pub use name::{object_name, DEFAULT_PREFIX};
pub use record::{FENCING_TOKEN, LEASE_ID, RESOURCE};

use super::takeover::Observations;
use errors::Place;

/// Leases as Lease objects in one Kubernetes namespace.
pub struct Kubernetes {
    api: Api<Object>,
    place: Place,
    prefix: String,
    skew: Option<Duration>,
    timeout: Duration,
    seen: Observations,
}

impl fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubernetes")
            .field("server", &self.place.server)
            .field("namespace", &self.place.namespace)
            .field("name_prefix", &self.prefix)
            .field("skew_allowance", &self.skew)
            .field("command_timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// Opens the backend for a `kubernetes://NAMESPACE?...` URL with settings from a config
    /// section. The configuration is loaded; nothing is sent to the API server yet.
    pub async fn open(url: &BackendUrl, settings: &Settings) -> Result<Kubernetes, Error> {
        let opts = options::Options::parse(url, settings)?;
        let config = opts.config().await?;
        let mut k = Kubernetes::from_config(config, opts.namespace.as_deref())?
            .name_prefix(&opts.prefix)?
            .command_timeout(opts.timeout);
        k.skew = opts.skew;
        k.seen = Observations::kept(&format!(
            "kubernetes\0{}\0{}\0{}",
            k.place.server, k.place.namespace, k.prefix
        ));
        Ok(k)
    }

    /// A backend in `namespace` (default: the configuration's) through a client built from
    /// `config`. Must be called within a Tokio runtime.
    pub fn from_config(config: kube::Config, namespace: Option<&str>) -> Result<Kubernetes, Error> {
        let namespace = namespace.unwrap_or(&config.default_namespace).to_owned();
        options::check_namespace(&namespace).map_err(|why| {
            Error::Config(format!(
                "bad Kubernetes namespace{}: {why}",
                if namespace == config.default_namespace {
                    " (from the kubeconfig context, or the pod)"
                } else {
                    ""
                }
            ))
        })?;
        let server = errors::server(&config);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Other(
                "the Kubernetes client needs a Tokio runtime".into(),
            ));
        }
        // kube's TLS is rustls, and both of its crypto providers may be linked in.
        super::tls::ensure_provider();
        let client = kube::Client::try_from(config).map_err(|e| {
            Error::Config(format!(
                "cannot set up a Kubernetes client for {server}: {}",
                options::one_line(&e)
            ))
        })?;
        Ok(Kubernetes {
            api: Api::namespaced(client, &namespace),
            place: Place { server, namespace },
            prefix: DEFAULT_PREFIX.to_owned(),
            skew: None,
            timeout: options::DEFAULT_TIMEOUT,
            seen: Observations::default(),
        })
    }

    /// The prefix of Lease names (default `lockrun-`; may be empty).
    pub fn name_prefix(mut self, prefix: &str) -> Result<Self, Error> {
        name::check_prefix(prefix).map_err(Error::Config)?;
        prefix.clone_into(&mut self.prefix);
        Ok(self)
    }

    /// Turns on takeover rule (a): a lease is also taken over once its `renewTime +
    /// leaseDurationSeconds` plus `skew` has passed on this host's wall clock. Off by default,
    /// since it is only safe where every host's clock stays within `skew` of the API server's
    /// writers' (see the `takeover` module).
    pub fn skew_allowance(mut self, skew: Duration) -> Self {
        self.skew = Some(skew);
        self
    }

    /// The longest any one API call may take (default 5s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The namespace of the Lease objects.
    pub fn namespace(&self) -> &str {
        &self.place.namespace
    }

    /// The name of the Lease object of `resource`.
    pub fn object_name(&self, resource: &Resource) -> String {
        object_name(&self.prefix, resource)
    }
}

fn quoted(resource: &Resource) -> String {
    format!("'{}'", crate::lease::escape(resource.as_str()))
}

#[async_trait]
impl Backend for Kubernetes {
    /// Strict fencing (while the Lease exists), no server time (clock-free takeover instead), no
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

    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        self.list_resources().await.map(Some)
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        self.live(resource).await
    }
}
