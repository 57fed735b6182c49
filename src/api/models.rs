//! Request and response bodies of the `/data` operations, as the OpenAPI document shows them.

use chrono::{DateTime, Utc};
use poem_openapi::{
    Object,
    registry::{MetaSchema, MetaSchemaRef},
    types::{MaybeUndefined, ParseError, ParseFromParameter, ParseResult},
};
use serde_json::Value;

use super::error::AppError;
use super::text::Text;
use crate::store::{Changes, NewItem};

/// Largest accepted `payload`, serialized as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A stored item.
#[derive(Debug, Object)]
#[oai(rename = "Item")]
pub struct ItemDoc {
    /// Unique id, assigned by the service.
    pub id: i64,
    /// Display name, 1 to 255 characters.
    pub name: String,
    /// Free text, up to 10,000 characters; absent when not set.
    pub description: Option<String>,
    /// Any JSON value, up to 64 KiB serialized; absent when not set.
    pub payload: Option<Value>,
    /// Starts at 1 and grows by one on every change; the `ETag` is this number in quotes.
    pub version: i64,
    /// When the item was created (UTC, microsecond precision).
    pub created_at: DateTime<Utc>,
    /// When the item last changed (UTC, microsecond precision).
    pub updated_at: DateTime<Utc>,
}

/// The fields of an item that a client sets on create (`POST`) and replace (`PUT`).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ItemInput {
    /// Display name, 1 to 255 characters.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub name: Text,
    /// Free text, up to 10,000 characters.
    #[oai(validator(max_length = 10000))]
    pub description: Option<Text>,
    /// Any JSON value, up to 64 KiB serialized; no string or key in it may contain U+0000.
    pub payload: Option<Value>,
}

/// A partial update (JSON merge patch of the top-level fields): a field left out is unchanged,
/// `null` clears `description` or `payload`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ItemPatch {
    /// New display name, 1 to 255 characters; cannot be null.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub name: MaybeUndefined<Text>,
    /// New description (up to 10,000 characters), or `null` to clear it.
    #[oai(validator(max_length = 10000))]
    pub description: MaybeUndefined<Text>,
    /// New payload (up to 64 KiB serialized, no U+0000 in any string or key), or `null` to clear it.
    pub payload: MaybeUndefined<Value>,
}

/// One page of items in ascending id order.
#[derive(Debug, Object)]
#[oai(rename = "ItemPage")]
pub struct ItemPageDoc {
    /// The items of this page.
    pub items: Vec<ItemDoc>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<i64>,
}

/// Liveness or readiness.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok` when healthy.
    pub status: String,
}

impl ItemInput {
    /// Checks what the schema cannot express and converts to the store's form.
    pub fn into_new(self) -> Result<NewItem, AppError> {
        check_payload(self.payload.as_ref())?;
        Ok(NewItem {
            name: self.name.0,
            description: self.description.map(|d| d.0),
            payload: self.payload,
        })
    }
}

impl ItemPatch {
    /// Checks what the schema cannot express and converts to the store's form.
    pub fn into_changes(self) -> Result<Changes, AppError> {
        let payload: Option<Option<Value>> = self.payload.into();
        check_payload(payload.as_ref().and_then(Option::as_ref))?;
        let description = Option::<Option<Text>>::from(self.description).map(|d| d.map(|t| t.0));
        if self.name.is_null() {
            return Err(AppError::BadRequest(
                "field `name` cannot be null".to_owned(),
            ));
        }
        let name = self.name.take().map(|t| t.0);
        Ok(Changes {
            name,
            description,
            payload,
        })
    }
}

/// Whether `v` has a string or object key containing U+0000, which PostgreSQL cannot store
/// (in `text` or `jsonb`); it is refused on every backend so data stays portable.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn check_payload(payload: Option<&Value>) -> Result<(), AppError> {
    if payload.is_some_and(has_nul) {
        return Err(AppError::BadRequest(
            "field `payload` must not contain the character U+0000".to_owned(),
        ));
    }
    let size = payload.map_or(0, |v| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len()));
    if size > MAX_PAYLOAD_BYTES {
        return Err(AppError::BadRequest(format!(
            "field `payload` is {size} bytes serialized; the limit is {MAX_PAYLOAD_BYTES}"
        )));
    }
    Ok(())
}

/// `limit` of `GET /data`: items per page, 1 to `PageLimit::MAX`. The bounds are declared in
/// the schema from the same constants the parser checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(pub u64);

impl PageLimit {
    /// Largest page `GET /data` returns.
    pub const MAX: u64 = 500;
    /// Page size when none is asked for.
    pub const DEFAULT: u64 = 50;
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

scalar_type!(
    PageLimit,
    "integer(page-limit)",
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        minimum: Some(1.0),
        maximum: Some(PageLimit::MAX as f64),
        default: Some(PageLimit::DEFAULT.into()),
        ..MetaSchema::new_with_format("integer", "uint64")
    }))
);

impl ParseFromParameter for PageLimit {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        match value.parse::<u64>() {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ParseError::custom(format!(
                "must be an integer from 1 to {}",
                Self::MAX
            ))),
        }
    }
}
