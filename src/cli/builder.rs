//! `kinoite-zfs-operator builder …`: the commands builder pods run (src/builder/).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::builder::{self, Error};
use crate::jobs::contract::StepContract;

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Copy this binary into DIR atomically (temp file + rename), mode 0755.
    Install {
        /// Target directory (the Job's shared tools volume).
        dir: PathBuf,
    },
    /// The akmods step (R5): pinned clone, Justfile patches, per-kernel `just build`/`just push`,
    /// merge-and-publish to the candidate akmods repository; inputs from the Job's env.
    Akmods,
}

pub fn run(command: &BuilderCommand) -> Result<ExitCode, Error> {
    match command {
        BuilderCommand::Install { dir } => {
            let path = builder::install::install(dir)?;
            tracing::info!("installed {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        BuilderCommand::Akmods => {
            // The contract checks the args too: the pod runs exactly `builder akmods`.
            let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--log-format")).collect();
            let contract = builder::contract_from_env(&args)?;
            let StepContract::Akmods(akmods) = &contract else {
                return Err(Error::WrongStep { expected: "akmods", found: contract.kind().as_str() });
            };
            let result_file = Path::new(&akmods.common.result_file);
            builder::probe_result_file(result_file)?;
            tracing::info!(build = %akmods.common.build, run = akmods.common.run, "akmods step");
            match builder::akmods::run_akmods(akmods).and_then(|r| builder::write_result(result_file, &r).map(|()| r)) {
                Ok(result) => {
                    tracing::info!(digest = result.digest(), "akmods image pushed");
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    builder::write_failure(result_file, "akmods", &crate::cli::one_line(&err));
                    Err(err)
                }
            }
        }
    }
}
