//! The OpenAPI document as served at `/openapi.json` and shown by Swagger UI at `/docs`.
//!
//! poem-openapi cannot say two things the server does: request bodies refuse unknown fields
//! (`deny_unknown_fields` does not emit `additionalProperties: false`), and `description` may
//! be `null` (it clears the field). Both are added here, so generated clients and fuzzers see
//! the contract the server enforces.

use poem::{Endpoint, Response, Route, endpoint::make_sync, get, web::Html};
use serde_json::{Value, json};

/// Request bodies whose unknown fields are refused, and their fields that accept `null`.
const STRICT_BODIES: [(&str, &[&str]); 2] = [
    ("ItemInput", &["description"]),
    ("ItemPatch", &["description"]),
];

/// `raw` (poem-openapi's document) with the additions above.
pub fn document(raw: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(raw) else {
        return raw.to_owned();
    };
    for (name, nullable) in STRICT_BODIES {
        let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}")) else {
            continue;
        };
        schema["additionalProperties"] = json!(false);
        for field in nullable {
            if let Some(prop) = schema.pointer_mut(&format!("/properties/{field}")) {
                prop["nullable"] = json!(true);
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| raw.to_owned())
}

/// `/openapi.json`.
pub fn json_endpoint(document: String) -> impl Endpoint + use<> {
    get(make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    }))
}

/// `/docs`: Swagger UI over `document`. `ui_html` is poem-openapi's page, which embeds the raw
/// document verbatim; it is swapped for ours. If a poem-openapi release embeds it differently,
/// this fails (and so does start-up) instead of silently showing the unpatched document.
pub fn docs_endpoint(
    ui_html: &str,
    raw: &str,
    document: &str,
) -> anyhow::Result<impl Endpoint + use<>> {
    anyhow::ensure!(
        ui_html.matches(raw).count() == 1,
        "Swagger UI's page does not embed the OpenAPI document verbatim once; /docs cannot show the served document"
    );
    let html = ui_html.replacen(raw, document, 1);
    Ok(Route::new().at("/", get(make_sync(move |_| Html(html.clone())))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_refuse_a_page_without_the_document() {
        assert!(docs_endpoint("<html>{}</html>", "{}", "{ }").is_ok());
        assert!(docs_endpoint("<html>escaped</html>", "{}", "{ }").is_err());
    }

    #[test]
    fn strict_bodies_refuse_extras_and_allow_null_description() {
        let raw = r#"{"components":{"schemas":{"ItemInput":{"properties":{"description":{"type":"string"}}},"ItemPatch":{"properties":{}}}}}"#;
        let doc: Value = serde_json::from_str(&document(raw)).unwrap();
        let input = &doc["components"]["schemas"]["ItemInput"];
        assert_eq!(input["additionalProperties"], json!(false));
        assert_eq!(input["properties"]["description"]["nullable"], json!(true));
        assert_eq!(
            doc["components"]["schemas"]["ItemPatch"]["additionalProperties"],
            json!(false)
        );
    }
}
