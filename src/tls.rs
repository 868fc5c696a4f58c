//! TLS setup. The build contains exactly one rustls crypto provider (ring): kube enables it, and
//! oci-client is built without a provider. rustls cannot pick a provider by itself when none is
//! installed process-wide, so every entry point installs ring before the first TLS client exists.

/// Installs ring as the process-wide rustls crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is exactly the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
