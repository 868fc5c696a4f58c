//! cosign key pairs: the encrypted private key (`ENCRYPTED SIGSTORE PRIVATE KEY` or the older
//! `ENCRYPTED COSIGN PRIVATE KEY` PEM: a JSON envelope with scrypt parameters and salt, a NaCl
//! secretbox nonce, and the ciphertext of a PKCS#8 key) and the PKIX public key (`PUBLIC KEY`
//! PEM). Only ECDSA P-256 keys, what `cosign generate-key-pair` and `skopeo
//! generate-sigstore-key` make.

use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use serde::Deserialize;

use super::Error;

pub const SIGSTORE_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
pub const COSIGN_PEM: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// The scrypt parameters cosign's envelope library accepts (legacy 2^15, standard 2^16, OWASP
/// 2^17; r 8, p 1). Anything else is refused before any work: a key file must not be able to
/// ask for gigabytes of memory.
const SCRYPT_LOG_N: [u8; 3] = [15, 16, 17];

#[derive(Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// A decrypted signing key. Its `Debug` shows only the public key.
#[derive(Clone)]
pub struct PrivateKey {
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public().fingerprint())
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.public() == other.public()
    }
}
impl Eq for PrivateKey {}

impl PrivateKey {
    /// Decrypts a cosign private key PEM with `password` (often empty).
    pub fn decrypt(pem: &[u8], password: &[u8]) -> Result<PrivateKey, Error> {
        let text = std::str::from_utf8(pem).map_err(|_| Error::Key("the private key is not PEM text".into()))?;
        let (label, body) = pem_body(text)?;
        if label != SIGSTORE_PEM && label != COSIGN_PEM {
            return Err(Error::Key(format!(
                "the private key is a {label:?} PEM block; expected {SIGSTORE_PEM:?} or {COSIGN_PEM:?} (a cosign key pair)"
            )));
        }
        let envelope: Envelope = serde_json::from_slice(&body)
            .map_err(|e| Error::Key(format!("the private key's envelope is not cosign's JSON: {e}")))?;
        if envelope.kdf.name != "scrypt" || envelope.cipher.name != "nacl/secretbox" {
            return Err(Error::Key(format!(
                "the private key uses {}/{}; only scrypt/nacl-secretbox keys are supported",
                envelope.kdf.name, envelope.cipher.name
            )));
        }
        let p = &envelope.kdf.params;
        let log_n = SCRYPT_LOG_N
            .iter()
            .copied()
            .find(|l| 1u64 << l == p.n)
            .filter(|_| p.r == 8 && p.p == 1)
            .ok_or_else(|| Error::Key(format!("unsupported scrypt parameters N={} r={} p={}", p.n, p.r, p.p)))?;
        let salt = b64(&envelope.kdf.salt, "salt")?;
        let nonce = b64(&envelope.cipher.nonce, "nonce")?;
        let ciphertext = b64(&envelope.ciphertext, "ciphertext")?;
        if nonce.len() != 24 {
            return Err(Error::Key("the private key's nonce is not 24 bytes".into()));
        }
        let key = derive(password, &salt, log_n)?;
        let plain = XSalsa20Poly1305::new(Key::from_slice(&key))
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .map_err(|_| Error::WrongPassword)?;
        let key = SigningKey::from_pkcs8_der(&plain)
            .map_err(|e| Error::Key(format!("the decrypted key is not a PKCS#8 ECDSA P-256 key: {e}")))?;
        Ok(PrivateKey { key })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { key: *self.key.verifying_key() }
    }

    /// ECDSA P-256 over SHA-256, ASN.1 DER (deterministic, RFC 6979: the same payload always
    /// gives the same signature, so a repeated signing recognises its own layer).
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let signature: DerSignature = Signer::sign(&self.key, payload);
        signature.as_bytes().to_vec()
    }

    /// Encrypts this key in cosign's format (tests and fixtures; legacy scrypt cost to stay fast).
    #[cfg(test)]
    pub fn encrypt_for_tests(&self, password: &[u8], label: &str) -> String {
        use p256::pkcs8::EncodePrivateKey;
        let salt = [7u8; 32];
        let nonce = [9u8; 24];
        let key = derive(password, &salt, 15).unwrap();
        let der = self.key.to_pkcs8_der().unwrap();
        let ciphertext =
            XSalsa20Poly1305::new(Key::from_slice(&key)).encrypt(Nonce::from_slice(&nonce), der.as_bytes()).unwrap();
        let std = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": std.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": std.encode(nonce)},
            "ciphertext": std.encode(ciphertext),
        });
        pem_encode(label, serde_json::to_vec(&body).unwrap().as_slice())
    }

    /// A fixed key for tests (never a real one).
    #[cfg(test)]
    pub fn for_tests(seed: u8) -> PrivateKey {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        PrivateKey { key: SigningKey::from_slice(&bytes).unwrap() }
    }
}

/// A public key that verifies signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Parses a `PUBLIC KEY` PEM (PKIX), as `cosign.pub` and `/etc/pki/containers/*.pub` hold.
    pub fn from_pem(pem: &str) -> Result<PublicKey, Error> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(|key| PublicKey { key })
            .map_err(|e| Error::Key(format!("not an ECDSA P-256 PUBLIC KEY PEM: {e}")))
    }

    pub fn to_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Whether `signature` (ASN.1 DER, as cosign and containers/image write) signs `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        DerSignature::try_from(signature)
            .is_ok_and(|sig| Verifier::<DerSignature>::verify(&self.key, payload, &sig).is_ok())
    }

    /// `sha256:` + the first 16 hex digits of the SHA-256 of the DER public key: names the key
    /// in status and logs without being a secret.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let der = self.key.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
        let hash = hex::encode(sha2::Sha256::digest(&der));
        format!("sha256:{}", &hash[..16])
    }
}

fn derive(password: &[u8], salt: &[u8], log_n: u8) -> Result<[u8; 32], Error> {
    let params = scrypt::Params::new(log_n, 8, 1).map_err(|e| Error::Key(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|e| Error::Key(format!("scrypt: {e}")))?;
    Ok(key)
}

fn b64(text: &str, what: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Error::Key(format!("the private key's {what} is not base64")))
}

/// The label and decoded body of the first PEM block.
fn pem_body(text: &str) -> Result<(String, Vec<u8>), Error> {
    let not_pem = || Error::Key("the private key is not a PEM block (-----BEGIN ...-----)".into());
    let start = text.find("-----BEGIN ").ok_or_else(not_pem)?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----").ok_or_else(not_pem)?;
    let end = rest.find(&format!("-----END {label}-----")).ok_or_else(not_pem)?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| not_pem())?;
    Ok((label.to_string(), bytes))
}

#[cfg(test)]
fn pem_encode(label: &str, body: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let lines: Vec<&str> = encoded.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypts_both_pem_labels_with_and_without_password() {
        let key = PrivateKey::for_tests(3);
        for label in [SIGSTORE_PEM, COSIGN_PEM] {
            for password in [&b""[..], b"correct horse"] {
                let pem = key.encrypt_for_tests(password, label);
                let back = PrivateKey::decrypt(pem.as_bytes(), password).unwrap();
                assert_eq!(back, key);
            }
        }
    }

    #[test]
    fn wrong_password_and_bad_files_are_clear_errors() {
        let key = PrivateKey::for_tests(3);
        let pem = key.encrypt_for_tests(b"right", SIGSTORE_PEM);
        assert!(matches!(PrivateKey::decrypt(pem.as_bytes(), b"wrong"), Err(Error::WrongPassword)));
        assert!(matches!(PrivateKey::decrypt(pem.as_bytes(), b""), Err(Error::WrongPassword)));
        let cases: Vec<(String, &str)> = vec![
            ("not a key".into(), "not a PEM block"),
            (key.public().to_pem(), "\"PUBLIC KEY\" PEM block"),
            (pem.replace(SIGSTORE_PEM, "EC PRIVATE KEY"), "EC PRIVATE KEY"),
            (pem_encode(SIGSTORE_PEM, b"{}"), "not cosign's JSON"),
            (
                pem_encode(
                    SIGSTORE_PEM,
                    br#"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":""},"cipher":{"name":"nacl/secretbox","nonce":""},"ciphertext":""}"#,
                ),
                "unsupported scrypt parameters",
            ),
        ];
        for (text, expected) in cases {
            let err = PrivateKey::decrypt(text.as_bytes(), b"").unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn signatures_verify_only_with_the_matching_key_and_payload() {
        let key = PrivateKey::for_tests(3);
        let other = PrivateKey::for_tests(4);
        let sig = key.sign(b"payload");
        assert_eq!(sig, key.sign(b"payload"), "RFC 6979: deterministic");
        assert!(key.public().verifies(b"payload", &sig));
        assert!(!key.public().verifies(b"payload!", &sig));
        assert!(!other.public().verifies(b"payload", &sig));
        assert!(!key.public().verifies(b"payload", b"garbage"));
        let pem = key.public().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), key.public());
        assert!(format!("{key:?}").starts_with("PrivateKey(public sha256:"));
    }
}
