//! `trace2ed`, the trace2e daemon. See `trace2ed --help`.

use clap::Parser;
use trace2e_daemon::config::{DaemonArgs, LogFormat};

fn main() -> std::process::ExitCode {
    let args = DaemonArgs::parse();
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trace2ed: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("trace2ed").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trace2ed: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trace2e_daemon::daemon::run_until(config, trace2e_daemon::daemon::termination())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace2ed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
