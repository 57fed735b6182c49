//! API keys for writes. When keys are configured, POST/PUT/PATCH/DELETE need
//! `Authorization: Bearer <key>` matching one of them (several at once, so keys can be rotated
//! without downtime); reads stay public. Keys are compared in constant time and never logged.

use poem_openapi::{SecurityScheme, auth::Bearer};

use super::error::AppError;

/// API key for writes, sent as `Authorization: Bearer <key>`. Required by POST, PUT, PATCH and
/// DELETE when the service is configured with keys; reads need none.
#[derive(SecurityScheme)]
#[oai(rename = "ApiKey", ty = "bearer")]
pub struct ApiKeyBearer(Bearer);

/// The credentials a write came with.
#[derive(SecurityScheme)]
pub enum WriteAuth {
    ApiKey(ApiKeyBearer),
    #[oai(fallback)]
    Anonymous,
}

/// The configured keys; empty means writes are open.
#[derive(Default, Clone)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl ApiKeys {
    /// Keys from a comma-separated list and/or a file with one key per line (blank lines and
    /// `#` comments ignored).
    pub fn load(list: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut keys: Vec<String> = list
            .unwrap_or_default()
            .split(',')
            .map(|k| k.trim().to_owned())
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading API key file {}: {e}", path.display()))?;
            let from_file: Vec<String> = text
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            // An empty file is a deployment mistake (a secret not mounted yet), not a choice.
            anyhow::ensure!(
                !from_file.is_empty(),
                "API key file {} holds no key; remove --api-key-file to leave writes open",
                path.display()
            );
            keys.extend(from_file);
        }
        Ok(Self {
            keys: keys
                .into_iter()
                .filter(|k| !k.is_empty())
                .map(String::into_bytes)
                .collect(),
        })
    }

    /// Whether writes need a key.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Admits a write: 401 without a key, 403 with a wrong one.
    pub fn check(&self, auth: &WriteAuth) -> Result<(), AppError> {
        if !self.enabled() {
            return Ok(());
        }
        let WriteAuth::ApiKey(ApiKeyBearer(Bearer { token })) = auth else {
            return Err(AppError::Unauthorized);
        };
        // Check every key, without stopping at a match, so timing says nothing about which.
        let matched = self.keys.iter().fold(false, |found, key| {
            found | same_secret(key, token.as_bytes())
        });
        if matched {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }
}

impl ApiKeys {
    /// The `Idempotency-Key` as stored: with API keys on, scoped to the key the write came with
    /// (hashed with it, so one client's keys never collide with another's nor reveal them);
    /// without, as sent.
    pub fn scope_idempotency_key(&self, auth: &WriteAuth, key: String) -> String {
        use sha2::{Digest, Sha256};
        let WriteAuth::ApiKey(ApiKeyBearer(Bearer { token })) = auth else {
            return key;
        };
        if !self.enabled() {
            return key;
        }
        let digest = Sha256::new()
            .chain_update(token.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("k:{hex}")
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ
/// (`subtle`; only the lengths may show).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Whether `req` carries the metrics token: `Authorization: Bearer <token>` (Prometheus'
/// `authorization` setting), or `Basic` with the token as the password and any user name (what a
/// browser sends once it has asked for credentials).
pub fn metrics_token_given(req: &poem::Request, token: &str) -> bool {
    use base64::Engine;
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let given = if let Some(bearer) = header.strip_prefix("Bearer ") {
        bearer.as_bytes().to_vec()
    } else if let Some(basic) = header.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .unwrap_or_default();
        match decoded.iter().position(|&b| b == b':') {
            Some(colon) => decoded[colon + 1..].to_vec(),
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    same_secret(&given, token.as_bytes())
}

/// 401 problem+json for `what` without its token, with the `WWW-Authenticate` `challenge`.
pub fn metrics_unauthorized(what: &str, challenge: &'static str) -> poem::Response {
    use poem::IntoResponse;
    super::error::Problem::new(
        poem::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{what} needs the metrics token"),
    )
    .into_response()
    .with_header("WWW-Authenticate", challenge)
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_token_comes_as_bearer_or_basic_password() {
        let with = |value: &str| {
            poem::Request::builder()
                .header("Authorization", value)
                .finish()
        };
        let given = |value: &str| metrics_token_given(&with(value), "s3cret");
        assert!(given("Bearer s3cret"));
        // base64("any:s3cret") and base64(":s3cret")
        assert!(given("Basic YW55OnMzY3JldA=="));
        assert!(given("Basic OnMzY3JldA=="));
        assert!(!given("Basic czNjcmV0"), "no colon: no password");
        assert!(!given("Bearer wrong"));
        assert!(!given("Basic !!!"));
        assert!(!metrics_token_given(&poem::Request::default(), "s3cret"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn loads_keys_from_list_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# rotated in 2026-11\nnew-key\n\n").unwrap();
        let keys = ApiKeys::load(Some(" old-key , "), Some(&file)).unwrap();
        assert_eq!(keys.keys, vec![b"old-key".to_vec(), b"new-key".to_vec()]);
        assert!(!ApiKeys::load(None, None).unwrap().enabled());
        std::fs::write(&file, "# nothing yet\n\n").unwrap();
        assert!(
            ApiKeys::load(None, Some(&file)).is_err(),
            "a file with no key"
        );
    }
}
