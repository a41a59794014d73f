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

/// What the bash completion offers for the command line `line` (the last word is the one being
/// completed), without bash-completion's helpers (its fallback path).
fn bash_completes(line: &str) -> Vec<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/lockrun.bash");
    let out = std::process::Command::new("bash")
        .args([
            "--norc",
            "-c",
            r#"source "$0"; read -ra COMP_WORDS <<< "$1"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ));
               COMP_LINE="$1"; COMP_POINT=${#COMP_LINE};
               _lockrun lockrun "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}";
               printf '%s\n' "${COMPREPLY[@]}""#,
        ])
        .arg(&script)
        .arg(line)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// After `--` comes the command lockrun runs: bash completes commands there, not lockrun's own
/// verbs and options, in both the `run` and the short form.
#[test]
fn bash_completion_hands_the_command_to_the_shell() {
    for line in [
        "lockrun run res -- tru",
        "lockrun deploy-prod -- tru",
        "lockrun -n r -- tru",
    ] {
        let got = bash_completes(line);
        assert!(got.iter().any(|w| w == "true"), "{line}: {got:?}");
        assert!(!got.iter().any(|w| w.starts_with('-')), "{line}: {got:?}");
    }
    let got = bash_completes("lockrun run --tt");
    assert_eq!(got, ["--ttl"], "lockrun's own options before --");
    let got = bash_completes("lockrun ru");
    assert!(got.iter().any(|w| w == "run"), "{got:?}");
}

/// lockrun(1), which every verb's page points to for them, lists every environment variable of
/// the README's table and every backend's URL form, in a section laid out as written (not
/// filled into run-on lines).
#[test]
fn the_main_man_page_has_the_environment_and_the_backends() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("man/lockrun.1")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let (_, env) = readme.split_once("### Environment").unwrap();
    let (table, _) = env.split_once("The command run by").unwrap();
    let vars: Vec<&str> = table
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|v| v.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(vars.len() >= 10, "{vars:?}");
    for var in vars {
        assert!(page.contains(var), "{var} not in lockrun(1)");
    }
    for scheme in [
        "file://",
        "redis://",
        "rediss://",
        "redis+unix://",
        "postgres://",
        "etcd://",
        "dynamodb://",
        "memcached://",
        "kubernetes://",
    ] {
        assert!(page.contains(scheme), "{scheme} not in lockrun(1)");
    }
    let (_, section) = page
        .split_once(".SH \"EXIT STATUS, ENVIRONMENT, BACKENDS, FILES\"\n")
        .expect("the section");
    assert!(section.starts_with(".nf\n"), "not laid out as written");
    assert!(
        page.contains("Configuration file"),
        "no configuration file in lockrun(1)"
    );
}

/// Usage lines name `lockrun`, whatever the executable's file is called (they used to show the
/// file's name, as a copy or a versioned install names it, in every verb's help).
#[test]
fn usage_lines_name_lockrun_whatever_the_file_is_called() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lockrun-1.2");
    std::fs::copy(env!("CARGO_BIN_EXE_lockrun"), &copy).unwrap();
    for verb in ["acquire", "release", "current", "doctor"] {
        let o = std::process::Command::new(&copy)
            .args([verb, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(&format!("Usage: lockrun {verb} ")), "{text}");
        assert!(!text.contains("lockrun-1.2"), "{text}");
    }
}
