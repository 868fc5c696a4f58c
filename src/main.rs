use std::process::ExitCode;

use clap::Parser;
use kinoite_zfs_operator::{cli, tls};

#[tokio::main]
async fn main() -> ExitCode {
    tls::install_crypto_provider();
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    match cli::run(args).await {
        Ok(code) => code,
        Err(err) => {
            // One line on stderr: scripts and runbooks show it as the reason.
            eprintln!("error: {}", cli::one_line(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
