//! The `/data` operations. Handlers parse, call the store, and map the outcome; item bodies are
//! the store's pre-serialized bytes, so a cache hit serializes nothing.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use poem::{
    IntoResponse, Response,
    http::{HeaderValue, StatusCode, header},
};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path, Query},
    payload::{Binary, Json},
};

use super::error::{AppError, Problem};
use super::{
    ApiTags,
    auth::{ApiKeys, WriteAuth},
    conditional::{self, IfMatch, IfNoneMatch},
    models::{ItemDoc, ItemInput, ItemPageDoc, ItemPatch, PageLimit},
};
use crate::cache::CachedItem;
use crate::store::{Store, WriteOutcome};

/// The `/data` resource.
#[derive(Clone)]
pub struct DataApi {
    pub store: Store,
    /// `Cache-Control` for item reads.
    pub cache_control: HeaderValue,
    pub keys: ApiKeys,
}

#[derive(ApiResponse)]
pub enum CreateResponse {
    /// Created; `Location` names the new item.
    #[oai(status = 201, actual_type = "Json<ItemDoc>")]
    Created(
        Binary<Bytes>,
        #[oai(header = "Location")] String,
        #[oai(header = "ETag")] String,
    ),
}

#[derive(ApiResponse)]
pub enum GetResponse {
    /// The item.
    #[oai(status = 200, actual_type = "Json<ItemDoc>")]
    Ok(
        Binary<Bytes>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The item still matches the `If-None-Match` ETag.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// No item has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// `If-Match` does not match the item's current ETag.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
}

#[derive(ApiResponse)]
pub enum WriteResponse {
    /// The item as stored now, with its new version.
    #[oai(status = 200, actual_type = "Json<ItemDoc>")]
    Ok(Binary<Bytes>, #[oai(header = "ETag")] String),
    /// No item has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// A precondition (`If-Match`, `If-None-Match`, `If-Unmodified-Since`) does not hold;
    /// nothing was changed.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
}

#[derive(ApiResponse)]
pub enum DeleteResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
    /// No item has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// A precondition (`If-Match`, `If-None-Match`, `If-Unmodified-Since`) does not hold;
    /// nothing was deleted.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
}

#[derive(ApiResponse)]
pub enum ListResponse {
    /// A page of items.
    #[oai(status = 200, actual_type = "Json<ItemPageDoc>")]
    Ok(Binary<Bytes>),
}

#[OpenApi(tag = "ApiTags::Data")]
impl DataApi {
    /// Create an item
    ///
    /// Stores a new item at version 1 and answers it with its id, `Location` and `ETag`.
    #[oai(path = "/data", method = "post", operation_id = "create_item")]
    async fn create(
        &self,
        auth: WriteAuth,
        /// Makes a retried create safe: a POST with a key seen in the last
        /// `--idempotency-ttl` answers the item the first one created (a different body with
        /// the same key is refused with 422).
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
        body: Json<ItemInput>,
    ) -> Result<CreateResponse, AppError> {
        self.keys.check(&auth)?;
        let new = body.0.into_new()?;
        let item = match idempotency_key.0 {
            Some(key) => {
                let key = self.keys.scope_idempotency_key(&auth, key);
                let fingerprint = new.fingerprint();
                self.store
                    .create_once(key, fingerprint, new)
                    .await?
                    .map_err(|_| AppError::KeyReused)?
            }
            None => self.store.create(new).await?,
        };
        let location = format!("/data/{}", item.id);
        Ok(CreateResponse::Created(
            Binary(item.body.clone()),
            location,
            item.etag_str().to_owned(),
        ))
    }

    /// Get an item
    ///
    /// Answers `304 Not Modified` when `If-None-Match` holds the current ETag, and `412` when
    /// `If-Match` is given and does not.
    #[oai(path = "/data/:id", method = "get", operation_id = "get_item")]
    async fn get(
        &self,
        /// The item's id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// ETags the client already has; a match answers 304.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
        /// Answer only if the item's current ETag is one of these (or `*`); else 412.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
    ) -> Result<GetResponse, AppError> {
        let read = self.read_item(id.0, if_none_match.0.as_deref()).await?;
        if let (Some(pre), ItemRead::Found(item) | ItemRead::NotModified(item)) =
            (&if_match.0, &read)
            && !pre.admits(item.version)
        {
            return Ok(GetResponse::PreconditionFailed(precondition_failed(id.0)));
        }
        Ok(self.get_response(read))
    }

    /// Replace an item
    ///
    /// Sets every field (an omitted optional field is cleared) and bumps the version. With
    /// `If-Match`, only if the item's ETag matches.
    #[oai(path = "/data/:id", method = "put", operation_id = "replace_item")]
    async fn replace(
        &self,
        auth: WriteAuth,
        /// The item's id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Replace only if the item's current ETag is one of these (or `*`: if it exists).
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Replace only if the item's current ETag is none of these (weak comparison; `*`:
        /// never, since the item exists).
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<IfNoneMatch>>,
        /// Replace only if the item has not changed after this HTTP-date; ignored beside
        /// `If-Match`, or if not a valid date.
        #[oai(name = "If-Unmodified-Since")]
        if_unmodified_since: Header<Option<String>>,
        body: Json<ItemInput>,
    ) -> Result<WriteResponse, AppError> {
        self.keys.check(&auth)?;
        let new = body.0.into_new()?;
        let changes = crate::store::Changes {
            name: Some(new.name),
            description: Some(new.description),
            payload: Some(new.payload),
        };
        let pre = conditional::write_precondition(
            if_match.0,
            if_none_match.0,
            if_unmodified_since.0.as_deref(),
        );
        Ok(write_response(
            id.0,
            self.store.update(id.0, changes, pre).await?,
        ))
    }

    /// Update some fields of an item
    ///
    /// A JSON merge patch of the top-level fields (`application/json` or
    /// `application/merge-patch+json`); bumps the version. With `If-Match`, only if it matches.
    #[oai(path = "/data/:id", method = "patch", operation_id = "update_item")]
    async fn patch(
        &self,
        auth: WriteAuth,
        /// The item's id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Update only if the item's current ETag is one of these (or `*`: if it exists).
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Update only if the item's current ETag is none of these (weak comparison; `*`:
        /// never, since the item exists).
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<IfNoneMatch>>,
        /// Update only if the item has not changed after this HTTP-date; ignored beside
        /// `If-Match`, or if not a valid date.
        #[oai(name = "If-Unmodified-Since")]
        if_unmodified_since: Header<Option<String>>,
        body: Json<ItemPatch>,
    ) -> Result<WriteResponse, AppError> {
        self.keys.check(&auth)?;
        let changes = body.0.into_changes()?;
        let pre = conditional::write_precondition(
            if_match.0,
            if_none_match.0,
            if_unmodified_since.0.as_deref(),
        );
        Ok(write_response(
            id.0,
            self.store.update(id.0, changes, pre).await?,
        ))
    }

    /// Delete an item
    ///
    /// With `If-Match`, only if the item's ETag matches.
    #[oai(path = "/data/:id", method = "delete", operation_id = "delete_item")]
    async fn delete(
        &self,
        auth: WriteAuth,
        /// The item's id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Delete only if the item's current ETag is one of these (or `*`: if it exists).
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Delete only if the item's current ETag is none of these (weak comparison; `*`:
        /// never, since the item exists).
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<IfNoneMatch>>,
        /// Delete only if the item has not changed after this HTTP-date; ignored beside
        /// `If-Match`, or if not a valid date.
        #[oai(name = "If-Unmodified-Since")]
        if_unmodified_since: Header<Option<String>>,
    ) -> Result<DeleteResponse, AppError> {
        self.keys.check(&auth)?;
        let pre = conditional::write_precondition(
            if_match.0,
            if_none_match.0,
            if_unmodified_since.0.as_deref(),
        );
        Ok(match self.store.delete(id.0, pre).await? {
            WriteOutcome::Done(()) => DeleteResponse::Deleted,
            WriteOutcome::NotFound => DeleteResponse::NotFound(not_found(id.0)),
            WriteOutcome::Conflict => DeleteResponse::PreconditionFailed(precondition_failed(id.0)),
        })
    }

    /// List items
    ///
    /// Keyset pagination in ascending id order: pass the previous page's `next` as `after`.
    #[oai(path = "/data", method = "get", operation_id = "list_items")]
    async fn list(
        &self,
        /// Items per page (default 50).
        limit: Query<Option<PageLimit>>,
        /// Only items with an id greater than this (the previous page's `next`).
        after: Query<Option<i64>>,
        /// Only items updated at or after this instant (RFC 3339).
        updated_since: Query<Option<DateTime<Utc>>>,
    ) -> Result<ListResponse, AppError> {
        let limit = limit.0.unwrap_or_default().0;
        let (items, next) = self
            .store
            .list_page(after.0, updated_since.0, limit)
            .await?;
        let body = serde_json::to_vec(&Page { items, next })
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(ListResponse::Ok(Binary(Bytes::from(body))))
    }
}

#[derive(serde::Serialize)]
struct Page {
    items: Vec<crate::db::Model>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
}

fn write_response(id: i64, outcome: WriteOutcome<Arc<CachedItem>>) -> WriteResponse {
    match outcome {
        WriteOutcome::Done(item) => {
            WriteResponse::Ok(Binary(item.body.clone()), item.etag_str().to_owned())
        }
        WriteOutcome::NotFound => WriteResponse::NotFound(not_found(id)),
        WriteOutcome::Conflict => WriteResponse::PreconditionFailed(precondition_failed(id)),
    }
}

/// What a read of one item found, before it is written as a response.
pub enum ItemRead {
    /// The item: 200.
    Found(Arc<CachedItem>),
    /// The item still matches `If-None-Match`: 304.
    NotModified(Arc<CachedItem>),
    /// No item has this id: 404.
    NotFound(i64),
}

impl DataApi {
    /// `GET /data/{id}` once its parameters are parsed. The operation above and the direct lane
    /// for reads (`dispatch::Dispatch`) both decide through this.
    pub async fn read_item(
        &self,
        id: i64,
        if_none_match: Option<&str>,
    ) -> Result<ItemRead, AppError> {
        Ok(answer_read(id, self.store.get(id).await?, if_none_match))
    }

    /// `read_item` for an edge cache's miss: the item as the primary holds it now, whatever
    /// this replica's cache holds (see `cache::edge`, rule 5).
    pub async fn read_item_fresh(
        &self,
        id: i64,
        if_none_match: Option<&str>,
    ) -> Result<ItemRead, AppError> {
        Ok(answer_read(
            id,
            self.store.get_fresh(id).await?,
            if_none_match,
        ))
    }

    /// `read` as the operation declares it in the OpenAPI document.
    fn get_response(&self, read: ItemRead) -> GetResponse {
        let cache_control = || text(&self.cache_control);
        match read {
            ItemRead::Found(item) => GetResponse::Ok(
                Binary(item.body.clone()),
                item.etag_str().to_owned(),
                cache_control(),
            ),
            ItemRead::NotModified(item) => {
                GetResponse::NotModified(item.etag_str().to_owned(), cache_control())
            }
            ItemRead::NotFound(id) => GetResponse::NotFound(not_found(id)),
        }
    }

    /// `read` as a response, written directly: the same status, headers and body as
    /// `get_response` (a test compares the two lanes), with the header names and values made
    /// once instead of per request.
    pub fn read_response(&self, read: ItemRead) -> Response {
        let head = |status, item: &CachedItem| {
            let head = Response::builder().status(status);
            // Shares the cached bytes; digits in quotes are always a valid value.
            match HeaderValue::from_maybe_shared(item.etag.clone()) {
                Ok(etag) => head.header(header::ETAG, etag),
                Err(_) => head,
            }
            .header(header::CACHE_CONTROL, self.cache_control.clone())
        };
        match read {
            ItemRead::Found(item) => head(StatusCode::OK, &item)
                .header(header::CONTENT_TYPE, HeaderValue::from_static(JSON))
                .body(item.body.clone()),
            ItemRead::NotModified(item) => head(StatusCode::NOT_MODIFIED, &item).finish(),
            read @ ItemRead::NotFound(_) => self.get_response(read).into_response(),
        }
    }
}

/// What a read of item `id` that found `found` answers.
fn answer_read(id: i64, found: Option<Arc<CachedItem>>, if_none_match: Option<&str>) -> ItemRead {
    match found {
        None => ItemRead::NotFound(id),
        // Only a conditional read looks at the ETag's text.
        Some(item)
            if if_none_match.is_some_and(|h| conditional::none_match(h, item.etag_str())) =>
        {
            ItemRead::NotModified(item)
        }
        Some(item) => ItemRead::Found(item),
    }
}

/// The content type of an item, as poem-openapi writes it for `Json`.
const JSON: &str = "application/json; charset=utf-8";

/// A header value as text; the values we send are visible ASCII (the configuration checks).
fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn not_found(id: i64) -> Json<Problem> {
    Json(Problem::new(
        poem::http::StatusCode::NOT_FOUND,
        "not-found",
        format!("no item has id {id}"),
    ))
}

fn precondition_failed(id: i64) -> Json<Problem> {
    Json(Problem::new(
        poem::http::StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        format!(
            "item {id} does not meet the request's preconditions (If-Match, If-None-Match or \
             If-Unmodified-Since); fetch it again for the current ETag"
        ),
    ))
}
