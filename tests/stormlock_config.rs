//! A stormlock INI configuration, read by the real binary through `-c`, `LOCKRUN_CONFIG` and the
//! search path.

mod common;

use std::process::Output;

use common::*;

/// stormlock's layout, with lockrun's own `backend = file` (stormlock has no file backend).
const STORMLOCK_CFG: &str = "\
# copied from a stormlock setup
[default]
principal = ops@example.com
backend = file
ttl = 2 hours

[deploy]
ttl = 5 min
principal: deployer

[backend.redis]
url = redis://locks.internal:6379
";

/// lockrun in `env`, with the backend left to the config file.
fn run(env: &Env, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env_remove("LOCKRUN_BACKEND");
    for (k, v) in extra {
        c.env(k, v);
    }
    c.args(args).output().expect("spawn lockrun")
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("one JSON object")
}

#[test]
fn acquire_applies_principal_and_ttl_from_the_ini() {
    let env = Env::new();
    let cfg = env.file("stormlock.cfg");
    std::fs::write(&cfg, STORMLOCK_CFG).unwrap();
    let cfg = cfg.to_str().unwrap();

    let lease = json(&run(&env, &[], &["-c", cfg, "acquire", "--json", "res"]));
    assert_eq!(lease["principal"], "ops@example.com");
    assert_eq!(lease["ttl_seconds"], 7200.0);
    // The built-in file backend, in this test's state directory.
    assert!(env.path().join("state/lockrun").is_dir());

    let lease = json(&run(&env, &[], &["-c", cfg, "acquire", "--json", "deploy"]));
    assert_eq!(lease["principal"], "deployer");
    assert_eq!(lease["ttl_seconds"], 300.0);
    let id = lease["lease_id"].as_str().unwrap().to_owned();

    // The same file through LOCKRUN_CONFIG sees the same leases.
    let o = run(
        &env,
        &[("LOCKRUN_CONFIG", cfg)],
        &["current", "-f", "json", "deploy"],
    );
    assert_eq!(json(&o)["lease_id"], id.as_str());
    let o = run(
        &env,
        &[("LOCKRUN_CONFIG", cfg)],
        &["release", "deploy", &id],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Flags still beat the file.
    let o = run(
        &env,
        &[],
        &[
            "-c", cfg, "-p", "me", "acquire", "--json", "--ttl", "1m", "other",
        ],
    );
    let lease = json(&o);
    assert_eq!(lease["principal"], "me");
    assert_eq!(lease["ttl_seconds"], 60.0);
}

#[test]
fn ini_content_under_another_name_is_found_by_the_search_path() {
    let env = Env::new();
    let dir = env.path().join("config/lockrun");
    std::fs::create_dir_all(&dir).unwrap();
    // Not TOML (unquoted values), so read as INI although it is named config.toml.
    std::fs::write(
        dir.join("config.toml"),
        "[default]\nbackend = file\nprincipal = searched\nttl = 3 m\n",
    )
    .unwrap();
    let lease = json(&run(&env, &[], &["acquire", "--json", "res"]));
    assert_eq!(lease["principal"], "searched");
    assert_eq!(lease["ttl_seconds"], 180.0);
}

#[test]
fn bad_ini_files_exit_78_with_file_and_line() {
    let env = Env::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "a.cfg",
            "[default]\nbackend = file\n\n[db]\nttl = 5 x\n",
            ":5: key 'ttl' in [db]: invalid duration '5 x'",
        ),
        (
            "b.ini",
            "[default]\nbackend = mysql\n[backend.mysql]\nhost = db\n",
            ":2: key 'backend' in [default]: lockrun has no MySQL backend",
        ),
        (
            "c.cfg",
            "[default]\nbackend = postgresql\n",
            ":2: [backend.postgresql] has no 'connection' key",
        ),
        (
            "d.cfg",
            "principal = x\n",
            ":1: a line before the first [section] header",
        ),
        (
            "e.cfg",
            "[backend.dynamodb]\nsecret_access_key = wJalrXUtnFEMI\n",
            ":2: key 'secret_access_key' in [backend.dynamodb]: lockrun takes AWS credentials",
        ),
        (
            "f.toml",
            "[default]\nprincipal = \"x\"\nttl = 5 m\n",
            ":3: invalid TOML: ",
        ),
    ];
    for (name, text, needle) in cases {
        let path = env.file(name);
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        let o = run(&env, &[], &["-c", p, "acquire", "res"]);
        assert_fails(&o, 78, &format!("lockrun: {p}{needle}"));
        assert!(!stderr(&o).contains("wJalr"), "{}", stderr(&o));
    }
    // Nothing was acquired.
    assert!(!env.path().join("state/lockrun").exists());
}

#[test]
fn exit_code_for_busy_can_mimic_stormlock() {
    let env = Env::new();
    let cfg = env.file("stormlock.cfg");
    std::fs::write(&cfg, STORMLOCK_CFG).unwrap();
    let cfg = cfg.to_str().unwrap();
    let o = run(&env, &[], &["-c", cfg, "acquire", "res"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // stormlock exits 2 when the lock is held; -E 2 -n does the same.
    let o = run(&env, &[], &["-c", cfg, "acquire", "-n", "-E", "2", "res"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("ops@example.com"), "{}", stderr(&o));
}
