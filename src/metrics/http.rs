//! Bounded label values for HTTP metrics besides the route (see `route`): the method and
//! the status code.

/// Methods as OpenTelemetry labels them; any other is `_OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl HttpMethod {
    /// Every method, in index order.
    pub const ALL: [Self; 8] = [
        Self::Get,
        Self::Head,
        Self::Post,
        Self::Put,
        Self::Patch,
        Self::Delete,
        Self::Options,
        Self::Other,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "_OTHER",
        }
    }

    /// The label of `method`.
    pub fn of(method: &poem::http::Method) -> Self {
        use poem::http::Method;
        match *method {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::PATCH => Self::Patch,
            Method::DELETE => Self::Delete,
            Method::OPTIONS => Self::Options,
            _ => Self::Other,
        }
    }
}

/// Status codes whose series are cached; others are registered on use (still bounded: 100–999).
pub const STATUSES: [u16; 20] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 411, 412, 413, 415, 422, 429, 431, 500, 503,
    504,
];
/// The same codes as label values, so recording allocates nothing.
pub const STATUS_LABELS: [&str; 20] = [
    "200", "201", "204", "304", "400", "401", "403", "404", "405", "408", "411", "412", "413",
    "415", "422", "429", "431", "500", "503", "504",
];

/// The index of `status` in `STATUSES`, if cached.
pub fn status_of(status: u16) -> Option<usize> {
    STATUSES.iter().position(|s| *s == status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(HttpMethod::of(&poem::http::Method::PATCH).as_str(), "PATCH");
        let brew = poem::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(HttpMethod::of(&brew).as_str(), "_OTHER");
        for (i, m) in HttpMethod::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
        assert_eq!(status_of(412).map(|i| STATUS_LABELS[i]), Some("412"));
        for (code, label) in STATUSES.iter().zip(STATUS_LABELS) {
            assert_eq!(code.to_string(), label);
        }
    }
}
