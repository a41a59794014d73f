//! The committed man page and completions match the CLI. Regenerate with
//! `cargo run --example gen-docs`.

mod gen;

#[test]
fn man_page_and_completions_match_the_cli() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (path, contents) in gen::generate() {
        match std::fs::read(root.join(&path)) {
            Ok(on_disk) if on_disk == contents => {}
            _ => stale.push(path.display().to_string()),
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; run `cargo run --example gen-docs` and commit the result"
    );
}

#[test]
fn readme_documents_every_exit_code() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for code in [
        "| 0 |",
        "| 1 |",
        "| 2 |",
        "| 65 |",
        "| 69 |",
        "| 70 |",
        "| 75 |",
        "| 78 |",
        "| 124 |",
        "126 / 127",
    ] {
        assert!(readme.contains(code), "README exit-code table lacks {code}");
    }
}
