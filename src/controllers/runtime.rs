//! What both controllers do the same way on kube-runtime: an `Api` for one namespace or all,
//! waiting for a cache's first list, logging the controller stream, the error backoff, Event
//! notes, and reading a build's credentials Secret.

use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::registry::{CredentialSet, DOCKER_CONFIG_SECRET_KEY};

/// Longest Event note; kube rejects notes over 1 KiB.
pub const MAX_EVENT_NOTE: usize = 1024;

/// Longest wait of a reconcile for the caches' first lists; then it comes back after
/// [`CACHE_RETRY`]. A cache that cannot list (RBAC, an outage) never holds a reconcile, and
/// with it shutdown, for longer.
pub const CACHE_WAIT: Duration = Duration::from_secs(10);
/// When a reconcile that found the caches not synced comes back.
pub const CACHE_RETRY: Duration = Duration::from_secs(5);

/// An `Api` over `namespace`, or over every namespace.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Waits until `store` has its first complete list. kube's readiness signal keeps the waker of
/// only its latest waiter (the controller waits on its primary store too, and reconciles and
/// `/readyz` wait concurrently), so a waiter that was not woken asks again every 100 ms.
pub async fn ready<K>(store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await.is_err() {}
}

/// Logs what a controller stream yields besides reconcile results: reconcile errors are logged
/// (and counted) by the error policies, so only queue and watch errors are left here.
pub fn log_stream_error<T, E, Q>(controller: &str, result: Result<T, controller::Error<E, Q>>)
where
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    match result {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(controller, error = %e, "controller stream"),
    }
}

/// The wait before retry number `attempts` (1-based): `base`, doubling, at most `max`.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(max)
}

/// `text` cut to at most `max` bytes at a character boundary, with `...` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The credentials in the `kubernetes.io/dockerconfigjson` Secret `namespace/name`.
/// `Ok(Err(message))` when the Secret is missing, not readable by the operator, or not a docker
/// config: the message starts with `what` (the Secret as the user knows it) and says what to do;
/// it never contains the Secret's content. Other API errors are `Err`.
pub async fn secret_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
) -> Result<Result<CredentialSet, String>, kube::Error> {
    let secret = match Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(Err(format!("{what} not found"))),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Err(format!(
                "{what} cannot be read: the operator's service account needs get on secrets in {namespace}"
            )));
        }
        Err(e) => return Err(e),
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(DOCKER_CONFIG_SECRET_KEY)) else {
        return Ok(Err(format!(
            "{what} has no {DOCKER_CONFIG_SECRET_KEY} key; create it with `kubectl create secret docker-registry`"
        )));
    };
    // Credential parse errors name hosts and fields, never values.
    Ok(CredentialSet::from_docker_config(&bytes.0).map_err(|e| format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let secs: Vec<u64> = (1..=8).map(|n| backoff(base, max, n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(base, max, u32::MAX), max);
        assert_eq!(backoff(base, max, 0), base);
    }

    #[test]
    fn event_notes_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(600), MAX_EVENT_NOTE);
        assert!(cut.len() <= MAX_EVENT_NOTE && cut.ends_with("..."), "{}", cut.len());
    }
}
