//! Running the tools (git, just, buildah) with their output on the pod log and the tail of
//! their stderr in the error.

use std::path::Path;
use std::process::{Command, Stdio};

use super::Error;

/// How much of a failed command's stderr goes into the error (the pod log has all of it).
const STDERR_TAIL: usize = 1500;

/// Runs `cmd`, forwarding its stdout and stderr to ours; returns its stdout.
pub fn run(mut cmd: Command, what: &str) -> Result<String, Error> {
    tracing::info!(command = %describe(&cmd), "{what}");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command(format!("{what}: cannot run {}: {e}", program(&cmd))))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprint!("{stdout}{stderr}");
    if !output.status.success() {
        let tail = tail(stderr.trim(), STDERR_TAIL);
        return Err(Error::Command(format!("{what}: {} exited with {}: {tail}", program(&cmd), output.status)));
    }
    Ok(stdout)
}

/// `program args…` for the log (the tools get credentials only through files, so args are safe).
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn program(cmd: &Command) -> String {
    Path::new(cmd.get_program()).display().to_string()
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
