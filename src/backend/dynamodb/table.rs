//! `lockrun init`: create the table, wait until it is ACTIVE, and enable DynamoDB TTL on
//! `ttl_epoch`. Every step accepts what is already there.

use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use tokio::time::Instant;

use super::item::{GC_AFTER, RESOURCE, TTL_EPOCH};
use super::DynamoDb;
use crate::backend::Error;

/// How long `init` waits for a new table to become ACTIVE.
const ACTIVE_WITHIN: Duration = Duration::from_secs(180);

fn build_error(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("building a DynamoDB request: {e}"))
}

pub(super) async fn init(db: &DynamoDb) -> Result<String, Error> {
    let table = db.table().to_owned();
    let op = format!("creating DynamoDB table '{table}'");
    let create = db
        .client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(RESOURCE)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(RESOURCE)
                .key_type(KeyType::Hash)
                .build()
                .map_err(build_error)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send();
    let created = match db.send(&op, create).await? {
        Ok(_) => true,
        Err(e) if e.code() == Some("ResourceInUseException") => false,
        Err(e) => return Err(db.fail(&op, &e)),
    };
    let desc = wait_active(db).await?;
    check_key(&table, &desc)?;
    let ttl = ensure_ttl(db).await?;
    let what = if created {
        format!("created table '{table}' (on-demand, hash key '{RESOURCE}')")
    } else {
        format!("table '{table}' already exists")
    };
    Ok(format!("{what}; {ttl}"))
}

/// Polls DescribeTable until the table is ACTIVE.
async fn wait_active(db: &DynamoDb) -> Result<TableDescription, Error> {
    let table = db.table().to_owned();
    let op = format!("describing DynamoDB table '{table}'");
    let deadline = Instant::now() + ACTIVE_WITHIN;
    let mut pause = Duration::from_millis(100);
    loop {
        let describe = db.client.describe_table().table_name(&table).send();
        let status = match db.send(&op, describe).await? {
            Ok(out) => match out.table {
                Some(desc) => match desc.table_status() {
                    Some(TableStatus::Active) => return Ok(desc),
                    Some(TableStatus::Creating | TableStatus::Updating) | None => None,
                    Some(other) => Some(other.as_str().to_owned()),
                },
                None => None,
            },
            // Just created: it may not be visible everywhere yet.
            Err(e) if e.code() == Some("ResourceNotFoundException") => None,
            Err(e) => return Err(db.fail(&op, &e)),
        };
        if let Some(status) = status {
            return Err(Error::Config(format!(
                "DynamoDB table '{table}' is {status}, not ACTIVE"
            )));
        }
        if Instant::now() + pause > deadline {
            return Err(Error::Unavailable(format!(
                "DynamoDB table '{table}' did not become ACTIVE within {}; run 'lockrun init' again later",
                crate::duration::format(ACTIVE_WITHIN)
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// An existing table must have the hash key `resource` (S) and no sort key.
fn check_key(table: &str, desc: &TableDescription) -> Result<(), Error> {
    let keys = desc.key_schema();
    let hash_ok = keys.len() == 1
        && keys[0].attribute_name() == RESOURCE
        && keys[0].key_type() == &KeyType::Hash;
    let type_ok = desc
        .attribute_definitions()
        .iter()
        .any(|a| a.attribute_name() == RESOURCE && a.attribute_type() == &ScalarAttributeType::S);
    if hash_ok && type_ok {
        Ok(())
    } else {
        let found: Vec<String> = keys
            .iter()
            .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
            .collect();
        Err(Error::Config(format!(
            "DynamoDB table '{table}' exists but is not a lockrun table: its key is {}, not a \
             string hash key '{RESOURCE}' alone",
            crate::lease::escape(&found.join(", "))
        )))
    }
}

/// Enables TTL on `ttl_epoch` unless TTL is already on.
async fn ensure_ttl(db: &DynamoDb) -> Result<String, Error> {
    let table = db.table().to_owned();
    let op = format!("reading the TTL setting of DynamoDB table '{table}'");
    let describe = db.client.describe_time_to_live().table_name(&table).send();
    let current = match db.send(&op, describe).await? {
        Ok(out) => out.time_to_live_description,
        Err(e) => return Err(db.fail(&op, &e)),
    };
    let status = current.as_ref().and_then(|d| d.time_to_live_status());
    let attr = current.as_ref().and_then(|d| d.attribute_name());
    match (status, attr) {
        (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(TTL_EPOCH)) => {
            return Ok(format!("TTL on '{TTL_EPOCH}' already enabled"));
        }
        (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(other)) => {
            return Ok(format!(
                "TTL is enabled on attribute '{}', not '{TTL_EPOCH}', so old lockrun items will \
                 not be garbage-collected",
                crate::lease::escape(other)
            ));
        }
        _ => {}
    }
    let op = format!("enabling TTL on DynamoDB table '{table}'");
    let update = db
        .client
        .update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_EPOCH)
                .build()
                .map_err(build_error)?,
        )
        .send();
    match db.send(&op, update).await? {
        Ok(_) => Ok(format!(
            "enabled TTL on '{TTL_EPOCH}' (items are garbage-collected {} days after their last \
             lease expired)",
            GC_AFTER.as_secs() / 86_400
        )),
        Err(e) => Err(db.fail(&op, &e)),
    }
}
