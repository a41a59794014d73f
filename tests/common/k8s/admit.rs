//! What the API server does to a Lease sent for create or replace before storing it: decoding
//! (400 on a type error), name and namespace checks, validation (422), and normalisation
//! (MicroTimes to microseconds, unknown fields dropped).

use serde_json::{json, Map, Value};

use super::api::{status, Reply};

const GROUP_VERSION: &str = "coordination.k8s.io/v1";
const SPEC_STRINGS: &[&str] = &["holderIdentity", "strategy", "preferredHolder"];
const SPEC_INT32: &[&str] = &["leaseDurationSeconds", "leaseTransitions"];
const SPEC_TIMES: &[&str] = &["acquireTime", "renewTime"];
const MAX_ANNOTATIONS: usize = 256 * 1024;

/// A Lease that passed decoding and validation, normalised, without server-set metadata.
pub struct Admitted {
    pub name: String,
    /// `metadata.resourceVersion` as sent ("" when absent).
    pub resource_version: String,
    pub object: Value,
}

/// Decodes and validates `body` for namespace `ns`; `url_name` is the name in a PUT's URL.
pub fn admit(body: &[u8], ns: &str, url_name: Option<&str>) -> Result<Admitted, Reply> {
    let bad = |why: String| status(400, "BadRequest", &why, None);
    let body: Value = serde_json::from_slice(body).map_err(|e| bad(format!("json: {e}")))?;
    let obj = body
        .as_object()
        .ok_or_else(|| bad("the body is not an object".into()))?;
    for (key, want) in [("apiVersion", GROUP_VERSION), ("kind", "Lease")] {
        match obj.get(key) {
            None => {}
            Some(Value::String(v)) if v == want => {}
            Some(v) => return Err(bad(format!("{key} {v} does not match the expected {want}"))),
        }
    }
    let empty = Map::new();
    let meta = match obj.get("metadata") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("metadata is not an object".into())),
    };
    let text = |key: &str| -> Result<String, Reply> {
        match meta.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(bad(format!("metadata.{key}: {v} is not a string"))),
        }
    };
    let name = text("name")?;
    let namespace = text("namespace")?;
    if !namespace.is_empty() && namespace != ns {
        return Err(bad(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    if let Some(url_name) = url_name {
        if name != url_name {
            return Err(bad(format!(
                "the name of the object ({name}) does not match the name on the URL ({url_name})"
            )));
        }
    }
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push("metadata.name: Required value: name or generateName is required".to_owned());
    } else if !subdomain(&name) {
        errors.push(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist \
             of lower case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character"
        ));
    }
    let annotations = string_map(meta, "annotations").map_err(bad)?;
    let labels = string_map(meta, "labels").map_err(bad)?;
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ANNOTATIONS {
        errors.push(format!(
            "metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS} bytes"
        ));
    }
    for (k, v) in annotations.iter().chain(&labels) {
        if !qualified(k) {
            errors.push(format!(
                "metadata: Invalid value: {k:?}: not a qualified name"
            ));
        }
        if labels.get(k) == Some(v) && !label_value(v) {
            errors.push(format!("metadata.labels: Invalid value: {v:?}"));
        }
    }
    let spec = spec(obj.get("spec"), &mut errors).map_err(bad)?;
    if !errors.is_empty() {
        let message = format!(
            "Lease.coordination.k8s.io {name:?} is invalid: {}",
            errors.join(", ")
        );
        let details = json!({"name": name, "group": "coordination.k8s.io", "kind": "Lease"});
        return Err(status(422, "Invalid", &message, Some(details)));
    }
    let mut metadata = json!({"name": name, "namespace": ns});
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    if !labels.is_empty() {
        metadata["labels"] = json!(labels);
    }
    Ok(Admitted {
        name,
        resource_version: text("resourceVersion")?,
        object: json!({
            "apiVersion": GROUP_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec,
        }),
    })
}

type Strings = std::collections::BTreeMap<String, String>;

fn string_map(meta: &Map<String, Value>, key: &str) -> Result<Strings, String> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(Strings::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("metadata.{key}[{k}]: {other} is not a string")),
            })
            .collect(),
        Some(v) => Err(format!("metadata.{key}: {v} is not an object")),
    }
}

/// Decodes the spec (type errors are 400s) and validates it (into `errors`: 422s).
fn spec(spec: Option<&Value>, errors: &mut Vec<String>) -> Result<Value, String> {
    let spec = match spec {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::Object(s)) => s,
        Some(v) => return Err(format!("spec: {v} is not an object")),
    };
    let mut out = Map::new();
    for (key, value) in spec {
        let k = key.as_str();
        if value.is_null() {
            continue;
        }
        if SPEC_STRINGS.contains(&k) {
            let s = value
                .as_str()
                .ok_or(format!("spec.{k}: {value} is not a string"))?;
            out.insert(key.clone(), json!(s));
        } else if SPEC_INT32.contains(&k) {
            let n = value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or(format!("spec.{k}: {value} is not an int32"))?;
            let ok = if k == "leaseTransitions" {
                n >= 0
            } else {
                n > 0
            };
            if !ok {
                errors.push(format!("spec.{k}: Invalid value: {n}: out of range"));
            }
            out.insert(key.clone(), json!(n));
        } else if SPEC_TIMES.contains(&k) {
            let s = value
                .as_str()
                .ok_or(format!("spec.{k}: {value} is not a time"))?;
            let t = humantime::parse_rfc3339(s)
                .map_err(|e| format!("spec.{k}: {s:?} is not an RFC 3339 time: {e}"))?;
            out.insert(
                key.clone(),
                json!(humantime::format_rfc3339_micros(t).to_string()),
            );
        }
        // Unknown fields are dropped, as the API server does (with a warning).
    }
    let has = |k: &str| {
        out.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if has("preferredHolder") && !has("strategy") {
        errors.push("spec.preferredHolder: Forbidden: requires a strategy".into());
    }
    Ok(Value::Object(out))
}

/// A lowercase RFC 1123 subdomain: `[a-z0-9]([-a-z0-9]*[a-z0-9])?` labels joined by dots, at
/// most 253 characters (written independently of the backend's own check).
pub fn subdomain(name: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        let end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(end)
            && b.last().is_some_and(end)
            && b.iter().all(|c| end(c) || *c == b'-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// `[prefix/]name`: prefix a DNS subdomain, name at most 63 of `[A-Za-z0-9-_.]`, alphanumeric at
/// both ends.
fn qualified(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.map_or(true, subdomain) && !name.is_empty() && name.len() <= 63 && label_value(name)
}

fn label_value(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() <= 63
        && (b.is_empty()
            || (b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))))
}
