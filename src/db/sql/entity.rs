//! The `data_items` table as a sea-orm entity. Its `Model` is also what the API serializes, so the
//! bytes a write answers with are the bytes a later read answers with.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "data_items")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
