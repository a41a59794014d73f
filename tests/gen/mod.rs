//! Generates the man page and shell completions from the clap definition. Shared by
//! `cargo run --example gen-docs` (writes them) and `tests/docs.rs` (fails when they drift).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Every generated file, relative to the repository root, with its contents.
pub fn generate() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = lockrun::cli::Cli::command();
    let mut man = Vec::new();
    // `help` has no page of its own: keep it out of SEE ALSO.
    clap_mangen::Man::new(cmd.clone().disable_help_subcommand(true))
        .render(&mut man)
        .expect("render man page");
    out.push((PathBuf::from("man/lockrun.1"), man));
    for sub in cmd.get_subcommands() {
        let name = format!("lockrun-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(
            sub.clone()
                .name(leak(&name))
                .version(env!("CARGO_PKG_VERSION")),
        )
        .render(&mut page)
        .expect("render man page");
        out.push((PathBuf::from(format!("man/{name}.1")), page));
    }
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "lockrun", &mut buf);
        let name = match shell {
            Shell::Bash => "lockrun.bash",
            Shell::Zsh => "_lockrun",
            Shell::Fish => "lockrun.fish",
            Shell::Elvish => "lockrun.elv",
            _ => "_lockrun.ps1",
        };
        out.push((Path::new("completions").join(name), buf));
    }
    out
}

/// clap names are `&'static str`; the generator runs once, so leaking a few names is fine.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}
