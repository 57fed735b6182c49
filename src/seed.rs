//! `data-api seed --items N`: fast bulk insert of synthetic items, in batched transactions.

use indicatif::{ProgressBar, ProgressStyle};

use crate::store::{Db, repo};

/// Inserts `items` synthetic items in transactions of `batch` rows; returns how many were written.
pub async fn run(db: &Db, items: u64, batch: u64, quiet: bool) -> anyhow::Result<u64> {
    let batch = batch.clamp(1, 4_000);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(items)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut done = 0;
    while done < items {
        let n = batch.min(items - done);
        done += repo::seed_batch(&db.write, done, n).await?;
        bar.set_position(done);
    }
    bar.finish();
    Ok(done)
}
