use data_api::{
    config::{self, Cli, Command, TraceSettings},
    seed, startup, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse_args().into_command();
    let (log, trace) = match &command {
        Command::Serve(s) => (&s.log, s.trace.clone()),
        // Tools export no spans.
        Command::Migrate(m) => (&m.log, config::defaults::<TraceSettings>()),
        Command::Seed(s) => (&s.log, config::defaults::<TraceSettings>()),
    };
    let telemetry = telemetry::init(log, &trace)?;
    let result = run(command).await;
    // Flush queued spans; the exporter's client blocks, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(settings) => {
            // Before start-up, so a SIGTERM during it drains instead of killing the process.
            let shutdown = startup::shutdown_signal();
            let app = startup::App::build(*settings).await?;
            app.run_until_stopped(shutdown).await
        }
        Command::Migrate(args) => startup::migrate(&args.db, args.status).await,
        Command::Seed(args) => seed::run(&args).await,
    }
}
