//! The signing key of `spec.signing.keySecretRef` (Promotion and ZfsImageBuild): read from the
//! Secret and decrypted before anything is written, so a missing or unreadable key stops the
//! work with nothing moved. Messages name the Secret and the key field, never their content.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::promotion::{SIGNING_KEY_SECRET_KEY, SIGNING_PASSWORD_SECRET_KEY};
use crate::signing::{self, PrivateKey};

/// Why the key cannot be used: `SigningKeyMissing` or `SigningKeyUnreadable`, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub reason: &'static str,
    pub message: String,
}

pub const SIGNING_KEY_MISSING: &str = "SigningKeyMissing";
pub const SIGNING_KEY_UNREADABLE: &str = "SigningKeyUnreadable";

/// Reads and decrypts the key. `Ok(Err(_))` is a problem the user fixes; `Err` is an API error
/// worth retrying.
pub async fn read_key(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
) -> Result<Result<PrivateKey, KeyProblem>, kube::Error> {
    let missing = |message: String| Ok(Err(KeyProblem { reason: SIGNING_KEY_MISSING, message }));
    let secret = match Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return missing(format!(
                "{what} Secret {namespace}/{name} not found; create it with `kubectl create secret generic {name} --from-file={SIGNING_KEY_SECRET_KEY}=cosign.key --from-file={SIGNING_PASSWORD_SECRET_KEY}=password.txt`; nothing was written"
            ));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return missing(format!(
                "{what} Secret {namespace}/{name} cannot be read: the operator's service account needs get on secrets in {namespace}; nothing was written"
            ));
        }
        Err(e) => return Err(e),
    };
    let data = secret.data.unwrap_or_default();
    let Some(key) = data.get(SIGNING_KEY_SECRET_KEY).filter(|k| !k.0.is_empty()) else {
        return missing(format!(
            "{what} Secret {namespace}/{name} has no {SIGNING_KEY_SECRET_KEY} (or it is empty): it must hold the cosign private key; nothing was written"
        ));
    };
    let password = data.get(SIGNING_PASSWORD_SECRET_KEY).map(|p| p.0.clone()).unwrap_or_default();
    Ok(decrypt(key.0.clone(), password).await.map_err(|e| KeyProblem {
        reason: SIGNING_KEY_UNREADABLE,
        message: format!(
            "{what} Secret {namespace}/{name}: {e}; fix {SIGNING_KEY_SECRET_KEY}/{SIGNING_PASSWORD_SECRET_KEY} (a cosign key pair, `cosign generate-key-pair`); nothing was written"
        ),
    }))
}

/// scrypt takes ~100 ms and 64 MiB: off the async threads.
async fn decrypt(key: Vec<u8>, password: Vec<u8>) -> Result<PrivateKey, signing::Error> {
    // A trailing newline from `echo pw > file` is not part of the password (as cosign reads it).
    let password = password.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(password);
    tokio::task::spawn_blocking(move || PrivateKey::decrypt(&key, &password))
        .await
        .unwrap_or_else(|e| Err(signing::Error::Key(format!("decryption did not finish: {e}"))))
}
