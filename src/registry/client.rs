//! [`OciRegistry`]: the [`RegistryClient`] implementation. Requests are made with reqwest (the
//! HTTP stack oci-client itself uses) because every answer must be classified from its status,
//! error codes and `Retry-After`, which `oci_client::Client` does not expose (docs/decisions.md).
//! Authentication follows the docker token protocol: answer a `WWW-Authenticate` challenge with
//! Basic credentials or a bearer token for exactly the scopes a request needs.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::auth::{Access, Challenge, TokenResponse, scopes};
use super::classify::{error_envelope, parse_retry_after};
use super::manifest::{MAX_MANIFEST_BYTES, infer_media_type, media_types};
use super::{
    AnswerClass, BlobStream, BlobTransfer, CredentialSet, Decision, Error, ImageRef, RawManifest, Redacted,
    RegistryClient, RequestCounters, RetryPolicy, validate_digest,
};
use crate::cli::common::RegistryArgs;

/// How to build an [`OciRegistry`].
#[derive(Clone)]
pub struct ClientSettings {
    pub credentials: CredentialSet,
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP; all others use HTTPS.
    pub insecure_registries: BTreeSet<String>,
    pub retry: RetryPolicy,
    /// Shared answer counters (metrics).
    pub counters: Arc<RequestCounters>,
    pub connect_timeout: Duration,
    /// Longest wait for any single read (also between the chunks of a streamed blob).
    pub read_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            credentials: CredentialSet::anonymous(),
            insecure_registries: BTreeSet::new(),
            retry: RetryPolicy::default(),
            counters: Arc::new(RequestCounters::new()),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("credentials", &self.credentials)
            .field("insecure_registries", &self.insecure_registries)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ClientSettings {
    /// Settings from the command line: `--registry-config` credentials (anonymous without it) and
    /// `--insecure-registry` hosts.
    pub fn from_args(args: &RegistryArgs) -> Result<ClientSettings, Error> {
        let credentials = match &args.registry_config {
            Some(path) => CredentialSet::from_file(path)?,
            None => CredentialSet::anonymous(),
        };
        Ok(ClientSettings {
            credentials,
            insecure_registries: insecure_hosts(&args.insecure_registries)?,
            ..ClientSettings::default()
        })
    }
}

/// Validates `--insecure-registry` values: bare `HOST[:PORT]`.
pub fn insecure_hosts(values: &[String]) -> Result<BTreeSet<String>, Error> {
    values
        .iter()
        .map(|v| {
            let host = v.trim().to_ascii_lowercase();
            let ok = !host.is_empty()
                && !host.contains("://")
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
            if ok { Ok(host) } else { Err(Error::InsecureRegistry(v.clone())) }
        })
        .collect()
}

/// The registry client. Cheap to share (`Arc`); caches challenges and tokens per host.
pub struct OciRegistry {
    http: reqwest::Client,
    /// The process's one TLS configuration ([`crate::tls::client_config`]).
    tls: Arc<rustls::ClientConfig>,
    settings: ClientSettings,
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
}

struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

impl fmt::Debug for OciRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciRegistry")
            .field("credentials", &self.settings.credentials)
            .field("insecure_registries", &self.settings.insecure_registries)
            .field("tokens", &Redacted)
            .finish_non_exhaustive()
    }
}

/// A replayable request body (streamed bodies go through `send_stream`).
enum Body {
    Empty,
    Bytes(Bytes),
}

/// One request to a registry host.
struct Req<'a> {
    method: Method,
    url: Url,
    /// The registry host (credentials, challenges and tokens are per host).
    host: &'a str,
    scopes: Vec<String>,
    headers: HeaderMap,
    body: Body,
}

impl OciRegistry {
    pub fn new(settings: ClientSettings) -> Result<OciRegistry, Error> {
        // The trust roots and TLS config are built once per process, not per client; the clone
        // handed to reqwest shares the verifier (and its roots) with every other client.
        let tls = crate::tls::client_config().map_err(Error::Client)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
            .user_agent(concat!("kinoite-zfs-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(OciRegistry { http, tls, settings, challenges: Mutex::default(), tokens: Mutex::default() })
    }

    /// A client from command-line flags.
    pub fn from_args(args: &RegistryArgs) -> Result<OciRegistry, Error> {
        OciRegistry::new(ClientSettings::from_args(args)?)
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.settings.counters
    }

    /// The TLS configuration this client was built with (the process's one).
    pub fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    fn base(&self, host: &str) -> String {
        let scheme =
            if self.settings.insecure_registries.contains(&host.to_ascii_lowercase()) { "http" } else { "https" };
        format!("{scheme}://{host}/v2/")
    }

    fn url(&self, host: &str, path: &str) -> Result<Url, Error> {
        Url::parse(&format!("{}{path}", self.base(host)))
            .map_err(|e| Error::Invalid { what: format!("URL for {host}"), detail: e.to_string() })
    }

    fn manifest_url(&self, image: &ImageRef) -> Result<Url, Error> {
        self.url(image.api_host(), &format!("{}/manifests/{}", image.repository(), image.reference()))
    }

    fn blob_url(&self, image: &ImageRef, digest: &str) -> Result<Url, Error> {
        self.url(image.api_host(), &format!("{}/blobs/{digest}", image.repository()))
    }

    // ---- retries ------------------------------------------------------------------------------

    /// Runs `op` until it succeeds, fails permanently, or the retry policy gives up.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match op().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_transient() => err,
                Err(err) => return Err(err.with_attempts(attempts)),
            };
            match self.settings.retry.decide(attempts, err.retry_after(), jitter()) {
                Decision::RetryAfter(delay) => {
                    tracing::warn!(operation = what, attempt = attempts, delay_ms = delay.as_millis() as u64, error = %err, "transient registry error, retrying");
                    tokio::time::sleep(delay).await;
                }
                Decision::GiveUp => return Err(err.with_attempts(attempts)),
            }
        }
    }

    // ---- one request --------------------------------------------------------------------------

    /// Sends one request, answering one authentication challenge, and returns the response when
    /// it is a success; otherwise the classified error (attempts = 1).
    async fn send(&self, what: &str, req: &Req<'_>) -> Result<Response, Error> {
        let mut auth = self.known_authorization(what, req).await?;
        let mut challenged = false;
        loop {
            let mut builder = self.http.request(req.method.clone(), req.url.clone()).headers(req.headers.clone());
            if let Some(value) = &auth {
                builder = builder.header(header::AUTHORIZATION, value.clone());
            }
            if let Body::Bytes(bytes) = &req.body {
                builder = builder.body(bytes.clone());
            }
            let response = builder.send().await.map_err(|e| self.transport_error(what, req.host, &e))?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !challenged
                && let Some(challenge) = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse)
            {
                // A handshake answer, not a verdict: it is not counted; the retried request is.
                challenged = true;
                self.challenges
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(req.host.to_string(), challenge.clone());
                // A token the registry no longer accepts (revoked, expired early) is not reused.
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(req.host.to_string(), req.scopes.join(" ")));
                let fresh = self.authorization(what, req, &challenge).await?;
                if fresh.is_some() && fresh != auth {
                    auth = fresh;
                    continue;
                }
            }
            return self.check(what, req.host, response).await;
        }
    }

    /// Sends a request whose body is a one-shot stream. Authentication must already be known
    /// for the host (the caller made an earlier request to the same repository).
    async fn send_stream(&self, what: &str, req: &Req<'_>, body: reqwest::Body) -> Result<Response, Error> {
        let auth = self.known_authorization(what, req).await?;
        let mut builder =
            self.http.request(req.method.clone(), req.url.clone()).headers(req.headers.clone()).body(body);
        if let Some(value) = auth {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let response = builder.send().await.map_err(|e| self.transport_error(what, req.host, &e))?;
        self.check(what, req.host, response).await
    }

    /// Classifies a response: success passes through, anything else becomes an error.
    async fn check(&self, what: &str, host: &str, response: Response) -> Result<Response, Error> {
        let status = response.status().as_u16();
        if response.status().is_success() {
            self.record(AnswerClass::Present, what, Some(status));
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, k8s_openapi::jiff::Timestamp::now()));
        let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
        let (codes, message) = error_envelope(&body);
        let class = AnswerClass::classify(status, &codes);
        self.record(class, what, Some(status));
        Err(Error::Answer {
            class,
            what: what.to_string(),
            host: host.to_string(),
            status: Some(status),
            detail: message,
            retry_after,
            attempts: 1,
        })
    }

    fn transport_error(&self, what: &str, host: &str, error: &reqwest::Error) -> Error {
        self.record(AnswerClass::Unreachable, what, None);
        Error::Answer {
            class: AnswerClass::Unreachable,
            what: what.to_string(),
            host: host.to_string(),
            status: None,
            detail: error_chain(error),
            retry_after: None,
            attempts: 1,
        }
    }

    fn record(&self, class: AnswerClass, what: &str, status: Option<u16>) {
        self.settings.counters.record(class);
        tracing::debug!(operation = what, result = class.as_str(), status, "registry answer");
    }

    // ---- authentication -----------------------------------------------------------------------

    /// Authorization for a host whose challenge we already know (none before the first one).
    async fn known_authorization(&self, what: &str, req: &Req<'_>) -> Result<Option<HeaderValue>, Error> {
        let known = self.challenges.lock().unwrap_or_else(|e| e.into_inner()).get(req.host).cloned();
        match known {
            Some(challenge) => self.authorization(what, req, &challenge).await,
            None => Ok(None),
        }
    }

    /// The `Authorization` value answering `challenge` for the request's scopes.
    async fn authorization(
        &self,
        what: &str,
        req: &Req<'_>,
        challenge: &Challenge,
    ) -> Result<Option<HeaderValue>, Error> {
        let credential = self.settings.credentials.get(req.host);
        match challenge {
            Challenge::Basic => Ok(credential.map(|c| basic(c.username(), c.password()))),
            Challenge::Bearer { realm, service } => {
                let key = (req.host.to_string(), req.scopes.join(" "));
                if let Some(token) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
                    && token.expires > Instant::now()
                {
                    return Ok(Some(token.header.clone()));
                }
                let (header, lifetime) = self.fetch_token(what, req, realm, service.as_deref()).await?;
                let expires = Instant::now() + lifetime;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, CachedToken { header: header.clone(), expires });
                Ok(Some(header))
            }
        }
    }

    /// Asks the token service named by a bearer challenge for a token (with Basic credentials
    /// when we have them for the host, anonymously otherwise).
    async fn fetch_token(
        &self,
        what: &str,
        req: &Req<'_>,
        realm: &str,
        service: Option<&str>,
    ) -> Result<(HeaderValue, Duration), Error> {
        let what = format!("token for {what}");
        let mut url = Url::parse(realm).map_err(|e| Error::Invalid {
            what: what.clone(),
            detail: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        let realm_host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        // Credentials go to the token service in clear text only where plain HTTP was allowed.
        if url.scheme() != "https" && !self.settings.insecure_registries.contains(&realm_host) {
            return Err(Error::Invalid {
                what,
                detail: format!("token realm {realm:?} is not HTTPS (allowed only for --insecure-registry hosts)"),
            });
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in &req.scopes {
                query.append_pair("scope", scope);
            }
        }
        let mut builder = self.http.get(url);
        if let Some(credential) = self.settings.credentials.get(req.host) {
            builder = builder.header(header::AUTHORIZATION, basic(credential.username(), credential.password()));
        }
        let response = builder.send().await.map_err(|e| self.transport_error(&what, &realm_host, &e))?;
        let response = self.check(&what, &realm_host, response).await?;
        let body =
            read_limited(response, 1024 * 1024).await.map_err(|e| self.transport_error(&what, &realm_host, &e))?;
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::Invalid { what: what.clone(), detail: format!("token answer is not JSON: {e}") })?;
        let value = token
            .token()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            .ok_or_else(|| Error::Invalid { what: what.clone(), detail: "token answer has no usable token".into() })?;
        // The spec's minimum lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(60).max(60).saturating_sub(10));
        let mut value = value;
        value.set_sensitive(true);
        Ok((value, lifetime))
    }

    // ---- operations (one attempt each; the trait methods add retries) ------------------------

    fn pull(&self, image: &ImageRef) -> Vec<String> {
        scopes(&[(image.repository(), Access::Pull)])
    }

    fn push(&self, image: &ImageRef) -> Vec<String> {
        scopes(&[(image.repository(), Access::Push)])
    }

    async fn head_manifest_once(&self, what: &str, image: &ImageRef) -> Result<String, Error> {
        let req = Req {
            method: Method::HEAD,
            url: self.manifest_url(image)?,
            host: image.api_host(),
            scopes: self.pull(image),
            headers: accept_manifests(),
            body: Body::Empty,
        };
        let response = self.send(what, &req).await?;
        let header = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let digest = match header {
            Some(digest) => {
                validate_digest(&digest).map_err(|e| Error::Invalid { what: what.into(), detail: e.to_string() })?;
                digest
            }
            // Registries need not send the header; the digest of the GET body is authoritative.
            None => self.get_manifest_once(what, image).await?.digest,
        };
        if let Some(asked) = image.digest()
            && asked != digest
        {
            return Err(Error::Invalid { what: what.into(), detail: format!("registry answered digest {digest}") });
        }
        Ok(digest)
    }

    async fn get_manifest_once(&self, what: &str, image: &ImageRef) -> Result<RawManifest, Error> {
        let req = Req {
            method: Method::GET,
            url: self.manifest_url(image)?,
            host: image.api_host(),
            scopes: self.pull(image),
            headers: accept_manifests(),
            body: Body::Empty,
        };
        let response = self.send(what, &req).await?;
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let served = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = self.read_body(what, image.api_host(), response, MAX_MANIFEST_BYTES).await?;
        let digest = sha256(&bytes);
        for expected in [image.digest(), served.as_deref()].into_iter().flatten() {
            if expected != digest {
                return Err(Error::Invalid {
                    what: what.into(),
                    detail: format!("manifest content has digest {digest}, expected {expected}"),
                });
            }
        }
        Ok(RawManifest { media_type: infer_media_type(content_type.as_deref(), &bytes), digest, bytes })
    }

    /// Reads a whole body of at most `max` bytes; a broken connection is transient.
    async fn read_body(&self, what: &str, host: &str, mut response: Response, max: u64) -> Result<Bytes, Error> {
        let mut out = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (out.len() + chunk.len()) as u64 > max {
                        return Err(Error::Invalid {
                            what: what.into(),
                            detail: format!("answer is larger than {max} bytes"),
                        });
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(Bytes::from(out)),
                Err(e) => return Err(self.transport_error(what, host, &e)),
            }
        }
    }

    async fn get_blob_once(&self, what: &str, image: &ImageRef, digest: &str) -> Result<Response, Error> {
        validate_digest(digest)?;
        let req = Req {
            method: Method::GET,
            url: self.blob_url(image, digest)?,
            host: image.api_host(),
            scopes: self.pull(image),
            headers: HeaderMap::new(),
            body: Body::Empty,
        };
        self.send(what, &req).await
    }

    async fn blob_stream_once(
        &self,
        what: &str,
        image: &ImageRef,
        digest: &str,
    ) -> Result<(BlobStream, Option<u64>), Error> {
        let response = self.get_blob_once(what, image, digest).await?;
        let length = response.content_length();
        let stream = VerifiedStream {
            inner: response.bytes_stream().boxed(),
            hasher: Some(Sha256::new()),
            expected: digest.to_string(),
            what: what.to_string(),
            host: image.api_host().to_string(),
            counters: self.settings.counters.clone(),
        };
        Ok((stream.boxed(), length))
    }

    async fn head_blob_once(&self, what: &str, image: &ImageRef, digest: &str) -> Result<bool, Error> {
        validate_digest(digest)?;
        let req = Req {
            method: Method::HEAD,
            url: self.blob_url(image, digest)?,
            host: image.api_host(),
            scopes: self.pull(image),
            headers: HeaderMap::new(),
            body: Body::Empty,
        };
        match self.send(what, &req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_absent() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload in `to`, first trying to mount the blob from `from` on the same registry.
    /// `Ok(None)`: mounted. `Ok(Some(url))`: upload session to stream into.
    async fn start_upload(
        &self,
        what: &str,
        from: &ImageRef,
        to: &ImageRef,
        digest: &str,
    ) -> Result<Option<Url>, Error> {
        let same_registry = from.api_host() == to.api_host() && from.repository() != to.repository();
        let mut url = self.url(to.api_host(), &format!("{}/blobs/uploads/", to.repository()))?;
        let scopes = if same_registry {
            url.query_pairs_mut().append_pair("mount", digest).append_pair("from", from.repository());
            scopes(&[(to.repository(), Access::Push), (from.repository(), Access::Pull)])
        } else {
            self.push(to)
        };
        let req = Req {
            method: Method::POST,
            url,
            host: to.api_host(),
            scopes,
            headers: HeaderMap::new(),
            body: Body::Empty,
        };
        let response = self.send(what, &req).await?;
        if response.status() == StatusCode::CREATED && same_registry {
            return Ok(None);
        }
        if response.status() != StatusCode::ACCEPTED {
            return Err(Error::Invalid {
                what: what.into(),
                detail: format!("upload start answered HTTP {} (expected 202)", response.status().as_u16()),
            });
        }
        let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            Error::Invalid { what: what.into(), detail: "upload start answered without a Location".into() }
        })?;
        let base = Url::parse(&self.base(to.api_host()))
            .map_err(|e| Error::Invalid { what: what.into(), detail: e.to_string() })?;
        base.join(location)
            .map(Some)
            .map_err(|e| Error::Invalid { what: what.into(), detail: format!("bad upload Location {location:?}: {e}") })
    }

    async fn copy_blob_once(
        &self,
        what: &str,
        from: &ImageRef,
        to: &ImageRef,
        digest: &str,
    ) -> Result<BlobTransfer, Error> {
        let Some(mut upload) = self.start_upload(what, from, to, digest).await? else {
            return Ok(BlobTransfer::Mounted);
        };
        let (source, length) = self.blob_stream_once(what, from, digest).await?;
        let copied = Arc::new(AtomicU64::new(0));
        let counter = copied.clone();
        let source = source.map(move |chunk| {
            chunk.inspect(|bytes| {
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            })
        });
        upload.query_pairs_mut().append_pair("digest", digest);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let req = Req {
            method: Method::PUT,
            url: upload,
            host: to.api_host(),
            scopes: self.push(to),
            headers,
            body: Body::Empty,
        };
        self.send_stream(what, &req, reqwest::Body::wrap_stream(source)).await?;
        Ok(BlobTransfer::Copied { bytes: copied.load(Ordering::Relaxed) })
    }

    async fn push_blob_once(
        &self,
        what: &str,
        repository: &ImageRef,
        digest: &str,
        bytes: &Bytes,
    ) -> Result<(), Error> {
        // `from == to`: a plain upload session, no mount.
        let Some(mut upload) = self.start_upload(what, repository, repository, digest).await? else {
            return Ok(());
        };
        upload.query_pairs_mut().append_pair("digest", digest);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let req = Req {
            method: Method::PUT,
            url: upload,
            host: repository.api_host(),
            scopes: self.push(repository),
            headers,
            body: Body::Bytes(bytes.clone()),
        };
        self.send(what, &req).await?;
        Ok(())
    }

    async fn put_manifest_once(
        &self,
        what: &str,
        target: &ImageRef,
        media_type: &str,
        bytes: &Bytes,
    ) -> Result<String, Error> {
        let digest = sha256(bytes);
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| Error::Invalid { what: what.into(), detail: format!("bad media type {media_type:?}") })?;
        headers.insert(header::CONTENT_TYPE, content_type);
        let req = Req {
            method: Method::PUT,
            url: self.manifest_url(target)?,
            host: target.api_host(),
            scopes: self.push(target),
            headers,
            body: Body::Bytes(bytes.clone()),
        };
        let response = self.send(what, &req).await?;
        if let Some(served) = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok())
            && served != digest
        {
            return Err(Error::Invalid {
                what: what.into(),
                detail: format!("registry stored digest {served}, pushed {digest}"),
            });
        }
        Ok(digest)
    }
}

impl RegistryClient for OciRegistry {
    async fn resolve_digest(&self, reference: &ImageRef) -> Result<String, Error> {
        let what = format!("resolve {reference}");
        self.retrying(&what, || self.head_manifest_once(&what, reference)).await
    }

    async fn manifest(&self, reference: &ImageRef) -> Result<RawManifest, Error> {
        let what = format!("get manifest {reference}");
        self.retrying(&what, || self.get_manifest_once(&what, reference)).await
    }

    async fn read_blob(&self, repository: &ImageRef, digest: &str, max_bytes: u64) -> Result<Bytes, Error> {
        let what = format!("read blob {digest} of {}", repository.name());
        self.retrying(&what, || async {
            let response = self.get_blob_once(&what, repository, digest).await?;
            let bytes = self.read_body(&what, repository.api_host(), response, max_bytes).await?;
            let actual = sha256(&bytes);
            if actual != digest {
                return Err(Error::Invalid { what: what.clone(), detail: format!("content has digest {actual}") });
            }
            Ok(bytes)
        })
        .await
    }

    async fn blob_stream(&self, repository: &ImageRef, digest: &str) -> Result<BlobStream, Error> {
        let what = format!("read blob {digest} of {}", repository.name());
        let (stream, _) = self.retrying(&what, || self.blob_stream_once(&what, repository, digest)).await?;
        Ok(stream)
    }

    async fn blob_exists(&self, repository: &ImageRef, digest: &str) -> Result<bool, Error> {
        let what = format!("check blob {digest} in {}", repository.name());
        self.retrying(&what, || self.head_blob_once(&what, repository, digest)).await
    }

    async fn copy_blob(&self, from: &ImageRef, to: &ImageRef, digest: &str) -> Result<BlobTransfer, Error> {
        if self.blob_exists(to, digest).await? {
            return Ok(BlobTransfer::AlreadyPresent);
        }
        let what = format!("copy blob {digest} from {} to {}", from.name(), to.name());
        let transfer = self.retrying(&what, || self.copy_blob_once(&what, from, to, digest)).await?;
        tracing::debug!(operation = %what, ?transfer, "blob available");
        Ok(transfer)
    }

    async fn put_manifest(&self, target: &ImageRef, media_type: &str, bytes: Bytes) -> Result<String, Error> {
        let what = format!("push manifest {target}");
        if let Some(asked) = target.digest()
            && sha256(&bytes) != asked
        {
            return Err(Error::Invalid { what, detail: format!("manifest bytes have digest {}", sha256(&bytes)) });
        }
        self.retrying(&what, || self.put_manifest_once(&what, target, media_type, &bytes)).await
    }

    async fn push_blob(&self, repository: &ImageRef, bytes: Bytes) -> Result<String, Error> {
        let digest = sha256(&bytes);
        if self.blob_exists(repository, &digest).await? {
            return Ok(digest);
        }
        let what = format!("push blob {digest} to {}", repository.name());
        self.retrying(&what, || self.push_blob_once(&what, repository, &digest, &bytes)).await?;
        Ok(digest)
    }

    async fn referrers(&self, repository: &ImageRef, digest: &str) -> Result<Option<Bytes>, Error> {
        validate_digest(digest)?;
        let what = format!("list referrers of {}@{digest}", repository.name());
        let result = self
            .retrying(&what, || async {
                let mut headers = HeaderMap::new();
                headers.insert(header::ACCEPT, HeaderValue::from_static(media_types::OCI_INDEX));
                let req = Req {
                    method: Method::GET,
                    url: self.url(repository.api_host(), &format!("{}/referrers/{digest}", repository.repository()))?,
                    host: repository.api_host(),
                    scopes: self.pull(repository),
                    headers,
                    body: Body::Empty,
                };
                let response = self.send(&what, &req).await?;
                self.read_body(&what, repository.api_host(), response, MAX_MANIFEST_BYTES).await
            })
            .await;
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_absent() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A blob body that hashes what passes and ends with an error on a digest mismatch.
struct VerifiedStream {
    inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    hasher: Option<Sha256>,
    expected: String,
    what: String,
    host: String,
    counters: Arc<RequestCounters>,
}

impl Stream for VerifiedStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.hasher.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(hasher) = self.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.hasher = None;
                self.counters.record(AnswerClass::Unreachable);
                Poll::Ready(Some(Err(Error::Answer {
                    class: AnswerClass::Unreachable,
                    what: self.what.clone(),
                    host: self.host.clone(),
                    status: None,
                    detail: format!("connection lost while streaming: {}", error_chain(&e)),
                    retry_after: None,
                    attempts: 1,
                })))
            }
            Poll::Ready(None) => {
                let Some(hasher) = self.hasher.take() else { return Poll::Ready(None) };
                let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                if actual == self.expected {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(Error::Invalid {
                        what: self.what.clone(),
                        detail: format!("content has digest {actual}, expected {}", self.expected),
                    })))
                }
            }
        }
    }
}

fn accept_manifests() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers
        .insert(header::ACCEPT, HeaderValue::from_str(&media_types::MANIFESTS.join(", ")).expect("static media types"));
    headers
}

fn basic(username: &str, password: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The error and its causes on one line (reqwest puts the useful part in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn read_limited(mut response: Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// A number in `[0, 1)` for backoff jitter. std's `RandomState` is randomly keyed per instance,
/// which is all the randomness jitter needs (no extra dependency, no clock).
fn jitter() -> f64 {
    let value = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (value >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_hosts_are_bare_host_ports() {
        let hosts = insecure_hosts(&["127.0.0.1:5000".into(), "Registry.Local".into()]).unwrap();
        assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["127.0.0.1:5000", "registry.local"]);
        for bad in ["http://127.0.0.1:5000", "host/path", ""] {
            assert!(matches!(insecure_hosts(&[bad.into()]), Err(Error::InsecureRegistry(_))), "{bad}");
        }
    }

    #[test]
    fn plain_http_only_for_listed_hosts() {
        let settings = ClientSettings {
            insecure_registries: insecure_hosts(&["127.0.0.1:5000".into()]).unwrap(),
            ..ClientSettings::default()
        };
        let client = OciRegistry::new(settings).unwrap();
        let local = ImageRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(client.manifest_url(&local).unwrap().as_str(), "http://127.0.0.1:5000/v2/a/b/manifests/v1");
        let other = ImageRef::parse("127.0.0.1:5001/a/b:v1").unwrap();
        assert!(client.manifest_url(&other).unwrap().as_str().starts_with("https://"));
        let hub = ImageRef::parse("docker.io/library/alpine:3").unwrap();
        assert_eq!(
            client.manifest_url(&hub).unwrap().as_str(),
            "https://registry-1.docker.io/v2/library/alpine/manifests/3"
        );
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let mut credentials = CredentialSet::anonymous();
        credentials.insert("ghcr.io", super::super::Credential::new("robot", "hunter2-secret"));
        let client = OciRegistry::new(ClientSettings { credentials, ..ClientSettings::default() }).unwrap();
        let shown = format!("{client:?} {:?}", client.settings());
        assert!(shown.contains("ghcr.io"));
        assert!(!shown.contains("hunter2") && !shown.contains("robot"), "{shown}");
        assert!(!format!("{:?}", basic("robot", "hunter2-secret")).contains("Basic"));
    }
}
