//! Conditional request headers (RFC 9110 §13), evaluated as an origin server must: `If-Match`
//! on reads and writes, `If-None-Match` on reads (304) and writes (412), `If-Unmodified-Since`
//! on writes without `If-Match`. ETags are the item's version in quotes, e.g. `"3"`.

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromParameter, ParseResult},
};

use crate::store::Precondition;

/// The `If-Match` grammar (`*`, or a list of entity tags), as the OpenAPI document declares it.
/// `IfMatch::parse` accepts exactly this language.
const IF_MATCH_PATTERN: &str =
    r#"^[ \t]*(\*|(W/)?"[!#-~]*"([ \t]*,[ \t]*(W/)?"[!#-~]*")*)?[ \t]*$"#;

/// A parsed `If-Match` header: which current versions a write accepts. Weak tags never match
/// (writes use strong comparison); tags that are not versions of ours match nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch(pub Precondition);

impl IfMatch {
    /// Whether an item at `version` meets it (a read checks the item it found).
    pub fn admits(&self, version: i64) -> bool {
        match &self.0 {
            Precondition::VersionIn(v) => v.contains(&version),
            _ => true,
        }
    }

    /// Parses the header; `None` if it is not `*` or a list of entity tags.
    fn parse(value: &str) -> Option<Self> {
        Some(Self(match value.trim_matches(OWS) {
            "*" => Precondition::Exists,
            tags => Precondition::VersionIn(tag_versions(tags, Comparison::Strong)?),
        }))
    }
}

/// Optional whitespace around list elements (RFC 9110 §5.6.3).
const OWS: [char; 2] = [' ', '\t'];

/// How entity tags compare (RFC 9110 §8.8.3.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Weak tags match nothing (`If-Match`).
    Strong,
    /// Weak tags match as their strong form (`If-None-Match`).
    Weak,
}

/// The versions a list of entity tags names (tags that are not versions of ours name none);
/// `None` if `value` is not such a list.
fn tag_versions(value: &str, comparison: Comparison) -> Option<Vec<i64>> {
    let mut versions = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (weak, tag) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let tag = tag.strip_prefix('"')?;
        let end = tag.find('"')?;
        let (opaque, after) = (&tag[..end], &tag[end + 1..]);
        if !opaque
            .bytes()
            .all(|b| b == b'!' || (b'#'..=b'~').contains(&b))
        {
            return None;
        }
        let counts = !weak || comparison == Comparison::Weak;
        if let Some(v) = version_of(opaque).filter(|_| counts) {
            versions.push(v);
        }
        rest = after.trim_start_matches(OWS);
        if !rest.is_empty() {
            rest = rest.strip_prefix(',')?.trim_start_matches(OWS);
            if rest.is_empty() {
                return None;
            }
        }
    }
    Some(versions)
}

/// A parsed `If-None-Match` header on a write: `*` (never met: a write needs the item to exist)
/// or the versions the item must not be at (weak comparison, as RFC 9110 §13.1.2 says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfNoneMatch(pub Precondition);

impl IfNoneMatch {
    fn parse(value: &str) -> Option<Self> {
        Some(Self(match value.trim_matches(OWS) {
            "*" => Precondition::VersionIn(Vec::new()),
            tags => Precondition::VersionNotIn(tag_versions(tags, Comparison::Weak)?),
        }))
    }
}

scalar_type!(
    IfNoneMatch,
    "string(if-none-match)",
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        pattern: Some(IF_MATCH_PATTERN.to_owned()),
        ..MetaSchema::new("string")
    }))
);

impl ParseFromParameter for IfNoneMatch {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).ok_or_else(|| {
            ParseError::custom(format!(
                "`If-None-Match` must be `*` or a list of entity tags such as `\"3\"`, not `{value}`"
            ))
        })
    }
}

/// What a write requires, from its conditional headers, in RFC 9110 §13.2.2's order:
/// `If-Match`, else `If-Unmodified-Since` (ignored unless a valid HTTP-date); then
/// `If-None-Match`.
pub fn write_precondition(
    if_match: Option<IfMatch>,
    if_none_match: Option<IfNoneMatch>,
    if_unmodified_since: Option<&str>,
) -> Precondition {
    let mut all = Vec::new();
    match (if_match, if_unmodified_since.and_then(http_date)) {
        (Some(m), _) => all.push(m.0),
        (None, Some(at)) => all.push(Precondition::UnmodifiedSince(at)),
        (None, None) => {}
    }
    if let Some(n) = if_none_match {
        all.push(n.0);
    }
    match all.len() {
        0 => Precondition::None,
        1 => all.remove(0),
        _ => Precondition::All(all),
    }
}

/// An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`), or `None` if the text is not one.
fn http_date(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

/// The version an opaque tag names, if it is one of ours (digits, no leading zero).
fn version_of(opaque: &str) -> Option<i64> {
    let canonical = !opaque.is_empty()
        && opaque.bytes().all(|b| b.is_ascii_digit())
        && !(opaque.len() > 1 && opaque.starts_with('0'));
    canonical.then(|| opaque.parse().ok()).flatten()
}

scalar_type!(
    IfMatch,
    "string(if-match)",
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        pattern: Some(IF_MATCH_PATTERN.to_owned()),
        ..MetaSchema::new("string")
    }))
);

impl ParseFromParameter for IfMatch {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).ok_or_else(|| {
            ParseError::custom(format!(
                "`If-Match` must be `*` or a list of entity tags such as `\"3\"`, not `{value}`"
            ))
        })
    }
}

/// Whether `If-None-Match` matches the current `etag` (weak comparison), so the answer is 304.
/// Entity tags are read whole, so a comma inside one (`"a,b"`) does not split it; a header that
/// is not `*` or a list of tags matches nothing.
pub fn none_match(header: &str, etag: &str) -> bool {
    let mut rest = header.trim_matches(OWS);
    if rest == "*" {
        return true;
    }
    while !rest.is_empty() {
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(end) = tag.strip_prefix('"').and_then(|t| t.find('"')) else {
            return false;
        };
        // The tag with its quotes: `"…"`.
        if &tag[..end + 2] == etag {
            return true;
        }
        rest = tag[end + 2..].trim_start_matches(OWS);
        if !rest.is_empty() {
            let Some(next) = rest.strip_prefix(',') else {
                return false;
            };
            rest = next.trim_start_matches(OWS);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(header: &str) -> Option<Precondition> {
        IfMatch::parse(header).map(|h| h.0)
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(write_precondition(None, None, None), Precondition::None);
        assert_eq!(pre(" * "), Some(Precondition::Exists));
        assert_eq!(
            pre("\"3\", \"5\""),
            Some(Precondition::VersionIn(vec![3, 5]))
        );
        assert_eq!(
            pre("\"3\",\t\"5\" "),
            Some(Precondition::VersionIn(vec![3, 5]))
        );
        assert_eq!(pre("W/\"3\""), Some(Precondition::VersionIn(vec![])));
        assert_eq!(pre("\"abc\""), Some(Precondition::VersionIn(vec![])));
        assert_eq!(pre("\"03\", \"+3\""), Some(Precondition::VersionIn(vec![])));
        assert_eq!(pre("\"a,b\""), Some(Precondition::VersionIn(vec![])));
        assert_eq!(pre(""), Some(Precondition::VersionIn(vec![])));
    }

    /// What the declared pattern refuses, the parser refuses too (they are one grammar).
    #[test]
    fn if_match_refuses_what_the_pattern_refuses() {
        for bad in [
            "3",
            "\"3\", 7",
            "\"3\",",
            ",\"3\"",
            "\"3\" \"4\"",
            "**",
            "w/\"3\"",
            "\"unterminated",
            "\"sp ace\"",
            "\"3\"x",
        ] {
            assert_eq!(pre(bad), None, "{bad}");
        }
    }

    #[test]
    fn write_preconditions_follow_the_rfc_order() {
        let inm = |v: &str| IfNoneMatch::parse(v);
        assert_eq!(
            inm("W/\"3\", \"4\"").map(|n| n.0),
            Some(Precondition::VersionNotIn(vec![3, 4]))
        );
        assert_eq!(inm("*").map(|n| n.0), Some(Precondition::VersionIn(vec![])));
        assert_eq!(inm("3"), None);
        assert_eq!(
            inm("\"3W/\"").map(|n| n.0),
            Some(Precondition::VersionNotIn(vec![])),
            "not one of our tags"
        );
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let at = http_date(date).unwrap();
        assert_eq!(
            write_precondition(None, None, Some(date)),
            Precondition::UnmodifiedSince(at)
        );
        assert_eq!(
            write_precondition(IfMatch::parse("\"2\""), None, Some(date)),
            Precondition::VersionIn(vec![2]),
            "If-Unmodified-Since is ignored beside If-Match"
        );
        assert_eq!(
            write_precondition(None, None, Some("yesterday")),
            Precondition::None,
            "not a date: ignored"
        );
        assert_eq!(
            write_precondition(IfMatch::parse("*"), inm("\"5\""), None),
            Precondition::All(vec![
                Precondition::Exists,
                Precondition::VersionNotIn(vec![5])
            ])
        );
    }

    #[test]
    fn none_match_forms() {
        assert!(none_match("\"2\"", "\"2\""));
        assert!(none_match("\"1\", W/\"2\"", "\"2\""));
        assert!(none_match("*", "\"2\""));
        assert!(!none_match("\"1\"", "\"2\""));
        // A comma inside a tag is part of it (issue 25, item 10).
        assert!(!none_match("\"2,\"", "\"2\""));
        assert!(!none_match("\"x,\"2\"\"", "\"2\""));
        assert!(none_match("\"a,b\", \"2\"", "\"2\""));
        assert!(!none_match("2", "\"2\""), "not a tag");
        assert!(!none_match("", "\"2\""));
    }
}
