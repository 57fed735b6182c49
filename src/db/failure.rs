//! What a database error means for the caller: the database cannot serve now (answered 503 with
//! `Retry-After`), or the query itself failed (a 500). Both backends' error codes live here.

use sea_orm::{DbErr, RuntimeErr, sqlx::Error as Sqlx};

/// How a database operation failed (the `error_type` label of the error counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// No connection became free within the acquire timeout.
    PoolTimeout,
    /// The database is down, unreachable, shutting down, busy, locked or read-only.
    Unavailable,
    /// Anything else: a fault in the query or the data.
    Query,
}

impl DbFailure {
    /// Every kind, in label order.
    pub const ALL: [Self; 3] = [Self::PoolTimeout, Self::Unavailable, Self::Query];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PoolTimeout => "pool_timeout",
            Self::Unavailable => "unavailable",
            Self::Query => "query",
        }
    }

    /// Classifies `err`.
    pub fn of(err: &DbErr) -> Self {
        match err {
            DbErr::ConnectionAcquire(_) => Self::PoolTimeout,
            DbErr::Conn(_) => Self::Unavailable,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
                if cannot_serve(e) =>
            {
                Self::Unavailable
            }
            _ => Self::Query,
        }
    }

    /// Whether the database cannot serve now, rather than the query being at fault.
    pub fn is_unavailable(self) -> bool {
        self != Self::Query
    }
}

/// Whether a failure to reach the database may pass by itself: no connection in time, a refused
/// or lost connection, a server starting up, shutting down or full. A wrong password, a missing
/// database or a bad URL will not.
pub fn may_mend_by_waiting(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e)) => cannot_serve(e),
        _ => false,
    }
}

fn cannot_serve(e: &Sqlx) -> bool {
    matches!(
        e,
        Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Io(_) | Sqlx::Tls(_) | Sqlx::WorkerCrashed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| BUSY_CODES.contains(&code.as_ref()))
}

/// Error codes that mean "not now": SQLite's BUSY (5), LOCKED (6) and READONLY (8) with their
/// extended codes; PostgreSQL's admin/crash shutdown, cannot connect now, too many connections
/// and lost connections.
const BUSY_CODES: [&str; 18] = [
    "5", "6", "8", "261", "262", "264", "517", "520", "773", "776", "1032", "57P01", "57P02",
    "57P03", "53300", "08006", "08003", "08001",
];

#[cfg(test)]
mod tests {
    use sea_orm::ConnAcquireErr;

    use super::*;

    #[test]
    fn classifies() {
        let timeout = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        assert_eq!(DbFailure::of(&timeout), DbFailure::PoolTimeout);
        let io = DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(Sqlx::PoolClosed)));
        assert_eq!(DbFailure::of(&io), DbFailure::Unavailable);
        assert_eq!(DbFailure::of(&DbErr::Custom("x".into())), DbFailure::Query);
        assert!(!DbFailure::Query.is_unavailable());
    }
}
