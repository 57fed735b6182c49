//! goose load tests for data-api.
//!
//! `loadtests [goose options]` runs the scenarios with goose's own command line (users, hatch rate,
//! run time, throttle, `--scenarios`, `--report-file`, `--threshold`, `--baseline-file`, …);
//! `loadtests compare [options]` starts the service itself, seeds it, runs the scenarios and prints
//! one table, optionally saving or checking a baseline. See the README's "Load testing".

mod compare;
mod fleet;
mod scenarios;

use goose::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("compare") {
        return compare::run(std::env::args().skip(1).collect()).await;
    }
    scenarios::configure(scenarios::Params::from_env());
    let mut attack = GooseAttack::initialize()?;
    for scenario in scenarios::all()? {
        attack = attack.register_scenario(scenario);
    }
    attack
        .set_default(GooseDefault::NoTelnet, true)?
        .execute()
        .await?;
    Ok(())
}
