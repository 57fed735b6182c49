//! `Text`: a JSON string, strictly, and without U+0000. poem-openapi's `String` turns numbers
//! and booleans into strings; a demanding client wants `{"name": 5}` rejected as a wrong type
//! instead. PostgreSQL cannot store U+0000 in text, so it is refused here, at parse time, and the
//! schema says so with a `pattern` (poem-openapi's `pattern` validator would compile its regex
//! on every check, a measurable share of a PUT's CPU: see BENCHMARKS.md).

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON},
};
use serde_json::Value;

/// The schema's statement of what `parse_from_json` refuses: any U+0000.
const NO_NUL: &str = r"^[^\x00]*$";

/// A string field that accepts only JSON strings without U+0000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

scalar_type!(Text, String::name(), schema());

fn schema() -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        pattern: Some(NO_NUL.to_owned()),
        ..MetaSchema::new("string")
    }))
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) if s.contains('\0') => Err(ParseError::custom(format!(
                "must match pattern {NO_NUL:?}: U+0000 is not allowed"
            ))),
            Some(Value::String(s)) => Ok(Text(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}
