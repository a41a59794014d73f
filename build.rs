//! Links the `lockrun` executable at a fixed address (non-PIE): a PIE build of all backends has
//! about 35,000 relative relocations for the loader to apply at every start, some 0.5 ms of CPU
//! per invocation. See README.md, "Building".
fn main() {
    // Without this, cargo reruns the script (and relinks) whenever any file of the package changes.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
