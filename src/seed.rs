//! `data-api seed --items N`: fast bulk insert of synthetic items, in batched transactions.

use std::ops::RangeInclusive;

use indicatif::{ProgressBar, ProgressStyle};
use migration::{Migrator, MigratorTrait};

use crate::config::{DbSettings, SeedArgs};
use crate::db::{self, Db, sql::items as repo};

/// `data-api seed`: migrates, inserts, and says which ids it created (load tests need the range).
pub async fn run(args: &SeedArgs) -> anyhow::Result<()> {
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.items)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items, {per_sec:.0}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ids = into(&args.db, args.items, args.batch, &bar).await;
    // The summary goes on a line of its own, not over the bar.
    bar.finish_and_clear();
    match ids? {
        Some(ids) => println!(
            "seeded {} items, ids {}..={} (e.g. LOADTEST_MAX_ID={})",
            args.items,
            ids.start(),
            ids.end(),
            ids.end()
        ),
        None => println!("seeded 0 items"),
    }
    Ok(())
}

/// Migrates the database `settings` name and inserts `items` synthetic items into it, in
/// transactions of `batch` rows, advancing `bar`; returns the range of ids they got.
pub async fn into(
    settings: &DbSettings,
    items: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Option<RangeInclusive<i64>>> {
    let db = db::connect(settings).await?;
    Migrator::up(&db.write, None).await?;
    let ids = insert(&db, items, batch, bar).await;
    db.close().await;
    ids
}

/// Inserts `items` synthetic items in transactions of `batch` rows, advancing `bar`; returns
/// the range of ids they got (other writers running at the same time may own ids inside it).
async fn insert(
    db: &Db,
    items: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Option<RangeInclusive<i64>>> {
    let mut done = 0;
    let mut range: Option<RangeInclusive<i64>> = None;
    while done < items {
        let n = batch.max(1).min(items - done);
        let ids = repo::seed_batch(&db.write, done, n).await?;
        done += n;
        for id in ids {
            range = Some(match range {
                Some(r) => (*r.start()).min(id)..=(*r.end()).max(id),
                None => id..=id,
            });
        }
        bar.set_position(done);
    }
    Ok(range)
}
