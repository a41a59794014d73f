//! A stand-in for the Kubernetes API server: no real API server can run here, so the tests run
//! the Kubernetes backend against this in-process HTTP/1.1 server on a free loopback port.
//!
//! What it implements, as kube-apiserver (over etcd) does:
//!
//! - `GET/POST /apis/coordination.k8s.io/v1/namespaces/{ns}/leases` (list, create) and
//!   `GET/PUT/DELETE .../leases/{name}`;
//! - resourceVersions from one global counter, replaced by every write; PUT needs the stored
//!   resourceVersion (stale → 409 Conflict, none → 422), and on a missing object creates it when
//!   none is given (Leases allow create-on-update) or answers 409 when one is; a no-op PUT
//!   keeps the resourceVersion; POST of an existing name → 409 AlreadyExists; a resourceVersion
//!   on POST → 500;
//! - namespaces: writes into an unknown one → 404 `namespaces "x" not found`; reads there find
//!   nothing (404 for the object, an empty list), as the real server does;
//! - decoding and validation: wrong types → 400, name/URL or namespace mismatch → 400, invalid
//!   object names, annotation or label keys, `leaseDurationSeconds <= 0`, negative
//!   `leaseTransitions` → 422 Invalid; MicroTimes normalised to microseconds; unknown spec
//!   fields dropped; every error body a `Status` object with reason and details;
//! - a bearer token check on every request (401 Unauthorized), and `GET /version`;
//! - HTTP/1.1 keep-alive (kube's hyper pool) and `Connection: close`, bodies by
//!   `Content-Length` or chunked;
//! - for the fault tests, what signals do to an API server process: [`StandIn::pause`] (requests
//!   accepted but not answered until [`StandIn::resume`], as under SIGSTOP) and
//!   [`StandIn::restart`] (a crash and restart over a store that survives, as kube-apiserver
//!   over etcd), see `http.rs`.
//!
//! What it does not: TLS, watch, PATCH (server-side apply), list selectors and pagination,
//! managedFields, generateName, finalizers and owner references, RBAC beyond one token,
//! admission plugins other than the namespace check, API discovery beyond `/version`. Every
//! request is logged; anything unknown is answered 404 and printed loudly, and the tests assert
//! that no such request was made.
#![allow(dead_code)]

mod admit;
mod api;
pub mod http;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

#[allow(unused_imports)]
pub use admit::subdomain;
pub use api::State;

/// The token every stand-in accepts unless told otherwise.
pub const TOKEN: &str = "stand-in-token-4b1d";
/// The namespace every stand-in has.
pub const NAMESPACE: &str = "locks";

/// A running stand-in; it serves until the test process exits.
pub struct StandIn {
    pub port: u16,
    state: Arc<Mutex<State>>,
    control: Arc<http::Control>,
}

impl StandIn {
    /// A stand-in with the namespaces `default` and [`NAMESPACE`], accepting [`TOKEN`].
    pub fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(State {
            token: TOKEN.to_owned(),
            namespaces: ["default", NAMESPACE].map(String::from).into(),
            ..State::default()
        }));
        let s = Arc::clone(&state);
        let control = http::serve(listener, Arc::new(move |req| api::handle(&s, req)));
        StandIn {
            port,
            state,
            control,
        }
    }

    /// Stops answering, as a SIGSTOPped API server does: connections and requests are still
    /// accepted (by the kernel, for a stopped process), nothing is answered until
    /// [`StandIn::resume`], and no error is answered because of the pause.
    pub fn pause(&self) {
        self.control.pause();
    }

    /// Answers again, the held-back answers first.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// A crash and restart of the API server over a store that survives it (kube-apiserver over
    /// etcd): every connection is cut, the port refuses connections for `down`, then the same
    /// store is served on the same port again. Returns how long the port was closed.
    pub fn restart(&self, down: std::time::Duration) -> std::time::Duration {
        self.control.restart(down)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The stored Lease `name` in `ns`.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .leases
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored Lease in `ns`.
    pub fn leases(&self, ns: &str) -> Vec<Value> {
        self.state()
            .leases
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The stored Lease whose `lockrun.dev/resource` annotation is `resource`.
    pub fn lease_of(&self, ns: &str, resource: &str) -> Option<Value> {
        self.leases(ns)
            .into_iter()
            .find(|l| l["metadata"]["annotations"]["lockrun.dev/resource"] == resource)
    }

    /// Every request so far, as "METHOD target".
    pub fn requests(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// Requests the stand-in did not implement (they were answered 404).
    pub fn unknown_requests(&self) -> Vec<String> {
        self.state().unknown.clone()
    }

    /// A request through the HTTP interface, as another client would send it.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http::request(self.port, TOKEN, method, path, body)
    }

    /// Replaces Lease `name` in `ns` through the API (PUT with its current resourceVersion),
    /// after `change` edits it; panics unless the server accepts it.
    pub fn overwrite(&self, ns: &str, name: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut obj = self.lease(ns, name).expect("the Lease exists");
        change(&mut obj);
        let path = path(ns, name);
        let (code, stored) = self.request("PUT", &path, Some(&obj));
        assert_eq!(code, 200, "PUT {path}: {stored}");
        stored
    }

    /// A kubeconfig for this stand-in: context `stand-in` (current; [`TOKEN`], namespace `ns`),
    /// and context `wrong-token` (the same server, a token it rejects).
    pub fn kubeconfig_text(&self, ns: &str) -> String {
        kubeconfig(
            &[
                ("stand-in", &self.url(), TOKEN, ns),
                ("wrong-token", &self.url(), "not-the-token", ns),
            ],
            "stand-in",
        )
    }

    /// Writes [`StandIn::kubeconfig_text`] to `dir/kubeconfig`.
    pub fn write_kubeconfig(&self, dir: &Path, ns: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_text(ns)).expect("write the kubeconfig");
        path
    }

    /// A kube client configuration from [`StandIn::kubeconfig_text`], for in-process backends.
    pub async fn config(&self, ns: &str) -> kube::Config {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_text(ns))
            .expect("kubeconfig YAML");
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig")
    }

    /// Fails the test if kube made a request the stand-in does not implement.
    #[track_caller]
    pub fn assert_no_unknown_requests(&self) {
        let unknown = self.unknown_requests();
        assert!(unknown.is_empty(), "unimplemented requests: {unknown:?}");
    }
}

/// A kubeconfig with `(name, server, token, namespace)` contexts, each with its own cluster
/// and user entry.
pub fn kubeconfig(contexts: &[(&str, &str, &str, &str)], current: &str) -> String {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut ctxs = String::new();
    for (name, server, token, ns) in contexts {
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n"
        ));
        users.push_str(&format!("- name: {name}\n  user:\n    token: {token}\n"));
        ctxs.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: {ns}\n"
        ));
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}users:\n{users}contexts:\n{ctxs}\
         current-context: {current}\n"
    )
}

/// The path of Lease `name` in `ns`.
pub fn path(ns: &str, name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}")
}
