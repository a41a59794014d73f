//! The backend conformance suite against DynamoDB (a local moto server), one table per test.
#![cfg(feature = "dynamodb")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::dynamodb::{self as ddb, s};
use common::server::Server;
use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::dynamodb::DynamoDb;
use lockrun::backend::Backend;

/// A fresh table, created through the backend's own `init()`.
async fn new_table(server: &Server) -> String {
    let table = ddb::table();
    let db = DynamoDb::with_client(ddb::client(server), &table).expect("backend");
    let said = db
        .init()
        .await
        .expect("init")
        .expect("init says what it did");
    assert!(said.contains("created table"), "{said}");
    table
}

/// A suite whose instances turn rule (a) on with `skew` as the allowance, or leave it off.
fn suite(server: &'static Server, table: &str, skew: Option<Duration>) -> Suite {
    let table = table.to_owned();
    Suite::new(common::server::prefix(), move || {
        let table = table.clone();
        async move {
            DynamoDb::with_client(ddb::client(server), &table)
                .map(|db| match skew {
                    Some(skew) => db.skew_allowance(skew),
                    None => db,
                })
                .map(|db| Arc::new(db) as Arc<dyn Backend>)
        }
        .boxed()
    })
}

/// Puts a foreign item (wrong types, missing attributes) where the lease was.
fn corrupt(server: &'static Server, table: &str, suite: Suite) -> Suite {
    let table = table.to_owned();
    suite.corrupt_with(move |resource| {
        let (client, table) = (ddb::client(server), table.clone());
        async move {
            let foreign = ddb::item(&[
                ("resource", s(resource.as_str())),
                ("token", s("not a number")),
                ("owner", s("some other tool")),
            ]);
            client
                .put_item()
                .table_name(&table)
                .set_item(Some(foreign))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("put_item: {e}"))
        }
        .boxed()
    })
}

/// The whole suite as configured by default (rule (a) off): every takeover here is rule (b),
/// one TTL after the taker first saw the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_backend_passes_the_suite() {
    let server = ddb::moto();
    let table = new_table(server).await;
    let short = Duration::from_secs(1);
    let report = corrupt(server, &table, suite(server, &table, None))
        .expiry(short, short + Duration::from_secs(1))
        .run_all()
        .await;
    report.assert_passed();
    for (name, outcome) in &report.results {
        match name {
            &"watch_fires_on_release" => assert!(matches!(outcome, Outcome::Skipped(_))),
            _ => assert_eq!(*outcome, Outcome::Passed, "{name}"),
        }
    }
}

/// With rule (a) turned on and no allowance, it takes over right at the stored expiry, before
/// rule (b) could (the window is shorter than a TTL after the first sighting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_takes_over_at_the_expiry_without_skew() {
    let server = ddb::moto();
    let table = new_table(server).await;
    let s = suite(server, &table, Some(Duration::ZERO))
        .expiry(Duration::from_secs(1), Duration::from_millis(500));
    for property in [
        "expired_lease_can_be_taken",
        "renew_after_expiry_is_lost",
        "fencing_tokens_increase",
    ] {
        assert_eq!(s.run(property).await, Outcome::Passed, "{property}");
    }
}

/// A table with the wrong key is refused by `init`, and ordinary verbs say it is not a lockrun
/// table.
#[tokio::test]
async fn init_refuses_a_foreign_table() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let server = ddb::moto();
    let table = ddb::table();
    ddb::client(server)
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create_table");
    let db = DynamoDb::with_client(ddb::client(server), &table).expect("backend");
    let e = db.init().await.unwrap_err();
    assert!(
        matches!(&e, lockrun::backend::Error::Config(m) if m.contains("not a lockrun table")),
        "{e:?}"
    );
    let r = lockrun::lease::Resource::new("x").unwrap();
    let e = db.current(&r).await.unwrap_err();
    assert!(
        matches!(&e, lockrun::backend::Error::Config(m) if m.contains("hash key 'resource'")),
        "{e:?}"
    );
}
