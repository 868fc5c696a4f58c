//! What runs inside builder pods (design §4): `builder install DIR` (the init container copies
//! the operator binary into the shared tools volume) and `builder akmods` (R5 with the H1 fix).
//! The inputs come from the env vars and args of [`crate::jobs::contract`]; the result goes to
//! the termination-message file as the document of [`crate::jobs::result`].

pub mod akmods;
pub mod install;
pub mod justfile;
mod process;

use std::path::{Path, PathBuf};

use crate::jobs::contract::{self, MAX_RESULT_BYTES, StepContract};
use crate::jobs::result::{self, BuilderResult};

/// Errors of the builder steps; the message is what the failed pod reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot install the builder into {dir}: {source}")]
    Install {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Contract(#[from] contract::Error),
    #[error("this pod is a {found} step, but `builder {expected}` was run")]
    WrongStep { expected: &'static str, found: &'static str },
    #[error("{0}")]
    Command(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Pinned ref mismatch: fetched {found}, expected {expected}")]
    PinnedRefMismatch { expected: String, found: String },
    #[error(transparent)]
    Justfile(#[from] justfile::Error),
    #[error("cannot reuse a fixed KCPATH override ({0}): every kernel needs its own isolated build root")]
    PresetKcpath(String),
    #[error("`just build` for kernel {kernel} produced no image {image}")]
    NoImage { kernel: String, image: String },
    #[error("Merged shared akmods cache is missing kernel RPMs for: {}", .0.join(" "))]
    MissingKernelRpms(Vec<String>),
    #[error("KZO_IMAGE_LABELS says {key}={claimed:?}, but the merged image holds {actual:?}")]
    LabelMismatch { key: String, claimed: String, actual: String },
    #[error("the pushes of one image reported different digests: {0}")]
    DigestMismatch(String),
    #[error("the result document is {0} bytes; a termination message holds at most {MAX_RESULT_BYTES}")]
    ResultTooLarge(usize),
    #[error("cannot write the result to {path}: {source}")]
    ResultFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The contract of this pod, from the process environment and args.
pub fn contract_from_env(args: &[String]) -> Result<StepContract, Error> {
    Ok(StepContract::parse(|name| std::env::var(name).ok(), args)?)
}

/// Checks up front that the result can be written, so a broken termination-message path fails
/// the pod before anything is built or pushed.
pub fn probe_result_file(path: &Path) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|source| Error::ResultFile { path: path.to_path_buf(), source })
}

/// Writes the result document: whole or not at all (a cut document would be rejected anyway).
pub fn write_result(path: &Path, result: &BuilderResult) -> Result<(), Error> {
    let doc = result::render(result);
    if doc.len() >= MAX_RESULT_BYTES {
        return Err(Error::ResultTooLarge(doc.len()));
    }
    std::fs::write(path, doc).map_err(|source| Error::ResultFile { path: path.to_path_buf(), source })
}

/// Writes a failure to the termination-message file for `kubectl describe pod` (never parsed as
/// a result: only a container that exited 0 counts). Long messages keep their start.
pub fn write_failure(path: &Path, step: &str, message: &str) {
    let mut text = format!("{step} failed: {message}");
    if text.len() >= MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES - 4;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    let _ = std::fs::write(path, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_written_whole_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        let ok = BuilderResult::Akmods {
            digest: crate::test_support::digest('a'),
            kernel_releases: vec!["6.18.9-200.fc43.x86_64".into()],
        };
        write_result(&path, &ok).unwrap();
        assert_eq!(result::parse(crate::jobs::JobKind::Akmods, &std::fs::read_to_string(&path).unwrap()).unwrap(), ok);
        let huge = BuilderResult::Akmods {
            digest: crate::test_support::digest('a'),
            kernel_releases: (0..200).map(|i| format!("6.18.{i}-200.fc43.x86_64")).collect(),
        };
        assert!(matches!(write_result(&path, &huge), Err(Error::ResultTooLarge(n)) if n > 4096));
        write_failure(&path, "akmods", &"x".repeat(10_000));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("akmods failed: xxx") && text.len() < MAX_RESULT_BYTES, "{}", text.len());
        assert!(matches!(probe_result_file(&dir.path().join("no/such/dir")), Err(Error::ResultFile { .. })));
    }
}
