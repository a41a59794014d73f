use std::collections::HashMap;

use super::*;

/// A fake environment.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn no_env() -> impl Fn(&str) -> Option<String> {
    env(&[("HOME", "/home/u")])
}

fn res(name: &str) -> Resource {
    Resource::new(name).unwrap()
}

fn cfg(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/lockrun/config.toml")).unwrap()
}

/// Parses text that must be rejected; returns the one-line message.
fn bad(text: &str) -> String {
    let e = Config::parse(text, Path::new("/etc/lockrun/config.toml")).unwrap_err();
    one_liner(&e)
}

fn one_liner(e: &Error) -> String {
    // A malformed --principal is a bad flag (2); everything else is configuration (78).
    let usage = matches!(
        e,
        Error::Value {
            origin: "--principal",
            ..
        }
    );
    assert_eq!(e.exit(), if usage { Exit::Usage } else { Exit::Config });
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "not one line: {msg:?}"
    );
    msg
}

fn plan(config: &Config, resource: &str) -> Plan {
    config
        .plan(&res(resource), &Flags::default(), &no_env())
        .unwrap()
}

const LAYERED: &str = r#"
[default]
backend = "redis://default-host:6379/0"
principal = "from-default"
ttl = "2h"
run_ttl = "45s"
wait = "5m"

[resource."db"]
backend = "shared"
principal = "from-resource"
ttl = "3h"
run_ttl = 60
wait = 0

[backend.shared]
url = "postgres://pg-host/locks"
table = "leases"
"#;

#[test]
fn built_in_defaults() {
    let p = plan(&Config::default(), "x");
    assert_eq!(
        p.backend.to_string(),
        "file:///home/u/.local/state/lockrun/"
    );
    assert_eq!(p.backend_name, None);
    assert_eq!(p.principal, lease::default_principal());
    assert_eq!(p.ttl, Duration::from_secs(3600));
    assert_eq!(p.run_ttl, Duration::from_secs(30));
    assert_eq!(p.wait, Wait::Forever);
}

#[test]
fn default_section_over_built_in() {
    let p = plan(&cfg(LAYERED), "other");
    assert_eq!(p.backend.to_string(), "redis://default-host:6379/0");
    assert_eq!(p.principal, "from-default");
    assert_eq!(p.ttl, Duration::from_secs(7200));
    assert_eq!(p.run_ttl, Duration::from_secs(45));
    assert_eq!(p.wait, Wait::AtMost(Duration::from_secs(300)));
}

#[test]
fn resource_section_over_default() {
    let p = plan(&cfg(LAYERED), "db");
    assert_eq!(p.backend.to_string(), "postgres://pg-host/locks");
    assert_eq!(p.backend_name.as_deref(), Some("shared"));
    assert_eq!(p.principal, "from-resource");
    assert_eq!(p.ttl, Duration::from_secs(3 * 3600));
    assert_eq!(p.run_ttl, Duration::from_secs(60));
    assert_eq!(p.wait, Wait::AtMost(Duration::ZERO));
    // Exact, case-sensitive match.
    assert_eq!(plan(&cfg(LAYERED), "DB").principal, "from-default");
    assert_eq!(plan(&cfg(LAYERED), "db ").principal, "from-default");
}

#[test]
fn partial_resource_section_falls_back_per_key() {
    let c =
        cfg("[default]\nttl = \"2h\"\nprincipal = \"d\"\n[resource.\"db\"]\nprincipal = \"r\"\n");
    let p = plan(&c, "db");
    assert_eq!(p.principal, "r");
    assert_eq!(p.ttl, Duration::from_secs(7200));
}

#[test]
fn environment_over_file() {
    let c = cfg(LAYERED);
    let e = env(&[
        ("HOME", "/home/u"),
        ("LOCKRUN_BACKEND", "redis://env-host/1"),
        ("LOCKRUN_PRINCIPAL", "from-env"),
    ]);
    let p = c.plan(&res("db"), &Flags::default(), &e).unwrap();
    assert_eq!(p.backend.to_string(), "redis://env-host/1");
    assert_eq!(p.backend_name, None);
    assert_eq!(p.principal, "from-env");
    // Durations have no environment variable: the file still applies.
    assert_eq!(p.ttl, Duration::from_secs(3 * 3600));
    // Empty variables count as unset.
    let e = env(&[("LOCKRUN_BACKEND", ""), ("LOCKRUN_PRINCIPAL", "")]);
    let p = c.plan(&res("db"), &Flags::default(), &e).unwrap();
    assert_eq!(p.principal, "from-resource");
    assert_eq!(p.backend_name.as_deref(), Some("shared"));
}

#[test]
fn flags_over_environment() {
    let c = cfg(LAYERED);
    let e = env(&[
        ("LOCKRUN_BACKEND", "redis://env-host/1"),
        ("LOCKRUN_PRINCIPAL", "from-env"),
    ]);
    let flags = Flags {
        backend: Some("shared".into()),
        principal: Some("from-flag".into()),
        ..Flags::default()
    };
    let p = c.plan(&res("other"), &flags, &e).unwrap();
    assert_eq!(p.backend_name.as_deref(), Some("shared"));
    assert_eq!(p.principal, "from-flag");
}

#[test]
fn environment_backend_by_name_and_file() {
    let c = cfg(LAYERED);
    let e = env(&[("LOCKRUN_BACKEND", "shared")]);
    let p = c.plan(&res("other"), &Flags::default(), &e).unwrap();
    assert_eq!(p.backend_name.as_deref(), Some("shared"));
    let e = env(&[("LOCKRUN_BACKEND", "file"), ("XDG_STATE_HOME", "/state")]);
    let p = c.plan(&res("db"), &Flags::default(), &e).unwrap();
    assert_eq!(p.backend.to_string(), "file:///state/lockrun/");
}

/// Inside the command of `lockrun run db`, whose backend and principal came from the file: a
/// lockrun on another resource gets what the file gives that resource (one resource must never
/// map to two stores), one on `db` itself the outer lease's store, and a value the command set
/// itself (not the configured one) is honoured.
#[test]
fn an_outer_runs_configured_backend_holds_for_its_own_resource_only() {
    let c = cfg(LAYERED);
    let outer = c.plan(&res("db"), &Flags::default(), &no_env()).unwrap();
    assert!(outer.backend_configured && outer.principal_configured);
    let inside = [
        ("LOCKRUN_RESOURCE", "db"),
        ("LOCKRUN_BACKEND", "shared"),
        ("LOCKRUN_CONFIGURED_BACKEND", "shared"),
        ("LOCKRUN_PRINCIPAL", "from-resource"),
        ("LOCKRUN_CONFIGURED_PRINCIPAL", "from-resource"),
    ];
    let other = c
        .plan(&res("other"), &Flags::default(), &env(&inside))
        .unwrap();
    assert_eq!(other.backend.to_string(), "redis://default-host:6379/0");
    assert_eq!(other.backend_name, None);
    assert_eq!(other.principal, "from-default");
    assert!(other.backend_configured && other.principal_configured);
    let same = c
        .plan(&res("db"), &Flags::default(), &env(&inside))
        .unwrap();
    assert_eq!(same.backend_name.as_deref(), Some("shared"));
    assert_eq!(same.principal, "from-resource");
    assert!(same.backend_configured, "still the configured one");

    // The command set its own: honoured, and no longer "configured".
    let mut own = inside.to_vec();
    own[1] = ("LOCKRUN_BACKEND", "redis://elsewhere:6379/1");
    own[3] = ("LOCKRUN_PRINCIPAL", "someone");
    let p = c
        .plan(&res("other"), &Flags::default(), &env(&own))
        .unwrap();
    assert_eq!(p.backend.to_string(), "redis://elsewhere:6379/1");
    assert_eq!(p.principal, "someone");
    assert!(!p.backend_configured && !p.principal_configured);

    // An outer run given -b or LOCKRUN_BACKEND marks nothing: its choice holds for every
    // resource inside, as the environment variable always did.
    let flags = Flags {
        backend: Some("shared".into()),
        ..Flags::default()
    };
    assert!(
        !c.plan(&res("db"), &flags, &no_env())
            .unwrap()
            .backend_configured
    );
    let mut chosen = inside.to_vec();
    chosen.remove(2);
    let p = c
        .plan(&res("other"), &Flags::default(), &env(&chosen))
        .unwrap();
    assert_eq!(p.backend_name.as_deref(), Some("shared"));
    assert!(!p.backend_configured);
}

#[test]
fn bad_flag_and_environment_values() {
    let c = cfg(LAYERED);
    let flags = Flags {
        backend: Some("nosuch".into()),
        ..Flags::default()
    };
    let e = c.plan(&res("x"), &flags, &no_env()).unwrap_err();
    let msg = one_liner(&e);
    assert!(msg.starts_with("--backend: unknown backend 'nosuch': no [backend.nosuch] section in /etc/lockrun/config.toml"), "{msg}");

    let e = Config::default()
        .plan(
            &res("x"),
            &Flags::default(),
            &env(&[("LOCKRUN_BACKEND", "nosuch")]),
        )
        .unwrap_err();
    let msg = one_liner(&e);
    assert!(
        msg.starts_with("LOCKRUN_BACKEND: unknown backend 'nosuch'"),
        "{msg}"
    );
    assert!(msg.contains("no config file was found"), "{msg}");

    let e = c
        .plan(
            &res("x"),
            &Flags::default(),
            &env(&[("LOCKRUN_BACKEND", "bogus://h")]),
        )
        .unwrap_err();
    assert!(one_liner(&e).starts_with("LOCKRUN_BACKEND: unknown backend 'bogus'"));

    for (p, why) in [
        ("", "empty"),
        ("a\nb", "control character"),
        (&"x".repeat(256), "256 bytes"),
    ] {
        let flags = Flags {
            principal: Some(p.to_owned()),
            ..Flags::default()
        };
        let msg = one_liner(&c.plan(&res("x"), &flags, &no_env()).unwrap_err());
        assert!(msg.starts_with("--principal: "), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
    let e = env(&[("LOCKRUN_PRINCIPAL", "tab\there")]);
    let msg = one_liner(&c.plan(&res("x"), &Flags::default(), &e).unwrap_err());
    assert!(
        msg.starts_with("LOCKRUN_PRINCIPAL: principal 'tab\\there'"),
        "{msg}"
    );
    let flags = Flags {
        principal: Some("é".repeat(127)),
        ..Flags::default()
    };
    assert!(c.plan(&res("x"), &flags, &no_env()).is_ok());
}

#[test]
fn search_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |rel: &str, principal: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("[default]\nprincipal = \"{principal}\"\n")).unwrap();
        path
    };
    let system = write("etc/lockrun/config.toml", "system");
    write("home/.config/lockrun/config.toml", "home");
    write("xdg/lockrun/config.toml", "xdg");
    let named = write("named.toml", "named");
    let flagged = write("flagged.toml", "flagged");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let home_dir = s(&root.join("home"));
    let xdg_dir = s(&root.join("xdg"));
    let load = |flags: &Flags, pairs: &[(&str, &str)]| {
        Config::search(flags, &env(pairs), &system).unwrap()
    };
    let none = Flags::default();
    let principal = |c: &Config| plan(c, "r").principal;

    // -c beats LOCKRUN_CONFIG beats XDG beats HOME beats /etc.
    let flags = Flags {
        config: Some(flagged.clone()),
        ..Flags::default()
    };
    let all = [
        ("LOCKRUN_CONFIG", s(&named)),
        ("XDG_CONFIG_HOME", xdg_dir.clone()),
        ("HOME", home_dir.clone()),
    ];
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = load(&flags, &all);
    assert_eq!(c.path(), Some(flagged.as_path()));
    assert_eq!(principal(&c), "flagged");
    assert_eq!(principal(&load(&none, &all)), "named");
    assert_eq!(principal(&load(&none, &all[1..])), "xdg");
    assert_eq!(principal(&load(&none, &all[2..])), "home");
    assert_eq!(principal(&load(&none, &[])), "system");
    // XDG_CONFIG_HOME empty or relative: HOME/.config.
    for xdg in ["", "relative/dir"] {
        let c = load(&none, &[("XDG_CONFIG_HOME", xdg), ("HOME", &home_dir)]);
        assert_eq!(principal(&c), "home");
    }
    // XDG set but without a lockrun file: the system file, not HOME.
    let empty = s(&root.join("empty"));
    let c = load(&none, &[("XDG_CONFIG_HOME", &empty), ("HOME", &home_dir)]);
    assert_eq!(principal(&c), "system");
    // Empty LOCKRUN_CONFIG counts as unset.
    let c = load(&none, &[("LOCKRUN_CONFIG", ""), ("HOME", &home_dir)]);
    assert_eq!(principal(&c), "home");
    // Nothing at all: built-in defaults.
    let c = Config::search(&none, &env(&[]), &root.join("nope.toml")).unwrap();
    assert_eq!(c.path(), None);
    // HOME that is a file, not a directory: skipped.
    let c = Config::search(&none, &env(&[("HOME", &s(&named))]), &root.join("x")).unwrap();
    assert_eq!(c.path(), None);
    // A link to a missing file is not taken for no file: the store it named would be lost.
    let linked = root.join("linked");
    std::fs::create_dir_all(linked.join("lockrun")).unwrap();
    std::os::unix::fs::symlink(root.join("gone.toml"), linked.join("lockrun/config.toml")).unwrap();
    let e = Config::search(&none, &env(&[("XDG_CONFIG_HOME", &s(&linked))]), &system)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.toml")
            && e.contains("is a symbolic link to")
            && e.contains("gone.toml, which does not exist"),
        "{e}"
    );
    std::os::unix::fs::symlink(root.join("gone.toml"), root.join("system-link.toml")).unwrap();
    let e = Config::search(&none, &env(&[]), &root.join("system-link.toml")).unwrap_err();
    assert!(e.to_string().contains("which does not exist"), "{e}");
}

#[test]
fn explicit_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let system = dir.path().join("system.toml");
    std::fs::write(&system, "").unwrap();
    let flags = Flags {
        config: Some(missing.clone()),
        ..Flags::default()
    };
    let e = Config::search(&flags, &env(&[]), &system).unwrap_err();
    let msg = one_liner(&e);
    assert!(
        msg.starts_with(&format!(
            "{}: cannot read config file (named by -c): ",
            missing.display()
        )),
        "{msg}"
    );
    assert!(matches!(
        e,
        Error::Read {
            named_by: Some("-c"),
            ..
        }
    ));

    let m = missing.to_str().unwrap();
    let e = Config::search(&Flags::default(), &env(&[("LOCKRUN_CONFIG", m)]), &system).unwrap_err();
    assert!(one_liner(&e).contains("(named by LOCKRUN_CONFIG)"));

    // A directory cannot be read either.
    let flags = Flags {
        config: Some(dir.path().to_owned()),
        ..Flags::default()
    };
    assert!(matches!(
        Config::search(&flags, &env(&[]), &system),
        Err(Error::Read { .. })
    ));
}

#[test]
fn found_file_that_cannot_be_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let system = dir.path().join("config.toml");
    std::fs::write(&system, b"\xff\xfe not utf-8").unwrap();
    let e = Config::search(&Flags::default(), &env(&[]), &system).unwrap_err();
    assert!(matches!(e, Error::Read { named_by: None, .. }), "{e}");
    one_liner(&e);
}

#[test]
fn parse_errors_in_a_found_file_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[default]\nttl = \"5x\"\n").unwrap();
    let flags = Flags {
        config: Some(path.clone()),
        ..Flags::default()
    };
    let msg = one_liner(&Config::load(&flags, &env(&[])).unwrap_err());
    assert!(
        msg.starts_with(&format!("{}:2: key 'ttl' in [default]", path.display())),
        "{msg}"
    );
}

#[test]
fn unknown_keys() {
    let msg = bad("[default]\nttl = \"1h\"\n\nttl_typo = \"1h\"\n");
    assert_eq!(
        msg,
        "/etc/lockrun/config.toml:4: unknown key 'ttl_typo' in [default] \
         (known: backend, principal, ttl, run_ttl, wait, fair)"
    );
    let msg = bad("# c\n[resource.\"x\"]\nwait = 0\nwiat = 0\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:4: unknown key 'wiat' in [resource.\"x\"]"),
        "{msg}"
    );
    let msg = bad("ttl = \"1h\"\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:1: unknown key 'ttl' at top level"),
        "{msg}"
    );
    let msg = bad("[default]\n\n[defaults]\nttl = 1\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:3: unknown section [defaults]"),
        "{msg}"
    );
    let msg = bad("[default.nested]\nttl = 1\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:1: unknown key 'nested' in [default]"),
        "{msg}"
    );
    // Reported in a resource section that would not apply, too; first in file order.
    let msg = bad("[resource.\"b\"]\nzzz = 1\n[resource.\"a\"]\naaa = 1\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:2: unknown key 'zzz'"),
        "{msg}"
    );
}

#[test]
fn wrong_types() {
    let msg = bad("[default]\nprincipal = 5\n");
    assert_eq!(
        msg,
        "/etc/lockrun/config.toml:2: key 'principal' in [default]: must be a string, not an integer"
    );
    let msg = bad("[default]\nttl = true\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:2: key 'ttl' in [default]: must be a duration"),
        "{msg}"
    );
    assert!(msg.ends_with("not a boolean"), "{msg}");
    let msg = bad("[default]\nwait = [1]\n");
    assert!(msg.contains(":2: key 'wait' in [default]"), "{msg}");
    let msg = bad("[default]\nbackend = 1979-05-27T07:32:00Z\n");
    assert!(
        msg.ends_with(":2: key 'backend' in [default]: must be a string, not a datetime"),
        "{msg}"
    );
    let msg = bad("default = 5\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:1: key 'default' must be a [default] section"),
        "{msg}"
    );
    let msg = bad("[resource]\ndb = \"x\"\n");
    assert!(msg.starts_with("/etc/lockrun/config.toml:2: key 'db' in [resource] must be a [resource.\"db\"] section, not a string"), "{msg}");
    let msg = bad("[[resource]]\nttl = 1\n");
    assert!(
        msg.starts_with(
            "/etc/lockrun/config.toml:1: key 'resource' must be a [resource] section, not an array"
        ),
        "{msg}"
    );
}

#[test]
fn bad_durations() {
    let msg = bad("[default]\nttl = \"1h\"\n\n[resource.\"db\"]\n# comment\n\nttl = \"5x\"\n");
    assert!(
        msg.starts_with(
            "/etc/lockrun/config.toml:7: key 'ttl' in [resource.\"db\"]: invalid duration '5x': "
        ),
        "{msg}"
    );
    let msg = bad("[default]\nrun_ttl = -5\n");
    assert!(
        msg.contains(":2: key 'run_ttl' in [default]: invalid duration -5"),
        "{msg}"
    );
    let msg = bad("[default]\nttl = 0\n");
    assert!(
        msg.contains(":2: key 'ttl' in [default]: must be longer than zero"),
        "{msg}"
    );
    let msg = bad("[default]\nrun_ttl = \"100ms\"\n");
    assert!(
        msg.contains(
            ":2: key 'run_ttl' in [default]: too short for a supervised command (at least 500ms)"
        ),
        "{msg}"
    );
    let msg = bad("[default]\nrun_ttl = \"10000y\"\n");
    assert!(
        msg.contains(":2: key 'run_ttl' in [default]: the TTL must be at most 10 years"),
        "{msg}"
    );
    let msg = bad("[default]\nwait = \"soon\"\n");
    assert!(
        msg.contains(":2: key 'wait' in [default]: invalid duration 'soon'"),
        "{msg}"
    );
    // A newline inside the bad value does not break the message.
    let msg = bad("[default]\nttl = \"\"\"\n5\nx\"\"\"\n");
    assert!(msg.contains(":2: key 'ttl'"), "{msg}");
    // Dotted keys at the top level still have lines.
    let msg = bad("\nresource.db.ttl = \"5x\"\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:2: key 'ttl' in [resource.\"db\"]"),
        "{msg}"
    );
    // Inline tables too.
    let msg = bad("\n\ndefault = { ttl = \"1h\", wait = \"x\" }\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:3: key 'wait' in [default]"),
        "{msg}"
    );
}

#[test]
fn durations() {
    let c = cfg("[default]\nttl = \"2h 30m\"\nrun_ttl = \"15 minutes\"\n[resource.\"a\"]\nttl = 90\nrun_ttl = 1.5\n");
    assert_eq!(plan(&c, "x").ttl, Duration::from_secs(9000));
    assert_eq!(plan(&c, "x").run_ttl, Duration::from_secs(900));
    assert_eq!(plan(&c, "a").ttl, Duration::from_secs(90));
    assert_eq!(plan(&c, "a").run_ttl, Duration::from_millis(1500));
}

#[test]
fn syntax_errors_are_one_line_with_a_line_number() {
    let msg = bad("[default]\nttl = \"1h\"\n[resource.\"db\"\nttl = 1\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:3: invalid TOML: "),
        "{msg}"
    );
    let msg = bad("[default]\nttl = \"1h\"\nttl = \"2h\"\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:3: invalid TOML: "),
        "{msg}"
    );
    let msg = bad("[default]\nprincipal = \"unterminated\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:2: invalid TOML: "),
        "{msg}"
    );
}

#[test]
fn wait_values() {
    let wait = |v: &str| plan(&cfg(&format!("[default]\nwait = {v}\n")), "r").wait;
    assert_eq!(wait("\"forever\""), Wait::Forever);
    assert_eq!(wait("\"Forever\""), Wait::Forever);
    assert_eq!(wait("0"), Wait::AtMost(Duration::ZERO));
    assert_eq!(wait("\"0\""), Wait::AtMost(Duration::ZERO));
    assert_eq!(wait("\"10m\""), Wait::AtMost(Duration::from_secs(600)));
    assert_eq!(wait("30"), Wait::AtMost(Duration::from_secs(30)));
    assert_eq!(Wait::parse("forever"), Ok(Wait::Forever));
    let e = Wait::parse("never").unwrap_err();
    assert!(
        e.ends_with("(a duration, 0 to try once, or 'forever')"),
        "{e}"
    );
}

#[test]
fn backend_choices() {
    let base = "[backend.ci]\nurl = \"redis://ci-redis:6379/2\"\nprefix = \"lr:\"\nconnect_timeout = \"2s\"\n";
    // By name, with backend-specific keys passed through.
    let c = cfg(&format!("{base}[default]\nbackend = \"ci\"\n"));
    let p = plan(&c, "r");
    assert_eq!(p.backend.to_string(), "redis://ci-redis:6379/2");
    assert_eq!(p.backend_name.as_deref(), Some("ci"));
    assert_eq!(p.settings.origin, "/etc/lockrun/config.toml [backend.ci]");
    assert_eq!(p.settings.string("prefix").unwrap().as_deref(), Some("lr:"));
    assert_eq!(
        p.settings.duration("connect_timeout").unwrap(),
        Some(Duration::from_secs(2))
    );
    assert_eq!(p.settings.string("url").unwrap(), None);
    assert!(p
        .settings
        .expect_only(&["prefix", "connect_timeout"])
        .is_ok());
    // By URL, and by absolute path.
    let p = plan(
        &cfg(&format!("{base}[default]\nbackend = \"postgres://h/db\"\n")),
        "r",
    );
    assert_eq!(p.backend.scheme(), "postgres");
    assert_eq!(p.backend_name, None);
    assert!(p.settings.expect_only(&[]).is_ok());
    let p = plan(&cfg("[default]\nbackend = \"/var/lock/lockrun\"\n"), "r");
    assert_eq!(p.backend.to_string(), "file:///var/lock/lockrun/");
    // "file": the built-in file backend.
    let p = plan(
        &cfg(&format!(
            "{base}[default]\nbackend = \"ci\"\n[resource.\"r\"]\nbackend = \"file\"\n"
        )),
        "r",
    );
    assert_eq!(
        p.backend.to_string(),
        "file:///home/u/.local/state/lockrun/"
    );
    // A section name that needs quoting.
    let c = cfg("[backend.\"my.redis\"]\nurl = \"redis://h\"\n[default]\nbackend = \"my.redis\"\n");
    let p = plan(&c, "r");
    assert_eq!(
        p.settings.origin,
        "/etc/lockrun/config.toml [backend.\"my.redis\"]"
    );
}

#[test]
fn backend_errors() {
    let msg = bad("[default]\n\nbackend = \"shared\"\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:3: key 'backend' in [default]: unknown backend 'shared': no [backend.shared] section in this file"),
        "{msg}"
    );
    let msg = bad("[backend.x]\nprefix = \"p\"\n");
    assert_eq!(
        msg,
        "/etc/lockrun/config.toml:1: [backend.x] has no 'url' key"
    );
    for typo in ["urll", "URL", "ur"] {
        let msg = bad(&format!(
            "[backend.x]\nprefix = \"p\"\n{typo} = \"redis://h\"\n"
        ));
        assert_eq!(
            msg,
            format!(
                "/etc/lockrun/config.toml:3: [backend.x] has no 'url' key (unknown key \
                 '{typo}': did you mean 'url'?)"
            )
        );
    }
    let msg = bad("[backend.x]\nurl = \"nope://h\"\n");
    assert!(
        msg.starts_with(
            "/etc/lockrun/config.toml:2: key 'url' in [backend.x]: unknown backend 'nope'"
        ),
        "{msg}"
    );
    let msg = bad("[backend.x]\nurl = 5\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:2: key 'url' in [backend.x]: must be a string"),
        "{msg}"
    );
    let msg = bad("[default]\nbackend = \"redis://[::1\"\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:2: key 'backend' in [default]: bad backend URL"),
        "{msg}"
    );
    let msg = bad("[backend.file]\nurl = \"file:///x\"\n");
    assert!(msg.contains("reserved"), "{msg}");
    let msg = bad("[backend]\nx = 1\n");
    assert!(
        msg.starts_with(
            "/etc/lockrun/config.toml:2: key 'x' in [backend] must be a [backend.x] section"
        ),
        "{msg}"
    );
    let msg = bad("[default]\nbackend = \"\"\n");
    assert!(msg.ends_with("backend is empty"), "{msg}");
}

#[test]
fn backend_settings_may_hold_any_toml() {
    // Datetimes and arrays in a backend section do not upset line tracking.
    let c = cfg("[backend.x]\nurl = \"redis://h\"\nprefix = 1979-05-27T07:32:00Z\nusername = [\"a\", \"b\"]\n[default]\nbackend = \"x\"\n");
    assert_eq!(plan(&c, "r").backend_name.as_deref(), Some("x"));
    let msg =
        bad("[backend.x]\nurl = \"redis://h\"\nprefix = 1979-05-27\n[default]\nttl = \"5x\"\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:5: key 'ttl'"),
        "{msg}"
    );
}

#[test]
fn principals_in_the_file_are_checked() {
    let msg = bad("[default]\nprincipal = \"\"\n");
    assert!(
        msg.ends_with(":2: key 'principal' in [default]: principal is empty"),
        "{msg}"
    );
    let msg = bad("[default]\nprincipal = \"a\\u001bb\"\n");
    assert!(msg.contains("control character"), "{msg}");
    assert!(!msg.contains('\u{1b}'), "{msg:?}");
}

#[test]
fn resource_section_names_are_checked() {
    let msg = bad("[resource.\"\"]\nttl = 1\n");
    assert!(
        msg.starts_with("/etc/lockrun/config.toml:1: [resource.\"\"]: invalid resource name"),
        "{msg}"
    );
}

#[test]
fn default_file_dir_computation() {
    let dir = |pairs: &[(&str, &str)]| default_file_dir(&env(pairs));
    assert_eq!(
        dir(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]),
        PathBuf::from("/s/lockrun")
    );
    assert_eq!(
        dir(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]),
        PathBuf::from("/h/.local/state/lockrun")
    );
    assert_eq!(
        dir(&[("XDG_STATE_HOME", ""), ("HOME", "/h")]),
        PathBuf::from("/h/.local/state/lockrun")
    );
    let tmp = PathBuf::from(format!("/tmp/lockrun-{}", nix::unistd::getuid()));
    assert_eq!(dir(&[]), tmp);
    assert_eq!(dir(&[("HOME", "")]), tmp);
    assert_eq!(dir(&[("HOME", "relative")]), tmp);
    let p = Config::default()
        .plan(&res("r"), &Flags::default(), &env(&[]))
        .unwrap();
    assert_eq!(p.backend.to_string(), format!("file://{}/", tmp.display()));
}

#[test]
fn user_config_path_computation() {
    let path = |pairs: &[(&str, &str)]| user_config_path(&env(pairs));
    assert_eq!(
        path(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]),
        Some(PathBuf::from("/x/lockrun/config.toml"))
    );
    assert_eq!(
        path(&[("HOME", "/h")]),
        Some(PathBuf::from("/h/.config/lockrun/config.toml"))
    );
    assert_eq!(path(&[]), None);
}

#[test]
fn debug_output_hides_secrets() {
    let c = cfg("[backend.x]\nurl = \"redis://u:hunter2@h\"\nusername = \"hunter3\"\n[default]\nbackend = \"x\"\n");
    let p = plan(&c, "r");
    for text in [format!("{c:?}"), format!("{p:?}")] {
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
    }
}
