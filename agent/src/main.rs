//! `tessera-agent`: the node agent. See `tessera_agent::run` for its tasks.

use clap::Parser;
use tessera_agent::run;

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
