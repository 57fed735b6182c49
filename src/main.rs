use clap::Parser;
use data_api::{
    config::{Cli, Command},
    seed, startup, store, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(&cli.settings.log, &cli.settings.trace)?;
    let result = run(cli).await;
    // Flush queued spans; the exporter's client blocks, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = startup::App::build(cli.settings).await?;
            app.run_until_stopped(startup::shutdown_signal()).await
        }
        Command::Migrate { status } => startup::migrate(&cli.settings, status).await,
        Command::Seed {
            items,
            batch,
            quiet,
        } => {
            let db = store::db::connect(&cli.settings.database_url, &cli.settings.db).await?;
            <migration::Migrator as migration::MigratorTrait>::up(&db.write, None).await?;
            let n = seed::run(&db, items, batch, quiet).await?;
            db.close().await;
            println!("seeded {n} items");
            Ok(())
        }
    }
}
