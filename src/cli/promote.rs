//! `kinoite-zfs-operator promote`: the promotion steps outside the cluster, the same code the
//! Promotion controller drives. Prints the JSON (or YAML) report on stdout in every case that
//! reached the registry; exits 0 when promoted (or already promoted), 3 when refused (nothing
//! was written), 1 when a registry error stopped it (run the same command again to resume).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::common::{OutputFormat, RegistryArgs};
use crate::pipeline::promote::{self, PromotionReport, PromotionRequest};
use crate::pipeline::provenance::{self, StableSection};
use crate::registry::{self, OciRegistry};
use crate::signing::PrivateKey;

/// Exit code of a refused promotion.
pub const EXIT_REFUSED: u8 = 3;

/// Errors of `promote` that happen before the registry is asked anything.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Request(#[from] promote::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// The signing key cannot be read or decrypted (nothing was written).
    #[error("--sign-key {path}: {detail}")]
    SigningKey { path: String, detail: String },
    #[error("--provenance {0}")]
    Provenance(String),
    #[error("cannot render the result: {0}")]
    Render(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The verified candidate, by digest: REPO@sha256:... (an image or an index).
    #[arg(long, value_name = "REPO@DIGEST")]
    pub candidate: String,

    /// The stable image repository (HOST/PATH, no tag).
    #[arg(long, value_name = "REPO")]
    pub to: String,

    /// A stable tag to move to the candidate. Repeatable; the first one is guarded by
    /// --expect-stable-digest.
    #[arg(long = "tag", value_name = "TAG", required = true)]
    pub tags: Vec<String>,

    /// Immutable audit tag to write (e.g. stable-<run>-<rev7>); refused if it exists at another
    /// digest.
    #[arg(long, value_name = "TAG")]
    pub audit_tag: Option<String>,

    /// The candidate akmods image (REPO@DIGEST preferred, or REPO:TAG resolved once). Nothing
    /// is promoted if it does not exist.
    #[arg(long, value_name = "REF", requires = "stable_akmods")]
    pub candidate_akmods: Option<String>,

    /// The stable akmods tag to align with the candidate akmods, REPO:TAG.
    #[arg(long, value_name = "REPO:TAG", requires = "candidate_akmods")]
    pub stable_akmods: Option<String>,

    /// Compare-and-swap: the first stable tag must point at this digest (or not exist:
    /// `absent`), else nothing is written. Without it, the digest it holds when the promotion
    /// starts is the expectation.
    #[arg(long, value_name = "DIGEST|absent")]
    pub expect_stable_digest: Option<String>,

    /// Sign the candidate digest in the stable repository with this cosign private key
    /// (`ENCRYPTED SIGSTORE PRIVATE KEY` or `ENCRYPTED COSIGN PRIVATE KEY` PEM) after the copy and
    /// before any stable tag moves; the signature is verified read back. Read and decrypted
    /// before anything is written.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<std::path::PathBuf>,

    /// The signing key's password (first line of the file); without it the password is empty.
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    pub sign_password_file: Option<std::path::PathBuf>,

    /// The run's build-provenance.json: after the promotion its stable section is filled in
    /// (written back to FILE) and the document is pushed next to the stable digest as an OCI
    /// artifact, signed with --sign-key when given.
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

pub async fn run(args: &PromoteArgs) -> Result<ExitCode, Error> {
    let request = PromotionRequest::parse(
        &args.candidate,
        &args.to,
        &args.tags,
        args.audit_tag.as_deref(),
        args.candidate_akmods.as_deref().zip(args.stable_akmods.as_deref()),
        args.expect_stable_digest.as_deref(),
    )?
    .with_signing(signing_key(args)?);
    let registry = OciRegistry::from_args(&args.registry)?;
    let document = match &args.provenance {
        None => None,
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| Error::Provenance(format!("{}: {e}", path.display())))?)
        }
    };
    let mut run = promote::promote(&registry, &request).await;
    if let (Some(path), Some(document), None) = (&args.provenance, &document, &run.error) {
        let report = &run.report;
        let digest = request.candidate.digest().unwrap_or_default();
        let akmods = report.akmods.as_ref().and_then(|a| {
            let stable = crate::registry::ImageRef::parse(&a.stable.reference).ok()?;
            Some((stable.name(), stable.tag()?.to_string(), a.stable.digest.clone()?))
        });
        let stable = StableSection::promoted(
            &request.stable.name(),
            &request.tags[0],
            digest,
            request.audit_tag.as_deref().unwrap_or_default(),
            akmods.as_ref().map(|(r, t, d)| (r.as_str(), t.as_str(), d.as_str())),
            report.signature.as_ref().map(|s| s.reference.clone()),
        );
        let text = provenance::with_stable(document, &stable).map_err(|e| Error::Provenance(e.to_string()))?;
        std::fs::write(path, &text).map_err(|e| Error::Provenance(format!("{}: {e}", path.display())))?;
        match provenance::push(&registry, &request.stable, digest, &text, request.signing.as_ref()).await {
            Ok(pushed) => run.report.provenance = Some(pushed),
            Err(e) => {
                print(&run.report, args.output)?;
                eprintln!("error: provenance: {}", super::one_line(&e));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    print(&run.report, args.output)?;
    match run.error {
        None => Ok(ExitCode::SUCCESS),
        Some(error) => {
            // The reason on stderr as well, for people reading a terminal or CI log.
            eprintln!("error: {}", super::one_line(&error));
            Ok(if error.refusal().is_some() { ExitCode::from(EXIT_REFUSED) } else { ExitCode::FAILURE })
        }
    }
}

/// The decrypted `--sign-key`, before the registry is asked anything (R12.1).
pub fn signing_key(args: &PromoteArgs) -> Result<Option<PrivateKey>, Error> {
    let Some(path) = &args.sign_key else { return Ok(None) };
    let fail = |detail: String| Error::SigningKey { path: path.display().to_string(), detail };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let password = match &args.sign_password_file {
        None => Vec::new(),
        Some(file) => {
            let text = std::fs::read(file)
                .map_err(|e| fail(format!("cannot read --sign-password-file {}: {e}", file.display())))?;
            // The first line, as skopeo's --sign-passphrase-file reads it.
            text.split(|b| *b == b'\n').next().unwrap_or_default().to_vec()
        }
    };
    PrivateKey::decrypt(&pem, &password).map(Some).map_err(|e| fail(format!("{e}; nothing was written")))
}

fn print(report: &PromotionReport, format: OutputFormat) -> Result<(), Error> {
    let text = match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(report).map_err(|e| Error::Render(e.to_string()))?;
            s.push('\n');
            s
        }
        OutputFormat::Yaml => serde_saphyr::to_string(report).map_err(|e| Error::Render(e.to_string()))?,
    };
    std::io::stdout().write_all(text.as_bytes()).map_err(Error::Stdout)
}
