//! TLS (`rediss://`) through rustls, with its ring provider.

use rustls::crypto::CryptoProvider;

/// Makes ring the process's rustls provider for a `rediss://` URL, unless the process chose
/// one already: redis-rs builds its TLS settings with the process default, and rustls cannot
/// pick one by itself when several are compiled in.
pub(crate) fn install_crypto_provider(url: &str) {
    if url.starts_with("rediss://") && CryptoProvider::get_default().is_none() {
        // Another thread may have installed one meanwhile: either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
