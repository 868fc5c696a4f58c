//! Test support shared by the integration tests (never part of the operator binary).

#![allow(dead_code)]

pub mod akmods;
pub mod apisim;
pub mod faults;
pub mod image;
pub mod kubelet;
pub mod registry;
pub mod schema;

use std::process::Command;

/// Runs `skopeo` with the arguments and returns stdout; panics with stderr on failure.
pub fn skopeo(args: &[&str]) -> String {
    let binary = registry::find_tool("skopeo", "skopeo");
    let output = Command::new(binary).args(args).output().expect("run skopeo");
    assert!(output.status.success(), "skopeo {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("skopeo output is UTF-8")
}

/// Installs the crypto provider the operator's TLS clients need (idempotent).
pub fn init() {
    kinoite_zfs_operator::tls::install_crypto_provider();
}
