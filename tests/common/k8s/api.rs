//! The API semantics: bearer tokens, namespaces, and Lease get/list/create/replace/delete with
//! resourceVersions from one global counter, as kube-apiserver over etcd behaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::admit::{admit, Admitted};
use super::http::Request;

/// A status code and a JSON body.
pub type Reply = (u16, Value);

const LEASES: &str = "leases.coordination.k8s.io";

/// Everything the stand-in stores and records.
#[derive(Default)]
pub struct State {
    pub token: String,
    pub namespaces: BTreeSet<String>,
    /// (namespace, name) → the stored object.
    pub leases: BTreeMap<(String, String), Value>,
    /// The last resourceVersion handed out (etcd's revision).
    pub revision: u64,
    /// "METHOD target" of every request.
    pub log: Vec<String>,
    /// Requests the stand-in does not implement.
    pub unknown: Vec<String>,
}

/// A `Status` object, as the API server sends with every error.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Reply {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    (code, s)
}

fn lease_details(name: &str) -> Value {
    json!({"name": name, "group": "coordination.k8s.io", "kind": "leases"})
}

fn not_found(name: &str) -> Reply {
    let msg = format!("{LEASES} {name:?} not found");
    status(404, "NotFound", &msg, Some(lease_details(name)))
}

fn conflict(name: &str) -> Reply {
    let msg = format!(
        "Operation cannot be fulfilled on {LEASES} {name:?}: the object has been modified; please \
         apply your changes to the latest version and try again"
    );
    status(409, "Conflict", &msg, Some(lease_details(name)))
}

/// Answers one request.
pub fn handle(state: &Mutex<State>, req: &Request) -> Reply {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let target = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    st.log.push(format!("{} {target}", req.method));
    if req.header("authorization") != Some(&format!("Bearer {}", st.token)) {
        return status(401, "Unauthorized", "Unauthorized", None);
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let watch = req.query.split('&').any(|p| p.starts_with("watch="));
    let reply = match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["version"]) => Some((
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-lockrun-stand-in",
                   "platform": "linux/amd64"}),
        )),
        ("GET", ["api", "v1", "namespaces", ns]) => Some(namespace(&st, ns)),
        (m, ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", rest @ ..])
            if !watch && rest.len() <= 1 =>
        {
            let ns = ns.to_string();
            match (m, rest.first()) {
                ("GET", None) => Some(list(&st, &ns)),
                ("POST", None) => Some(create(&mut st, &ns, &req.body)),
                ("GET", Some(name)) => Some(get(&st, &ns, name)),
                ("PUT", Some(name)) => Some(replace(&mut st, &ns, name, &req.body)),
                ("DELETE", Some(name)) => Some(delete(&mut st, &ns, name, &req.body)),
                _ => None,
            }
        }
        _ => None,
    };
    reply.unwrap_or_else(|| {
        eprintln!(
            "k8s stand-in: UNKNOWN REQUEST {} {target} (answered 404)",
            req.method
        );
        st.unknown.push(format!("{} {target}", req.method));
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        )
    })
}

fn namespace(st: &State, ns: &str) -> Reply {
    if st.namespaces.contains(ns) {
        let meta = json!({"name": ns, "resourceVersion": "1"});
        (
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta,
                      "status": {"phase": "Active"}}),
        )
    } else {
        namespace_not_found(ns)
    }
}

fn namespace_not_found(ns: &str) -> Reply {
    let msg = format!("namespaces {ns:?} not found");
    status(
        404,
        "NotFound",
        &msg,
        Some(json!({"name": ns, "kind": "namespaces"})),
    )
}

/// Reads never check the namespace (a missing one simply has no objects).
fn get(st: &State, ns: &str, name: &str) -> Reply {
    match st.leases.get(&(ns.to_owned(), name.to_owned())) {
        Some(obj) => (200, obj.clone()),
        None => not_found(name),
    }
}

fn list(st: &State, ns: &str) -> Reply {
    let items: Vec<&Value> = st
        .leases
        .iter()
        .filter(|((n, _), _)| n == ns)
        .map(|(_, v)| v)
        .collect();
    let meta = json!({"resourceVersion": st.revision.to_string()});
    (
        200,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                  "metadata": meta, "items": items}),
    )
}

fn create(st: &mut State, ns: &str, body: &[u8]) -> Reply {
    let lease = match admit(body, ns, None) {
        Ok(l) => l,
        Err(reply) => return reply,
    };
    store_new(st, ns, lease)
}

/// Stores a new object: the namespace must exist (admission), the name must be free, and the
/// client must not have set a resourceVersion.
fn store_new(st: &mut State, ns: &str, lease: Admitted) -> Reply {
    if !st.namespaces.contains(ns) {
        return namespace_not_found(ns);
    }
    let key = (ns.to_owned(), lease.name.clone());
    if st.leases.contains_key(&key) {
        let msg = format!("{LEASES} {:?} already exists", lease.name);
        return status(409, "AlreadyExists", &msg, Some(lease_details(&lease.name)));
    }
    if !lease.resource_version.is_empty() {
        let msg = "resourceVersion should not be set on objects to be created";
        return status(500, "InternalError", msg, None);
    }
    let mut obj = lease.object;
    obj["metadata"]["uid"] = json!(uid());
    obj["metadata"]["creationTimestamp"] =
        json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    st.revision += 1;
    obj["metadata"]["resourceVersion"] = json!(st.revision.to_string());
    st.leases.insert(key, obj.clone());
    (201, obj)
}

/// PUT: an update conditioned on the resourceVersion in the body (Leases do not allow
/// unconditional updates), or a create when the object does not exist and no resourceVersion is
/// given (Leases allow create-on-update).
fn replace(st: &mut State, ns: &str, name: &str, body: &[u8]) -> Reply {
    let lease = match admit(body, ns, Some(name)) {
        Ok(l) => l,
        Err(reply) => return reply,
    };
    let sent = &lease.resource_version;
    if !sent.is_empty() && sent.parse::<u64>().is_err() {
        let msg = format!("metadata.resourceVersion: Invalid value: {sent:?}");
        return status(400, "BadRequest", &msg, None);
    }
    let key = (ns.to_owned(), name.to_owned());
    let Some(old) = st.leases.get(&key) else {
        if sent.is_empty() {
            return store_new(st, ns, lease);
        }
        return conflict(name);
    };
    if sent.is_empty() {
        let msg = format!(
            "Lease.coordination.k8s.io {name:?} is invalid: metadata.resourceVersion: Invalid \
             value: 0x0: must be specified for an update"
        );
        return status(422, "Invalid", &msg, None);
    }
    if old["metadata"]["resourceVersion"].as_str() != Some(sent) {
        return conflict(name);
    }
    let mut obj = lease.object;
    for kept in ["uid", "creationTimestamp", "resourceVersion"] {
        obj["metadata"][kept] = old["metadata"][kept].clone();
    }
    if &obj == old {
        // A no-op update writes nothing: the resourceVersion stays (as with etcd).
        return (200, obj);
    }
    st.revision += 1;
    obj["metadata"]["resourceVersion"] = json!(st.revision.to_string());
    st.leases.insert(key, obj.clone());
    (200, obj)
}

/// DELETE with optional `preconditions` (uid, resourceVersion) in the DeleteOptions body.
fn delete(st: &mut State, ns: &str, name: &str, body: &[u8]) -> Reply {
    let key = (ns.to_owned(), name.to_owned());
    let Some(old) = st.leases.get(&key) else {
        return not_found(name);
    };
    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    for field in ["uid", "resourceVersion"] {
        if let Some(want) = opts["preconditions"][field].as_str() {
            if old["metadata"][field].as_str() != Some(want) {
                return conflict(name);
            }
        }
    }
    let uid = old["metadata"]["uid"].clone();
    st.leases.remove(&key);
    st.revision += 1;
    let mut details = lease_details(name);
    details["uid"] = uid;
    (
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                  "details": details}),
    )
}

fn uid() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("random");
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
