//! The scenarios. Every request checks its status and body, so a wrong answer counts as a failure,
//! not a success. Parameters are set once with `configure` before goose starts: `loadtests`
//! reads them from the environment (goose owns the command line), `loadtests compare` from its
//! own flags:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LOADTEST_MIN_ID` | 1 | first seeded id |
//! | `LOADTEST_MAX_ID` | 10000 | last seeded id (`read_cold` draws from the whole range) |
//! | `LOADTEST_HOT_IDS` | 100 | ids `MIN_ID..MIN_ID+HOT_IDS` form the hot set (`read_hot`, most of `mixed`) |
//! | `LOADTEST_READ_WEIGHT` | 9 | `mixed`: weight of reads |
//! | `LOADTEST_WRITE_WEIGHT` | 1 | `mixed`: weight of writes |
//! | `LOADTEST_API_KEY` | unset | API key sent with writes (`Authorization: Bearer`) |

use std::sync::OnceLock;

use goose::prelude::*;
use rand::Rng;
use serde_json::{Value, json};

/// Scenario parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub min_id: i64,
    pub max_id: i64,
    pub hot_ids: i64,
    pub read_weight: usize,
    pub write_weight: usize,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Params {
    /// The parameters the `LOADTEST_*` variables give, with their defaults.
    pub fn from_env() -> Self {
        Self {
            min_id: env("LOADTEST_MIN_ID", 1),
            max_id: env("LOADTEST_MAX_ID", 10_000),
            hot_ids: env("LOADTEST_HOT_IDS", 100),
            read_weight: env("LOADTEST_READ_WEIGHT", 9),
            write_weight: env("LOADTEST_WRITE_WEIGHT", 1),
        }
    }

    /// Ids at least 1, a range of at least one id, a hot set of at least one.
    fn normalized(self) -> Self {
        let min_id = self.min_id.max(1);
        Self {
            min_id,
            max_id: self.max_id.max(min_id),
            hot_ids: self.hot_ids.max(1),
            ..self
        }
    }
}

static PARAMS: OnceLock<Params> = OnceLock::new();

/// Sets the parameters for every scenario; the first call wins (call it before goose starts).
pub fn configure(params: Params) {
    let _ = PARAMS.set(params.normalized());
}

/// The configured parameters (the environment's, if `configure` was never called).
pub fn params() -> Params {
    *PARAMS.get_or_init(|| Params::from_env().normalized())
}

/// `LOADTEST_API_KEY`: sent as `Authorization: Bearer` with writes, for a service with keys.
fn api_key() -> Option<&'static str> {
    static KEY: OnceLock<Option<String>> = OnceLock::new();
    KEY.get_or_init(|| {
        std::env::var("LOADTEST_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
    })
    .as_deref()
}

fn hot_id() -> i64 {
    let p = params();
    rand::rng().random_range(p.min_id..p.min_id + p.hot_ids.min(p.max_id - p.min_id + 1))
}

fn any_id() -> i64 {
    let p = params();
    rand::rng().random_range(p.min_id..=p.max_id)
}

/// Every scenario, by name.
pub fn all() -> Result<Vec<Scenario>, GooseError> {
    let p = params();
    Ok(vec![
        scenario!("read_hot")
            .register_transaction(transaction!(read_hot).set_name("GET /data/{id} hot")),
        scenario!("read_cold")
            .register_transaction(transaction!(read_cold).set_name("GET /data/{id} cold")),
        scenario!("write")
            .register_transaction(
                transaction!(put_random)
                    .set_name("PUT /data/{id}")
                    .set_weight(2)?,
            )
            .register_transaction(
                transaction!(patch_random)
                    .set_name("PATCH /data/{id}")
                    .set_weight(2)?,
            )
            .register_transaction(transaction!(create).set_name("POST /data").set_weight(1)?),
        scenario!("mixed")
            .register_transaction(
                transaction!(mixed_read)
                    .set_name("GET /data/{id} mixed")
                    .set_weight(p.read_weight.max(1))?,
            )
            .register_transaction(
                transaction!(mixed_write)
                    .set_name("PUT /data/{id} mixed")
                    .set_weight(p.write_weight.max(1))?,
            ),
        scenario!("lifecycle").register_transaction(transaction!(lifecycle).set_name("lifecycle")),
    ])
}

/// What a request must answer: its status, and a check of its JSON body.
struct Expect<'a> {
    status: u16,
    valid: &'a (dyn Fn(&Value) -> bool + Sync),
    what: &'a str,
}

fn any(_: &Value) -> bool {
    true
}

impl<'a> Expect<'a> {
    fn status(status: u16) -> Self {
        Self {
            status,
            valid: &any,
            what: "",
        }
    }

    fn body(status: u16, what: &'a str, valid: &'a (dyn Fn(&Value) -> bool + Sync)) -> Self {
        Self {
            status,
            valid,
            what,
        }
    }
}

/// Sends one request; a wrong status or a body failing the check marks it failed. Returns the
/// parsed body of a correct answer (`Null` when empty).
async fn call(
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    body: Option<&Value>,
    expect: Expect<'_>,
) -> Result<Option<Value>, Box<TransactionError>> {
    let mut builder = user.get_request_builder(&method, path)?;
    if method != GooseMethod::Get
        && let Some(key) = api_key()
    {
        builder = builder.bearer_auth(key);
    }
    if let Some(body) = body {
        builder = builder.json(body);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .expect_status_code(expect.status)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    let Ok(response) = goose.response else {
        return Ok(None);
    };
    if response.status().as_u16() != expect.status {
        return Ok(None);
    }
    let text = response.text().await.unwrap_or_default();
    let value = if text.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_str(&text)
    };
    match value {
        Ok(v) if (expect.valid)(&v) => Ok(Some(v)),
        Ok(_) => {
            user.set_failure(expect.what, &mut goose.request, None, Some(&text))?;
            Ok(None)
        }
        Err(_) => {
            user.set_failure("body is not JSON", &mut goose.request, None, Some(&text))?;
            Ok(None)
        }
    }
}

async fn get_item(user: &mut GooseUser, id: i64, name: &str) -> TransactionResult {
    let valid = |b: &Value| b["id"] == id && b["version"].as_i64().is_some_and(|v| v >= 1);
    call(
        user,
        GooseMethod::Get,
        &format!("/data/{id}"),
        name,
        None,
        Expect::body(200, "wrong item", &valid),
    )
    .await?;
    Ok(())
}

async fn read_hot(user: &mut GooseUser) -> TransactionResult {
    get_item(user, hot_id(), "GET /data/{id} hot").await
}

async fn read_cold(user: &mut GooseUser) -> TransactionResult {
    get_item(user, any_id(), "GET /data/{id} cold").await
}

async fn mixed_read(user: &mut GooseUser) -> TransactionResult {
    // Four reads in five go to the hot set, the rest anywhere.
    let id = if rand::rng().random_bool(0.8) {
        hot_id()
    } else {
        any_id()
    };
    get_item(user, id, "GET /data/{id} mixed").await
}

async fn put(user: &mut GooseUser, id: i64, name: &str) -> TransactionResult {
    let new_name = format!("loadtest {}", rand::rng().random::<u32>());
    let body = json!({"name": new_name, "description": "written by goose", "payload": {"n": id}});
    let valid =
        |b: &Value| b["name"] == new_name.as_str() && b["version"].as_i64().is_some_and(|v| v > 1);
    let expect = Expect::body(200, "PUT answered other data", &valid);
    call(
        user,
        GooseMethod::Put,
        &format!("/data/{id}"),
        name,
        Some(&body),
        expect,
    )
    .await?;
    Ok(())
}

async fn put_random(user: &mut GooseUser) -> TransactionResult {
    put(user, any_id(), "PUT /data/{id}").await
}

async fn mixed_write(user: &mut GooseUser) -> TransactionResult {
    put(user, hot_id(), "PUT /data/{id} mixed").await
}

async fn patch_random(user: &mut GooseUser) -> TransactionResult {
    let id = any_id();
    let description = format!("patched {}", rand::rng().random::<u32>());
    let body = json!({"description": description});
    let valid = |b: &Value| b["description"] == description.as_str() && b["id"] == id;
    let expect = Expect::body(200, "PATCH not applied", &valid);
    call(
        user,
        GooseMethod::Patch,
        &format!("/data/{id}"),
        "PATCH /data/{id}",
        Some(&body),
        expect,
    )
    .await?;
    Ok(())
}

async fn create(user: &mut GooseUser) -> TransactionResult {
    let body = json!({"name": "created by goose", "payload": {"tags": ["load"]}});
    let valid = |b: &Value| {
        b["version"] == 1 && b["id"].as_i64().is_some() && b["name"] == "created by goose"
    };
    call(
        user,
        GooseMethod::Post,
        "/data",
        "POST /data",
        Some(&body),
        Expect::body(201, "bad item", &valid),
    )
    .await?;
    Ok(())
}

/// POST → GET → PUT → GET (sees the new value) → DELETE → GET (404), each step checked.
async fn lifecycle(user: &mut GooseUser) -> TransactionResult {
    let name = format!("life {}", rand::rng().random::<u32>());
    let valid = |b: &Value| b["name"] == name.as_str() && b["version"] == 1;
    let expect = Expect::body(201, "bad item", &valid);
    let Some(item) = call(
        user,
        GooseMethod::Post,
        "/data",
        "lifecycle POST",
        Some(&json!({"name": name})),
        expect,
    )
    .await?
    else {
        return Ok(());
    };
    let path = format!("/data/{}", item["id"]);
    let same = |b: &Value| *b == item;
    call(
        user,
        GooseMethod::Get,
        &path,
        "lifecycle GET",
        None,
        Expect::body(200, "GET differs from POST", &same),
    )
    .await?;
    let put_body = json!({"name": format!("{name} v2")});
    let v2 = |b: &Value| b["name"] == put_body["name"] && b["version"] == 2;
    let put = Expect::body(200, "PUT not applied", &v2);
    let Some(updated) = call(
        user,
        GooseMethod::Put,
        &path,
        "lifecycle PUT",
        Some(&put_body),
        put,
    )
    .await?
    else {
        return Ok(());
    };
    let fresh = |b: &Value| *b == updated;
    let expect = Expect::body(200, "stale read after PUT", &fresh);
    call(
        user,
        GooseMethod::Get,
        &path,
        "lifecycle GET after PUT",
        None,
        expect,
    )
    .await?;
    call(
        user,
        GooseMethod::Delete,
        &path,
        "lifecycle DELETE",
        None,
        Expect::status(204),
    )
    .await?;
    call(
        user,
        GooseMethod::Get,
        &path,
        "lifecycle GET after DELETE",
        None,
        Expect::status(404),
    )
    .await?;
    Ok(())
}
