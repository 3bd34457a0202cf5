//! `tessera-agent`: the node agent. See `run` for its tasks.

mod client;
mod disk;
mod enforcer;
mod metrics;
mod nft;
mod routes;
mod run;
mod socket;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run::run(run::Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
