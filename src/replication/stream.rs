//! Cross-replica cache invalidation from PostgreSQL's commit log (`--invalidation auto`, the
//! default, where logical decoding is available): each replica streams the committed changes of `data_items`
//! through a temporary logical replication slot of its own (built-in `pgoutput`, publication
//! `data_api_items`), so a writing transaction does nothing extra: no trigger notification, no
//! commit-time lock. The server drops the slot when the session ends, so a dead replica retains
//! no WAL.
//!
//! It keeps every promise of the trigger feed (`listener`), with the same code for what a change,
//! a heartbeat or a truncate does to the cache:
//! - every committed insert, update and delete, whoever made it, in commit order;
//! - the lease: this replica's heartbeats are logical decoding messages written to the same
//!   WAL and read back through the same stream, after every transaction that committed before
//!   they were sent, so a silent or broken stream stops hits within `--cache-lease`;
//! - gaps: any error, end or silence of the stream, and any new session (a new slot starts
//!   where it was created, not where the last one stopped), flushes the cache and moves the
//!   epoch;
//! - standby positions: each heartbeat carries the primary's WAL position when it left.

use std::time::Duration;

use pgwire_replication::{
    ReplicationClient, ReplicationConfig, ReplicationEvent, SslMode, TlsConfig,
};

use super::listener::{self, Heard, MESSAGE_PREFIX, Notice};
use super::pgoutput::{Event, Relations};
use crate::cache::coherence::Flush;
use crate::db::sql::positions;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01), for commit timestamps.
const PG_EPOCH_UNIX: f64 = 946_684_800.0;

/// Whether this server can stream the feed to us: a session that creates (and, ending, drops)
/// a temporary slot. `Err` says why not (`wal_level` below `logical`, no replication
/// privilege, no publication, unreachable), for the start-up log.
pub async fn available(url: &str, within: Duration) -> Result<(), String> {
    let probe = async {
        let slot = slot_name(rand::random(), 0);
        let mut client = ReplicationClient::connect_gated(config(url, &slot)?)
            .await
            .map_err(|e| e.to_string())?;
        let created = client
            .simple_query(&positions::create_temporary_slot(&slot))
            .await;
        client.abort();
        created.map(drop).map_err(|e| e.to_string())
    };
    tokio::time::timeout(within, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {within:?}")))
}

/// Streams until aborted, opening a new session (and flushing) after every gap.
pub(super) async fn follow(url: &str, heard: &Heard<'_>) {
    let bound = heard.cache.coherence().bound();
    let mut sessions = 0u64;
    loop {
        let slot = slot_name(heard.replica, sessions);
        let client = match open(url, &slot, bound).await {
            Ok(client) => client,
            Err(e) => {
                // No lease is held here (none yet, or dropped at the gap): nothing to flush.
                tracing::warn!(error = %e, "commit-log feed cannot start; retrying");
                tokio::time::sleep(bound / 5).await;
                continue;
            }
        };
        if sessions > 0 {
            heard.m.reconnects.increment(1);
        }
        sessions += 1;
        tracing::info!(slot, "commit-log feed streaming");
        let gap = read(client, heard, bound).await;
        tracing::warn!(reason = gap.as_str(), "commit-log feed gap: cache flushed");
        heard.cache.flush(gap);
    }
}

/// A replication session streaming from a new temporary slot named `slot`.
async fn open(url: &str, slot: &str, bound: Duration) -> Result<ReplicationClient, String> {
    let opening = async {
        let mut client = ReplicationClient::connect_gated(config(url, slot)?)
            .await
            .map_err(|e| e.to_string())?;
        client
            .simple_query(&positions::create_temporary_slot(slot))
            .await
            .map_err(|e| e.to_string())?;
        client.start().await.map_err(|e| e.to_string())?;
        client.wait_started().await.map_err(|e| e.to_string())?;
        Ok(client)
    };
    tokio::time::timeout(bound.max(Duration::from_secs(1)), opening)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// Applies the stream to the cache until it breaks; why it did.
async fn read(mut client: ReplicationClient, heard: &Heard<'_>, bound: Duration) -> Flush {
    let mut relations = Relations::default();
    let mut committed_at = 0.0;
    loop {
        let event = match tokio::time::timeout(bound, client.recv()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => return Flush::Reconnect,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "commit-log feed failed");
                return Flush::Error;
            }
            Err(_silent) => return Flush::Silence,
        };
        match event {
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => committed_at = PG_EPOCH_UNIX + commit_time_micros as f64 / 1e6,
            ReplicationEvent::XLogData { data, .. } => match relations.read(&data) {
                Ok(Event::Changed { id, change }) => {
                    let at_unix = committed_at;
                    listener::apply(
                        Notice::Change {
                            id,
                            change,
                            at_unix,
                        },
                        heard,
                    )
                    .await;
                }
                Ok(Event::Truncated) => listener::apply(Notice::Truncated, heard).await,
                Ok(Event::Nothing) => {}
                Err(e) => {
                    tracing::warn!(error = e.0, "unreadable commit-log message");
                    return Flush::Error;
                }
            },
            ReplicationEvent::Message {
                prefix, content, ..
            } if prefix == MESSAGE_PREFIX => {
                match std::str::from_utf8(&content).ok().and_then(Notice::parse) {
                    Some(notice) => listener::apply(notice, heard).await,
                    None => tracing::warn!("unreadable heartbeat message"),
                }
            }
            // Applied: the server may recycle the WAL behind it.
            ReplicationEvent::Commit { end_lsn, .. } => client.update_applied_lsn(end_lsn),
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                client.update_applied_lsn(wal_end);
            }
            _ => {}
        }
    }
}

/// A slot name unique to this replica and session (lower case, digits and `_`, as slot names
/// must be).
fn slot_name(replica: u64, session: u64) -> String {
    format!("data_api_{replica:016x}_{session}")
}

/// The replication session's settings, from a `postgres://` URL.
fn config(url: &str, slot: &str) -> Result<ReplicationConfig, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("the database URL: {e}"))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| "the database URL: bad percent-encoding".to_owned())
    };
    let user = decode(parsed.username())?;
    let password = decode(parsed.password().unwrap_or_default())?;
    let database = match parsed.path().trim_start_matches('/') {
        "" => user.clone(),
        db => decode(db)?,
    };
    let host = parsed.host_str().unwrap_or("localhost");
    let tls = match parsed
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.into_owned())
        .as_deref()
    {
        Some("disable") => TlsConfig::disabled(),
        Some("require") => TlsConfig::require(),
        Some("verify-ca") => TlsConfig::verify_ca(None),
        Some("verify-full") => TlsConfig::verify_full(None),
        // As libpq and sqlx default: TLS where the server offers it.
        _ => TlsConfig {
            mode: SslMode::Prefer,
            ..TlsConfig::disabled()
        },
    };
    Ok(
        ReplicationConfig::new(host, user, password, database, slot, positions::PUBLICATION)
            .with_port(parsed.port().unwrap_or(5432))
            .with_tls(tls)
            .with_application_name("data-api feed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_settings_from_the_url() {
        let c = config(
            "postgres://us%40er:p%3Ass@db.example:6432/items?sslmode=require",
            "s",
        )
        .expect("a URL");
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("db.example", 6432, "us@er")
        );
        assert_eq!(
            (c.password.as_str(), c.database.as_str()),
            ("p:ss", "items")
        );
        assert!(c.tls.mode.requires_tls());
        let c = config("postgres://postgres@127.0.0.1/", "s").expect("a URL");
        assert_eq!((c.port, c.database.as_str()), (5432, "postgres"));
        assert_eq!(c.tls.mode, SslMode::Prefer, "as libpq and sqlx default");
        let c = config("postgres://postgres@127.0.0.1/?sslmode=disable", "s").expect("a URL");
        assert_eq!(c.tls.mode, SslMode::Disable);
        assert!(config("not a url", "s").is_err());
        assert_eq!(slot_name(255, 3), "data_api_00000000000000ff_3");
    }
}
