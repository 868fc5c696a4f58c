//! TLS setup. The build contains exactly one rustls crypto provider (ring): kube enables it, and
//! oci-client is built without a provider. rustls cannot pick a provider by itself when none is
//! installed process-wide, so every entry point installs ring before the first TLS client exists.
//!
//! The registry clients' TLS configuration (the system trust roots, read and parsed from
//! `/etc/ssl/certs` by rustls-platform-verifier, and the rustls client config around them) is
//! built once per process and shared by every client: the client pool creates a client per
//! credential set, and left to itself reqwest would load and parse the trust roots again for each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls_platform_verifier::BuilderVerifierExt as _;

/// Installs ring as the process-wide rustls crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is exactly the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

static CLIENT_CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
static BUILDS: AtomicU64 = AtomicU64::new(0);

/// The registry clients' TLS configuration: built on first use (trust roots loaded once), then
/// the same `Arc` for every caller. A failure (no trust roots on the system) is remembered too,
/// and reported to every client that asks, as reqwest would.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    CLIENT_CONFIG
        .get_or_init(|| {
            BUILDS.fetch_add(1, Ordering::Relaxed);
            install_crypto_provider();
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .with_platform_verifier()
                .map_err(|e| format!("system trust roots: {e}"))?
                .with_no_client_auth();
            // What reqwest sets for an HTTP/1-only client.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// How often this process built the TLS configuration (at most once; tests check it).
pub fn client_config_builds() -> u64 {
    BUILDS.load(Ordering::Relaxed)
}
