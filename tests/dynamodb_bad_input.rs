//! The real binary against DynamoDB endpoints that fail: exit codes and one-line messages.
//!
//! moto accepts any credentials and never throttles, so rejected credentials are also tested
//! with moto's optional IAM checks turned on, and exact AWS error codes (throttling, access
//! denied) come from a fake endpoint that answers every request with one error.
#![cfg(feature = "dynamodb")]

mod common;

use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::dynamodb as ddb;
use common::{assert_fails, stderr, Env};

fn lockrun(env: &Env, url: &str) -> Command {
    let mut c = env.cmd();
    ddb::aws_env(&mut c).env("LOCKRUN_BACKEND", url);
    c
}

fn run(env: &Env, url: &str, args: &[&str]) -> Output {
    lockrun(env, url)
        .args(args)
        .output()
        .expect("spawn lockrun")
}

fn at(port: u16, params: &str) -> String {
    format!("dynamodb://locks?endpoint=http://127.0.0.1:{port}&region=us-east-1{params}")
}

#[test]
fn unreachable_endpoint_is_unavailable() {
    let env = Env::new();
    let url = at(common::server::free_port(), "");
    for args in [
        &["current", "res"][..],
        &["acquire", "-n", "res"],
        &["init"],
    ] {
        assert_fails(
            &run(&env, &url, args),
            69,
            "cannot reach DynamoDB at http://127.0.0.1:",
        );
    }
}

#[test]
fn hung_endpoint_times_out() {
    let env = Env::new();
    let url = at(ddb::silent(), "&command_timeout=1s");
    let start = Instant::now();
    let o = run(&env, &url, &["acquire", "-n", "res"]);
    assert_fails(&o, 69, "did not answer in time");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn missing_credentials_and_region_are_config_errors() {
    let (server, env) = (ddb::moto(), Env::new());
    let url = format!("dynamodb://locks?endpoint={}", ddb::endpoint(server));
    let o = lockrun(&env, &url)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["current", "res"])
        .output()
        .expect("spawn");
    assert_fails(&o, 78, "no usable AWS credentials");
    let o = lockrun(&env, &url)
        .env_remove("AWS_REGION")
        .args(["current", "res"])
        .output()
        .expect("spawn");
    assert_fails(&o, 78, "no AWS region");
}

/// moto keeps each region apart, as AWS does: the table exists in us-east-1 only.
#[test]
fn wrong_region_says_the_table_is_missing_there() {
    let (server, env, table) = (ddb::moto(), Env::new(), ddb::table());
    let url = ddb::url(server, &table);
    assert_eq!(run(&env, &url, &["init"]).status.code(), Some(0));
    let elsewhere = url.replace("region=us-east-1", "region=eu-west-1");
    let o = run(&env, &elsewhere, &["acquire", "-n", "res"]);
    assert_fails(&o, 78, "(region eu-west-1); run 'lockrun init'");
}

#[test]
fn rejected_credentials_are_config_errors() {
    // moto with its IAM checks on: the dummy keys are unknown to it (an XML 403, read by status).
    let strict = ddb::start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let env = Env::new();
    let o = run(&env, &ddb::url(&strict, "locks"), &["current", "res"]);
    assert_fails(&o, 78, "rejected the AWS credentials (HTTP 403)");
    for code in [
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "AccessDeniedException",
    ] {
        let (port, _) = ddb::fake_error(400, code, "nope");
        let o = run(&env, &at(port, ""), &["acquire", "-n", "res"]);
        assert_fails(
            &o,
            78,
            &format!("rejected the AWS credentials ({code}): nope"),
        );
    }
}

#[test]
fn throttling_is_unavailable_after_the_sdk_retries() {
    let env = Env::new();
    let (port, hits) = ddb::fake_error(400, "ProvisionedThroughputExceededException", "slow down");
    let o = run(&env, &at(port, ""), &["acquire", "-n", "res"]);
    assert_fails(
        &o,
        69,
        "throttling or failing (ProvisionedThroughputExceededException)",
    );
    assert!(hits.load(Ordering::SeqCst) >= 2, "the SDK did not retry");
    let (port, _) = ddb::fake_error(503, "ServiceUnavailable", "down");
    assert_fails(
        &run(&env, &at(port, ""), &["current", "res"]),
        69,
        "ServiceUnavailable",
    );
}

#[test]
fn bad_urls_and_settings() {
    let env = Env::new();
    for (url, needle) in [
        ("dynamodb://", "the table name is missing"),
        ("dynamodb://x", "not a valid table name"),
        (
            "dynamodb://locks?regoin=us-east-1",
            "unknown parameter 'regoin'",
        ),
        (
            "dynamodb://locks?endpoint=127.0.0.1:8000",
            "is not an http:// or https:// URL",
        ),
        (
            "dynamodb://locks?skew_allowance=later",
            "parameter 'skew_allowance'",
        ),
        (
            "dynamodb://AKIAX:hunter2@locks",
            "credentials do not belong in the URL",
        ),
    ] {
        let o = run(&env, url, &["current", "res"]);
        assert_fails(&o, 78, needle);
        assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    }
    std::fs::create_dir_all(env.file("config/lockrun")).expect("config dir");
    std::fs::write(
        env.file("config/lockrun/config.toml"),
        "[default]\nbackend = \"ddb\"\n[backend.ddb]\nurl = \"dynamodb://locks?region=us-east-1\"\n\
         region = \"eu-west-1\"\n",
    )
    .expect("config");
    let o = env
        .cmd()
        .env_remove("LOCKRUN_BACKEND")
        .args(["current", "res"])
        .output()
        .expect("spawn");
    assert_fails(&o, 78, "'region' is given both in the URL (us-east-1)");
}

/// Secrets reach neither messages nor logs, even at the most verbose level.
#[test]
fn credentials_never_reach_stderr() {
    let env = Env::new();
    let secret = "wJalrXUtnFEMI-lockrun-test-secret";
    let (port, _) = ddb::fake_error(400, "UnrecognizedClientException", "bad token");
    for extra in [&[][..], &[("LOCKRUN_LOG", "trace")][..]] {
        let o = lockrun(&env, &at(port, ""))
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_SESSION_TOKEN", "session-token-lockrun-test")
            .envs(extra.iter().copied())
            .args(["current", "res"])
            .output()
            .expect("spawn");
        assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            !err.contains(secret) && !err.contains("session-token-lockrun"),
            "{err}"
        );
    }
}
