//! Starts the Kubernetes API simulator (tests/support/apisim) standalone, for scripts, demos and
//! benchmarks: `cargo run --example apisim -- --kubeconfig /tmp/apisim.kubeconfig`, then point
//! kubectl or the operator at that kubeconfig. Stops on Ctrl-C (or SIGTERM).

#[allow(dead_code)]
#[path = "../tests/support/schema.rs"]
mod schema;

#[allow(dead_code)]
#[path = "../tests/support/apisim/mod.rs"]
mod apisim;

use std::path::PathBuf;

use clap::Parser;

/// Kubernetes API simulator: plain HTTP on 127.0.0.1, kubectl- and kube-rs-compatible.
#[derive(Parser)]
struct Args {
    /// Also write the kubeconfig to this path.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Port to listen on (default: a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Install the operator's CRDs (ZfsImageBuild, Promotion) at startup.
    #[arg(long)]
    install_crds: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sim = apisim::ApiSim::start_with(apisim::Options { port: args.port, ..Default::default() });
    if args.install_crds {
        sim.install_crds(&kinoite_zfs_operator::api::crds());
    }
    let kubeconfig = match &args.kubeconfig {
        Some(path) => {
            if let Err(e) = std::fs::copy(sim.kubeconfig(), path) {
                eprintln!("apisim: cannot write the kubeconfig to {}: {e}", path.display());
                std::process::exit(1);
            }
            path.clone()
        }
        None => sim.kubeconfig().to_path_buf(),
    };
    println!("apisim listening on {}", sim.url());
    println!("kubeconfig: {}", kubeconfig.display());
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    let stats = sim.stats();
    eprintln!("apisim: stopping after {} writes", stats.writes);
}
