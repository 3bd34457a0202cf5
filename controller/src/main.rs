//! `tessera-controller`: see `tessera_controller::run`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = tessera_controller::run::Args::parse();
    match tessera_controller::run::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
