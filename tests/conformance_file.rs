//! The backend conformance suite against the file backend in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::file::File;
use lockrun::backend::Backend;
use lockrun::lease::LeaseId;

/// The record file of `resource`, found by its content (the suite does not know file names).
fn record_of(dir: &Path, resource: &str) -> Result<PathBuf, String> {
    let needle = serde_json::to_string(resource).map_err(|e| e.to_string())?;
    let needle = format!("\"resource\":{needle},");
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "lease") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(&needle) {
                return Ok(path);
            }
        }
    }
    Err(format!("no record for {resource:?} in {}", dir.display()))
}

fn suite(dir: &Path, prefix: &str) -> Suite {
    let dir = dir.to_owned();
    Suite::new(prefix, move || {
        let dir = dir.clone();
        async move { File::at(&dir).map(|f| Arc::new(f) as Arc<dyn Backend>) }.boxed()
    })
}

fn prefix() -> String {
    format!("conformance-{}", &LeaseId::generate().as_str()[..8])
}

#[tokio::test]
async fn file_backend_passes_the_suite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("locks");
    let garbage_dir = dir.clone();
    let report = suite(&dir, &prefix())
        .corrupt_with(move |resource| {
            let dir = garbage_dir.clone();
            async move {
                let path = record_of(&dir, resource.as_str())?;
                std::fs::write(&path, b"\x00garbage{{{").map_err(|e| e.to_string())
            }
            .boxed()
        })
        .run_all()
        .await;
    report.assert_passed();
    // Everything applies to the file backend: nothing may be skipped.
    for (name, outcome) in &report.results {
        assert_eq!(*outcome, Outcome::Passed, "{name}");
    }
}

#[tokio::test]
async fn truncated_record_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let outcome = suite(&dir, &prefix())
        .corrupt_with(move |resource| {
            let dir = dir.clone();
            async move {
                let path = record_of(&dir, resource.as_str())?;
                let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                std::fs::write(&path, &bytes[..bytes.len() / 3]).map_err(|e| e.to_string())
            }
            .boxed()
        })
        .run("corrupt_record_is_reported")
        .await;
    assert_eq!(outcome, Outcome::Passed);
}

/// Two independent lock directories never see each other's leases.
#[tokio::test]
async fn directories_are_independent() {
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let p = prefix();
    let (sa, sb) = (suite(a.path(), &p), suite(b.path(), &p));
    let (ra, rb) = tokio::join!(sa.run("exclusive_acquire"), sb.run("exclusive_acquire"));
    assert_eq!((ra, rb), (Outcome::Passed, Outcome::Passed));
}
