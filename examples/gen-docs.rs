//! Regenerates `man/lockrun.1` and `completions/*` from the clap definition:
//! `cargo run --example gen-docs`. `tests/docs.rs` fails when the committed files drift.

#[path = "../tests/gen/mod.rs"]
mod gen;

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, contents) in gen::generate() {
        let full = root.join(&path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&full, contents)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
