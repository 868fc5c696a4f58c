//! `kinoite-zfs-operator crd`: print (or write) the CRDs generated from the API types.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Error;
use crate::api;

#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory (e.g. `crds`) instead of printing.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

pub fn run(args: &CrdArgs) -> Result<ExitCode, Error> {
    match &args.write {
        None => {
            let yaml = api::all_crds_yaml()?;
            std::io::stdout().write_all(yaml.as_bytes()).map_err(Error::Stdout)?;
        }
        Some(dir) => {
            for crd in api::crds() {
                let path = dir.join(api::crd_file_name(&crd));
                std::fs::write(&path, api::crd_yaml(&crd)?).map_err(|source| Error::Write { path, source })?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
