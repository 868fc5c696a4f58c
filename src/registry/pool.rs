//! One client per credential set. The controller reads each build's `kubernetes.io/dockerconfigjson`
//! Secret and asks the pool for the matching client, so builds with different Secrets never share
//! tokens, while builds with the same Secret content share one client and its token cache.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::client::insecure_hosts;
use super::{ClientSettings, CredentialSet, Error, OciRegistry, RequestCounters, RetryPolicy};
use crate::cli::common::RegistryArgs;
use crate::pipeline::scan_memory::ScanMemory;

/// Clients kept before the least recently created one is dropped (Secrets rotate; the pool must
/// not grow without bound).
const CAPACITY: usize = 64;

/// Hands out one [`OciRegistry`] per credential set; all share the same insecure-registry list,
/// retry policy, request counters and TLS configuration. The pool also owns the process's layer
/// scan memory: what a layer holds does not depend on who reads it, so every build shares it.
pub struct ClientPool {
    insecure_registries: BTreeSet<String>,
    retry: RetryPolicy,
    counters: Arc<RequestCounters>,
    clients: Mutex<Clients>,
    scan_memory: Arc<ScanMemory>,
}

/// The clients and their creation order (oldest first).
type Clients = (HashMap<CredentialSet, Arc<OciRegistry>>, VecDeque<CredentialSet>);

impl fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.clients.lock().map(|c| c.0.len()).unwrap_or_default();
        f.debug_struct("ClientPool")
            .field("insecure_registries", &self.insecure_registries)
            .field("clients", &count)
            .finish_non_exhaustive()
    }
}

impl ClientPool {
    pub fn new(
        insecure_registries: BTreeSet<String>,
        retry: RetryPolicy,
        counters: Arc<RequestCounters>,
    ) -> ClientPool {
        ClientPool { insecure_registries, retry, counters, clients: Mutex::default(), scan_memory: Arc::default() }
    }

    /// A pool for `--insecure-registry` flags (credentials come per call).
    pub fn from_args(args: &RegistryArgs) -> Result<ClientPool, Error> {
        Ok(ClientPool::new(insecure_hosts(&args.insecure_registries)?, RetryPolicy::default(), Arc::default()))
    }

    /// The shared request counters (for `registry_requests_total`).
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.counters
    }

    /// The process's layer scan memory (bounded, see [`crate::pipeline::scan_memory`]).
    pub fn scan_memory(&self) -> &Arc<ScanMemory> {
        &self.scan_memory
    }

    /// The client for a credential set (created on first use).
    pub fn client(&self, credentials: &CredentialSet) -> Result<Arc<OciRegistry>, Error> {
        let mut guard = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (clients, order) = &mut *guard;
        if let Some(client) = clients.get(credentials) {
            return Ok(client.clone());
        }
        let client = Arc::new(OciRegistry::new(ClientSettings {
            credentials: credentials.clone(),
            insecure_registries: self.insecure_registries.clone(),
            retry: self.retry.clone(),
            counters: self.counters.clone(),
            ..ClientSettings::default()
        })?);
        if clients.len() >= CAPACITY
            && let Some(oldest) = order.pop_front()
        {
            clients.remove(&oldest);
        }
        clients.insert(credentials.clone(), client.clone());
        order.push_back(credentials.clone());
        Ok(client)
    }

    /// The client for the content of a docker config / `.dockerconfigjson` Secret key.
    pub fn client_for_docker_config(&self, bytes: &[u8]) -> Result<Arc<OciRegistry>, Error> {
        self.client(&CredentialSet::from_docker_config(bytes)?)
    }

    /// The anonymous client.
    pub fn anonymous(&self) -> Result<Arc<OciRegistry>, Error> {
        self.client(&CredentialSet::anonymous())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Credential;

    #[test]
    fn one_client_per_credential_set() {
        let pool = ClientPool::new(BTreeSet::new(), RetryPolicy::default(), Arc::default());
        let mut a = CredentialSet::anonymous();
        a.insert("ghcr.io", Credential::new("a", "1"));
        let mut b = CredentialSet::anonymous();
        b.insert("ghcr.io", Credential::new("a", "2"));
        let a1 = pool.client(&a).unwrap();
        let a2 = pool.client(&a.clone()).unwrap();
        let b1 = pool.client(&b).unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
        assert!(Arc::ptr_eq(a1.counters(), b1.counters()), "one set of counters for the pool");
        let json = br#"{"auths":{"ghcr.io":{"username":"a","password":"1"}}}"#;
        assert!(Arc::ptr_eq(&pool.client_for_docker_config(json).unwrap(), &a1));
        assert!(pool.client_for_docker_config(br#"{"credsStore":"osxkeychain"}"#).is_err());
        assert!(format!("{pool:?}").contains("clients: 2"), "{pool:?}");
    }

    #[test]
    fn every_client_shares_one_tls_configuration_built_once() {
        let pool = ClientPool::new(BTreeSet::new(), RetryPolicy::default(), Arc::default());
        let clients: Vec<_> = (0..5)
            .map(|i| {
                let mut set = CredentialSet::anonymous();
                set.insert("ghcr.io", Credential::new("u", i.to_string()));
                pool.client(&set).unwrap()
            })
            .collect();
        let other_pool = ClientPool::new(BTreeSet::new(), RetryPolicy::default(), Arc::default());
        let other = other_pool.anonymous().unwrap();
        for client in clients.iter().chain([&other]) {
            assert!(Arc::ptr_eq(client.tls_config(), clients[0].tls_config()), "one TLS config per process");
        }
        assert!(Arc::ptr_eq(clients[0].tls_config(), &crate::tls::client_config().unwrap()));
        assert_eq!(crate::tls::client_config_builds(), 1, "trust roots loaded once for {} clients", clients.len() + 1);
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = ClientPool::new(BTreeSet::new(), RetryPolicy::default(), Arc::default());
        let first = pool.anonymous().unwrap();
        for i in 0..CAPACITY {
            let mut set = CredentialSet::anonymous();
            set.insert("ghcr.io", Credential::new("u", i.to_string()));
            pool.client(&set).unwrap();
        }
        assert_eq!(pool.clients.lock().unwrap().0.len(), CAPACITY);
        assert!(!Arc::ptr_eq(&first, &pool.anonymous().unwrap()), "the oldest client was dropped");
    }
}
