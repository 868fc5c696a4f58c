//! `kinoite-zfs-operator provenance REPO@DIGEST --public-key FILE`: finds the provenance artifact
//! pushed next to a stable digest (referrers API, or the `sha256-<hex>` referrers tag schema),
//! checks its signature with the public key, that its subject is the digest and that its stable
//! section names the digest, and prints the document. Exit 0 verified, 1 not found or not
//! verified, 2 no verdict (registry failure).

use std::process::ExitCode;

use clap::Args;

use super::common::{OutputFormat, RegistryArgs, write_output};
use crate::pipeline::provenance::{self, Error as ProvenanceError};
use crate::registry::{ImageRef, OciRegistry};
use crate::signing::PublicKey;

#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// The stable image by digest, REPO@sha256:...
    #[arg(value_name = "REPO@DIGEST")]
    pub image: String,

    /// The public key the artifact's signature must verify with (`cosign.pub`, PEM).
    #[arg(long, value_name = "FILE")]
    pub public_key: std::path::PathBuf,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

pub async fn run(args: &ProvenanceArgs) -> Result<ExitCode, super::Error> {
    let fail = |message: String| {
        eprintln!("error: {message}");
        Ok(ExitCode::from(super::EXIT_NO_VERDICT))
    };
    let image = match ImageRef::parse(&args.image) {
        Ok(image) if image.digest().is_some() => image,
        Ok(_) => return fail(format!("{} has no digest: give REPO@sha256:...", args.image)),
        Err(e) => return fail(e.to_string()),
    };
    let pem = match std::fs::read_to_string(&args.public_key) {
        Ok(pem) => pem,
        Err(e) => return fail(format!("--public-key {}: {e}", args.public_key.display())),
    };
    let public = match PublicKey::from_pem(&pem) {
        Ok(public) => public,
        Err(e) => return fail(format!("--public-key {}: {e}", args.public_key.display())),
    };
    let registry = OciRegistry::from_args(&args.registry)?;
    let digest = image.digest().unwrap_or_default().to_string();
    match provenance::read(&registry, &image, &digest, &public).await {
        Ok(verified) => {
            write_output(args.output, &verified)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ProvenanceError::NotFound(_) | ProvenanceError::NotVerified(_))) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => fail(super::one_line(&e)),
    }
}
