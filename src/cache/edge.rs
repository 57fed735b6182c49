//! The edge cache in front (`--edge-max-age`): Varnish, or a hosted CDN, keeps item and list
//! answers, and this purges them by surrogate key whenever a change commits.
//!
//! The rules (what keeps "once a write is acknowledged, no read answers the older version" true
//! with an edge in the path, and bounds what it can cost when purges fail):
//! 1. **Answers name what they depend on.** An item's answer (200, 304 and 404) carries its
//!    item key, a page of the list the list key, and both the service key ([`keys`]); a purge
//!    of a key drops every answer that carries it.
//! 2. **The writer purges before it acknowledges.** A write's item and list keys join the next
//!    purge batch and the write waits for it, up to `--edge-purge-timeout` (counted when it
//!    gives up; rule 4 then applies).
//! 3. **Every committed change is purged from the feed.** Each replica purges each change its
//!    feed delivers (its own, other replicas', psql's, `seed`'s), batched, so the edge hears of
//!    a change whoever made it, and again after a writer's own purge (an edge fill that read
//!    the row just before the commit and landed just after the first purge is dropped then).
//!    A single instance (SQLite, `--single-instance`) has no feed: it purges its own writes a
//!    second time itself.
//! 4. **No purges, no cacheability.** While a purge has failed and not yet been retried with
//!    success, or the feed's lease is lost (the replica may be missing changes), answers tell
//!    the edge `no-store`, so what it keeps is at most `--edge-max-age` old. Losing the lease
//!    purges everything (the service key), and so does getting it back, before answers are
//!    cacheable again.
//! 5. **An edge's miss reads the database.** A request that came through a CDN (`CDN-Loop`,
//!    RFC 8586, which the shipped VCL adds) is answered from the primary, not this replica's
//!    cache, so what the edge stores is never older than the database at that moment, whatever
//!    this replica's feed has yet to deliver.

use std::collections::BTreeSet;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{mpsc, oneshot};

use super::Coherence;
use crate::config::{EdgeSettings, PurgeApi};
use crate::metrics::{Metrics, catalog::*};

/// The key every edge answer carries: purging it drops everything this service put there.
pub const SERVICE_KEY: &str = "data-api";
/// The key of every page of `GET /data`.
pub const LIST_KEY: &str = "data-api/items";

/// The surrogate keys of item `id`'s answers.
pub fn item_keys(id: i64) -> [String; 2] {
    [SERVICE_KEY.to_owned(), item_key(id)]
}

fn item_key(id: i64) -> String {
    format!("data-api/item/{id}")
}

/// The keys a change to item `id` purges: the item's and the list's.
fn change_keys(id: i64) -> [String; 2] {
    [item_key(id), LIST_KEY.to_owned()]
}

/// Most keys in one purge call: Cloudflare takes 30 tags a call; Varnish's header, far more.
const fn batch_limit(api: PurgeApi) -> usize {
    match api {
        PurgeApi::Varnish => 256,
        PurgeApi::Tags => 30,
    }
}

/// How long the purger waits to gather more keys into a batch once it has one.
const GATHER: Duration = Duration::from_millis(1);
/// How often the purger looks at the lease, and first retries after a failure (doubling up to
/// [`RETRY_MAX`]).
const TICK: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Longest one purge call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One piece of work for the purger.
struct Job {
    keys: Vec<String>,
    /// Told whether the batch holding these keys was accepted.
    done: Option<oneshot::Sender<bool>>,
}

/// The `result` label of purge calls.
#[derive(Clone, Copy)]
enum Purged {
    Ok,
    Failed,
}

impl Purged {
    const ALL: [Self; 2] = [Self::Ok, Self::Failed];
    const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// The `result` label of writes' waits.
#[derive(Clone, Copy)]
enum Waited {
    Purged,
    GaveUp,
}

impl Waited {
    const ALL: [Self; 2] = [Self::Purged, Self::GaveUp];
    const fn as_str(self) -> &'static str {
        match self {
            Self::Purged => "purged",
            Self::GaveUp => "gave_up",
        }
    }
}

struct Measures {
    purges: [Counter; Purged::ALL.len()],
    keys: Counter,
    duration: Histogram,
    waits: [Counter; Waited::ALL.len()],
    cacheable: Gauge,
}

impl Measures {
    fn new(metrics: &Metrics) -> Self {
        Self {
            purges: Purged::ALL.map(|r| metrics.counter(&EDGE_PURGES, &[("result", r.as_str())])),
            keys: metrics.counter(&EDGE_PURGED_KEYS, &[]),
            duration: metrics.histogram(&EDGE_PURGE_DURATION, &[]),
            waits: Waited::ALL
                .map(|r| metrics.counter(&EDGE_PURGE_WAITS, &[("result", r.as_str())])),
            cacheable: metrics.gauge(&EDGE_CACHEABLE, &[]),
        }
    }
}

/// The purger; cheap to clone.
#[derive(Clone)]
pub struct EdgePurger {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::UnboundedSender<Job>,
    /// Rule 4: a purge failed and its keys are not yet purged.
    failing: AtomicBool,
    /// Rule 4: the lease was lost; everything is purged once it is back.
    owes_full_purge: AtomicBool,
    coherence: Arc<Coherence>,
    /// `max-age=N` for `Surrogate-Control` and `CDN-Cache-Control`.
    max_age: String,
    wait: Duration,
    /// No feed brings this replica's own writes back (single instance): each is purged a
    /// second time after its first purge, as the feed would (rule 3).
    repurge_own: bool,
    m: Measures,
}

impl EdgePurger {
    /// The purger for `settings` (checked: edge mode on, a purge URL), and the task that sends
    /// its purges until the process ends.
    pub fn start(
        settings: &EdgeSettings,
        max_age: Duration,
        url: String,
        coherence: Arc<Coherence>,
        single_instance: bool,
        metrics: &Metrics,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            jobs,
            failing: AtomicBool::new(false),
            owes_full_purge: AtomicBool::new(false),
            coherence,
            max_age: format!("max-age={}", max_age.as_secs()),
            wait: settings.edge_purge_timeout,
            repurge_own: single_instance,
            m: Measures::new(metrics),
        });
        let target = Target {
            client: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
            url,
            api: settings.edge_purge_api,
            token: settings.edge_purge_token.clone(),
        };
        let task = tokio::spawn(run(inner.clone(), target, rx));
        Ok((Self { inner }, task))
    }

    /// The targeted cache-control value for the edge (`Surrogate-Control`, `CDN-Cache-Control`):
    /// `max-age=N` while purges work and the lease is held, else `no-store` (rule 4).
    pub fn edge_control(&self) -> &str {
        if self.cacheable() {
            &self.inner.max_age
        } else {
            "no-store"
        }
    }

    fn cacheable(&self) -> bool {
        self.inner.cacheable()
    }

    /// A change to item `id` committed (rule 3): purged in the next batch.
    pub fn heard(&self, id: i64) {
        self.send(change_keys(id).into(), None);
    }

    /// This replica wrote item `id` (rule 2): waits, within `--edge-purge-timeout`, for its
    /// keys to be purged.
    pub async fn written(&self, id: i64) {
        let (tx, rx) = oneshot::channel();
        self.send(change_keys(id).into(), Some(tx));
        let purged = matches!(
            tokio::time::timeout(self.inner.wait, rx).await,
            Ok(Ok(true))
        );
        let waited = if purged {
            Waited::Purged
        } else {
            Waited::GaveUp
        };
        self.inner.m.waits[waited as usize].increment(1);
        if self.inner.repurge_own {
            self.heard(id);
        }
    }

    /// The feed had a gap or lost its lease (rule 4): everything is purged now, and again once
    /// the lease is back, and answers are not cacheable until then.
    pub fn flushed(&self) {
        self.inner.owes_full_purge.store(true, Ordering::Relaxed);
        self.inner.m.cacheable.set(0.0);
        self.send(vec![SERVICE_KEY.to_owned()], None);
    }

    fn send(&self, keys: Vec<String>, done: Option<oneshot::Sender<bool>>) {
        // The task lives as long as the process; a send after it ended only loses a purge
        // nobody can take any more.
        let _ = self.inner.jobs.send(Job { keys, done });
    }
}

impl Inner {
    /// Rule 4: answers are cacheable while no purge is outstanding, no full purge is owed and
    /// the lease is held.
    fn cacheable(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
            && !self.owes_full_purge.load(Ordering::Relaxed)
            && self.coherence.now().serving()
    }
}

/// Where purges go.
struct Target {
    client: reqwest::Client,
    url: String,
    api: PurgeApi,
    token: Option<String>,
}

impl Target {
    /// One purge call for `keys`; whether the edge accepted it.
    async fn purge(&self, keys: &BTreeSet<String>) -> bool {
        let joined = |sep: &str| {
            keys.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(sep)
        };
        let request = match self.api {
            PurgeApi::Varnish => self
                .client
                .request(
                    reqwest::Method::from_bytes(b"PURGE").unwrap_or(reqwest::Method::POST),
                    &self.url,
                )
                .header("xkey-purge", joined(" ")),
            PurgeApi::Tags => self
                .client
                .post(&self.url)
                .bearer_auth(self.token.as_deref().unwrap_or_default())
                .header("content-type", "application/json")
                .body(serde_json::json!({ "tags": keys }).to_string()),
        };
        match request.send().await {
            Ok(resp) if resp.status().is_success() => true,
            Ok(resp) => {
                tracing::warn!(status = %resp.status(), "edge purge refused");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "edge purge failed");
                false
            }
        }
    }
}

/// The purger's loop: gathers jobs into batches, sends them, retries failures with backoff,
/// and settles the full purge owed after a lost lease once the lease is back.
async fn run(inner: Arc<Inner>, target: Target, mut rx: mpsc::UnboundedReceiver<Job>) {
    let limit = batch_limit(target.api);
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut waiters: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut retry = TICK;
    inner.m.cacheable.set(1.0);
    loop {
        let idle = pending.is_empty();
        let job = if idle {
            tokio::time::timeout(TICK, rx.recv()).await
        } else {
            // Failed keys wait for the next try; new ones join them.
            tokio::time::timeout(retry, rx.recv()).await
        };
        match job {
            Ok(None) => return,
            Ok(Some(job)) => take(&mut pending, &mut waiters, job),
            Err(_) => {}
        }
        // Gather what else is ready (and what arrives within GATHER) into this batch.
        let gather_until = Instant::now() + GATHER;
        while pending.len() < limit {
            match tokio::time::timeout_at(gather_until.into(), rx.recv()).await {
                Ok(Some(job)) => take(&mut pending, &mut waiters, job),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let lease = inner.coherence.now().serving();
        // Owed since the lease was lost: joins the next batch once the lease is back, however
        // busy the purger is (it sorts first, so a batch always takes it).
        if lease && inner.owes_full_purge.load(Ordering::Relaxed) {
            pending.insert(SERVICE_KEY.to_owned());
        }
        if pending.is_empty() {
            continue;
        }
        let owed = inner.owes_full_purge.load(Ordering::Relaxed);
        let batch: BTreeSet<String> = pending.iter().take(limit).cloned().collect();
        let started = Instant::now();
        let ok = target.purge(&batch).await;
        inner.m.duration.record(started.elapsed().as_secs_f64());
        inner.m.purges[if ok { Purged::Ok } else { Purged::Failed } as usize].increment(1);
        let all_sent = batch.len() == pending.len();
        // Writers wait until all their keys went out (or the call failed).
        if all_sent || !ok {
            for w in waiters.drain(..) {
                let _ = w.send(ok);
            }
        }
        if ok {
            inner.m.keys.increment(batch.len() as u64);
            pending.retain(|k| !batch.contains(k));
            retry = TICK;
            if batch.contains(SERVICE_KEY) && owed && lease {
                inner.owes_full_purge.store(false, Ordering::Relaxed);
            }
            if pending.is_empty() {
                inner.failing.store(false, Ordering::Relaxed);
            }
        } else {
            inner.failing.store(true, Ordering::Relaxed);
            retry = (retry * 2).min(RETRY_MAX);
        }
        inner
            .m
            .cacheable
            .set(if inner.cacheable() { 1.0 } else { 0.0 });
    }
}

fn take(pending: &mut BTreeSet<String>, waiters: &mut Vec<oneshot::Sender<bool>>, job: Job) {
    pending.extend(job.keys);
    waiters.extend(job.done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_item_the_list_and_the_service() {
        assert_eq!(item_keys(42), ["data-api", "data-api/item/42"]);
        assert_eq!(change_keys(42), ["data-api/item/42", "data-api/items"]);
    }
}
