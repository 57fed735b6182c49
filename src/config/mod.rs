//! Every knob of the service: command-line flags with environment fallbacks and documented
//! defaults, grouped by concern. Each subcommand takes only the groups it uses.
//!
//! Environment names are prefixed `DATA_API_`, except the standard `DATABASE_URL`, `RUST_LOG` and
//! `OTEL_*`. Settings are passed down explicitly; nothing reads them from globals.

mod data;
mod edge;
mod server;
mod telemetry;

use clap::{Args, FromArgMatches, Parser, Subcommand};

pub use data::{CacheSettings, DbSettings, Invalidation};
pub use edge::{EdgeSettings, PurgeApi};
pub use server::{AuthSettings, HttpSettings, LimitSettings, ServerSettings};
pub use telemetry::{LogFormat, LogSettings, MetricsSettings, TraceSettings};

/// Fast, observable HTTP data service. Without a subcommand it serves.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "data-api",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    serve: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The command line as given (exits with clap's message on a bad one).
    pub fn parse_args() -> Self {
        let matches = Self::help_command().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The command as `--help` shows it: each variable's name, never its value (`[env: X=]` read
    /// as if every variable were set to empty, and a value set may be a secret).
    fn help_command() -> clap::Command {
        fn hide(cmd: clap::Command) -> clap::Command {
            cmd.mut_args(|a| a.hide_env_values(true))
                .mut_subcommands(hide)
        }
        hide(<Self as clap::CommandFactory>::command())
    }

    /// What to do: the subcommand given, or serving with the top-level flags.
    pub fn into_command(self) -> Command {
        self.command
            .unwrap_or_else(|| Command::Serve(Box::new(self.serve)))
    }
}

/// What to do; `serve` when none is given.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(Box<Settings>),
    /// Apply pending migrations, then list every migration with its status.
    Migrate(MigrateArgs),
    /// Bulk-insert synthetic items (batched, in transactions) for load tests.
    Seed(SeedArgs),
}

/// `data-api migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Only list applied and pending migrations; apply nothing.
    #[arg(long)]
    pub status: bool,
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// `data-api seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// How many items to insert.
    #[arg(long, default_value_t = 10_000)]
    pub items: u64,
    /// Rows per INSERT statement (at most 4,000: SQLite allows 32,766 bound values per
    /// statement, and a row binds 6); every batch is its own transaction.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=4_000))]
    pub batch: u64,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// Everything the server needs.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub cache: CacheSettings,
    #[command(flatten)]
    pub limits: LimitSettings,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub log: LogSettings,
    #[command(flatten)]
    pub trace: TraceSettings,
    #[command(flatten)]
    pub metrics: MetricsSettings,
}

impl Settings {
    /// Every documented default, for the given database, without reading the environment;
    /// used by tests and tools.
    pub fn defaults_for(database_url: &str) -> Self {
        let mut settings: Self = defaults();
        settings.db.url = database_url.to_owned();
        settings
    }
}

/// A secret that protects something: set but empty or blank is refused, since it protects
/// nothing while the operator believes it does (a templating mistake, usually).
fn secret(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("is empty: an empty secret protects nothing; unset it instead".into());
    }
    Ok(value.to_owned())
}

/// The cache lease: heartbeats go every fifth of it and the lease is checked every tenth, so
/// it must leave room for both (0 would stop the listener at start).
fn lease(value: &str) -> Result<std::time::Duration, String> {
    let lease = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if lease < std::time::Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(lease)
}

/// A duration that must not be zero (a zero timeout would fail everything it bounds).
fn positive(value: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// A group's documented defaults, ignoring the environment (so tests are hermetic).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None));
    let matches = command.get_matches_from(["defaults"]);
    // Every argument has a default or is optional: parsing no arguments cannot fail.
    T::from_arg_matches(&matches).expect("defaults parse")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let args = std::iter::once("data-api").chain(args.iter().copied());
        Cli::try_parse_from(args).map(Cli::into_command)
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = Settings::defaults_for("sqlite::memory:");
        assert_eq!(s.limits.body_limit, 1_048_576);
        assert_eq!(s.limits.max_uri_length, 8_192);
        assert_eq!(s.limits.max_header_bytes, 16_384);
        assert_eq!(s.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.server.max_connections, 4_096);
        assert_eq!(s.db.acquire_timeout, Duration::from_secs(1));
        assert_eq!(s.cache.capacity, 1_000);
        assert_eq!(s.cache.ttl, Duration::from_secs(300));
        assert_eq!(s.trace.service_name, "data-api");
        assert!(s.server.migrate_on_start);
        assert_eq!(s.db.url, "sqlite::memory:");
    }

    #[test]
    fn serves_with_flags_at_the_top_or_after_serve() {
        for args in [
            &["--bind", "127.0.0.1:9"][..],
            &["serve", "--bind", "127.0.0.1:9"],
        ] {
            let Ok(Command::Serve(s)) = parse(args) else {
                panic!("{args:?} serves");
            };
            assert_eq!(s.server.bind.port(), 9);
        }
    }

    #[test]
    fn parses_durations_and_subcommands() {
        let cmd = parse(&["seed", "--items", "5", "--db-acquire-timeout", "250ms"]).unwrap();
        let Command::Seed(seed) = cmd else {
            panic!("seed");
        };
        assert_eq!(seed.items, 5);
        assert_eq!(seed.db.acquire_timeout, Duration::from_millis(250));
        let Ok(Command::Serve(s)) = parse(&["--migrate-on-start", "false"]) else {
            panic!("serve");
        };
        assert!(!s.server.migrate_on_start);
    }

    #[test]
    fn header_values_are_checked_at_start() {
        let Ok(Command::Serve(s)) = parse(&["--cache-control", "max-age=60, public"]) else {
            panic!("a visible ASCII Cache-Control is taken");
        };
        assert_eq!(s.http.cache_control, "max-age=60, public");
        assert_eq!(s.db.ping_idle_after, Duration::from_millis(500));
        for bad in ["max-age=60\u{7f}", "caf\u{e9}", "a\tb"] {
            assert!(
                parse(&["--cache-control", bad]).is_err(),
                "{bad:?} is refused"
            );
        }
    }

    #[test]
    fn subcommands_take_only_their_flags() {
        assert!(parse(&["seed", "--bind", "127.0.0.1:9"]).is_err());
        assert!(parse(&["migrate", "--api-keys", "k"]).is_err());
        assert!(parse(&["--bind", "127.0.0.1:9", "seed"]).is_err());
        assert!(parse(&["seed", "--batch", "0"]).is_err());
        assert!(parse(&["seed", "--batch", "4001"]).is_err());
    }

    #[test]
    fn rejects_bad_durations() {
        assert!(parse(&["--cache-ttl", "soon"]).is_err());
        assert!(parse(&["--cache-lease", "0s"]).is_err());
        assert!(parse(&["--cache-lease", "9ms"]).is_err());
        assert!(parse(&["--cache-lease", "10ms"]).is_ok());
    }

    /// Secrets that are set but hold nothing fail the start instead of failing open.
    #[test]
    fn empty_secrets_are_refused() {
        for empty in ["", " ", "\t"] {
            assert!(parse(&["--metrics-token", empty]).is_err(), "{empty:?}");
        }
        for none in ["", " ", ",", " , ,"] {
            assert!(parse(&["--api-keys", none]).is_err(), "{none:?}");
        }
        assert!(parse(&["--metrics-token", "t0ken"]).is_ok());
        assert!(
            parse(&["--api-keys", "k1,"]).is_ok(),
            "a trailing comma, one key"
        );
    }

    #[test]
    fn help_names_variables_without_empty_values() {
        let mut cmd = Cli::help_command();
        let serve = cmd
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        assert!(serve.contains("[env: DATA_API_BIND]"), "{serve}");
        assert!(!serve.contains("=]"), "{serve}");
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// docs/CONFIGURATION.md lists every flag of every command.
    #[test]
    fn docs_list_every_flag() {
        let doc = include_str!("../../docs/CONFIGURATION.md");
        let cli = Cli::command();
        let commands = std::iter::once(&cli).chain(cli.get_subcommands());
        for command in commands {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                assert!(
                    doc.contains(&format!("`--{long}")),
                    "docs/CONFIGURATION.md does not list --{long} ({})",
                    command.get_name()
                );
            }
        }
    }
}
