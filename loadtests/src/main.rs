//! goose load tests for data-api (scenarios arrive with the load-testing issue).

use goose::prelude::*;

async fn health(user: &mut GooseUser) -> TransactionResult {
    let _ = user.get("/health/live").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    GooseAttack::initialize()?
        .register_scenario(scenario!("health").register_transaction(transaction!(health)))
        .execute()
        .await?;
    Ok(())
}
