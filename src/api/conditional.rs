//! Conditional request headers (RFC 9110 §13): `If-Match` for writes, `If-None-Match` for reads.
//! ETags are the item's version in quotes, e.g. `"3"`.

use crate::store::Precondition;

/// Turns an `If-Match` header into the versions a write accepts. Weak tags never match (strong
/// comparison); tags that are not versions of ours match nothing.
pub fn if_match(header: Option<&str>) -> Precondition {
    let Some(header) = header else {
        return Precondition::None;
    };
    if header.trim() == "*" {
        return Precondition::Exists;
    }
    let versions = header
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.starts_with("W/"))
        .filter_map(|tag| {
            tag.strip_prefix('"')?
                .strip_suffix('"')?
                .parse::<i64>()
                .ok()
        })
        .collect();
    Precondition::VersionIn(versions)
}

/// Whether `If-None-Match` matches the current `etag` (weak comparison), so the answer is 304.
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    header.is_some_and(|h| {
        h.trim() == "*"
            || h.split(',')
                .map(|t| t.trim())
                .any(|t| t.strip_prefix("W/").unwrap_or(t) == etag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(None), Precondition::None);
        assert_eq!(if_match(Some(" * ")), Precondition::Exists);
        assert_eq!(
            if_match(Some("\"3\", \"5\"")),
            Precondition::VersionIn(vec![3, 5])
        );
        assert_eq!(if_match(Some("W/\"3\"")), Precondition::VersionIn(vec![]));
        assert_eq!(
            if_match(Some("\"abc\", 7")),
            Precondition::VersionIn(vec![])
        );
    }

    #[test]
    fn none_match_forms() {
        assert!(none_match(Some("\"2\""), "\"2\""));
        assert!(none_match(Some("\"1\", W/\"2\""), "\"2\""));
        assert!(none_match(Some("*"), "\"2\""));
        assert!(!none_match(Some("\"1\""), "\"2\""));
        assert!(!none_match(None, "\"2\""));
    }
}
