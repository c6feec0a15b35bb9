//! `trace2e`: the operator CLI. Everything lives in [`trace2e_daemon::cli`].

use std::process::ExitCode;

use clap::Parser;
use trace2e_daemon::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with status 2 here; `--help` and `--version` with 0.
    let args = Cli::parse();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace2e: {e}");
            ExitCode::FAILURE
        }
    }
}
