//! A tiny fault-injecting HTTP proxy in front of the registry fixture: it forwards requests to the
//! real registry unless a fault is queued, in which case it answers 429 (with or without
//! `Retry-After`), answers 503, or drops the connection without answering. It records every
//! request it saw (method, path, query, time), so tests can check how often and when clients
//! retried.
//!
//! Optionally it also puts docker token authentication in front of the registry (what ghcr.io,
//! Docker Hub and quay.io speak): requests need `Authorization: Bearer <token>` covering the
//! repository and action, otherwise they get a 401 with a `Bearer realm=...` challenge; the
//! proxy's `/token` endpoint issues tokens for the requested scopes to Basic credentials. The
//! registry's docker-registry binary can only do token auth with a signing PKI, which this keeps
//! out of the tests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the proxy does instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with a `TOOMANYREQUESTS` body and this `Retry-After` value, if any.
    RateLimit { retry_after: Option<String> },
    /// 503 Service Unavailable.
    Unavailable,
    /// Close the connection without an answer.
    Drop,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub at: Instant,
    /// The fault applied, or `None` when forwarded.
    pub fault: Option<Fault>,
}

struct State {
    addr: String,
    upstream: String,
    /// `user:password` accepted by `/token`, when token auth is on.
    token_auth: Option<String>,
    /// Issued token -> granted scopes.
    tokens: Mutex<HashMap<String, Vec<String>>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Faults for requests whose path contains a text: (text, fault, times left).
    targeted: Mutex<Vec<(String, Fault, usize)>>,
    /// Forward cross-repository mount requests as plain upload starts (the registry then answers
    /// 202 with an upload session, as registries that do not mount do).
    refuse_mounts: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    client: reqwest::Client,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    addr: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`HOST:PORT`, plain HTTP).
    pub async fn start(upstream: &str) -> FaultProxy {
        Self::launch(upstream, None).await
    }

    /// Starts a proxy that also requires docker token authentication; `/token` accepts these
    /// Basic credentials only.
    pub async fn start_with_token_auth(upstream: &str, user: &str, password: &str) -> FaultProxy {
        Self::launch(upstream, Some(format!("{user}:{password}"))).await
    }

    async fn launch(upstream: &str, token_auth: Option<String>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            addr: addr.clone(),
            upstream: upstream.to_string(),
            token_auth,
            tokens: Mutex::default(),
            faults: Mutex::default(),
            targeted: Mutex::default(),
            refuse_mounts: AtomicBool::new(false),
            seen: Mutex::default(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    // A dropped connection ends with an error here; that is the point of it.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    /// `127.0.0.1:PORT`, to use as the registry host in image references.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// Applies `fault` to the next `times` requests (after the ones already queued).
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut faults = self.state.faults.lock().unwrap();
        faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Applies `fault` to the next `times` requests whose path contains `path_part` (e.g. one
    /// tag's `/manifests/TAG`); other requests pass. Checked before the queue of [`inject`].
    pub fn inject_on(&self, path_part: &str, fault: Fault, times: usize) {
        self.state.targeted.lock().unwrap().push((path_part.to_string(), fault, times));
    }

    /// Makes the registry refuse (or accept again) cross-repository blob mounts: a mount request
    /// is forwarded without its `mount`/`from` parameters, so the registry starts an upload.
    pub fn refuse_mounts(&self, refuse: bool) {
        self.state.refuse_mounts.store(refuse, Ordering::SeqCst);
    }

    /// Drops faults that were queued but not used.
    pub fn clear(&self) {
        self.state.faults.lock().unwrap().clear();
        self.state.targeted.lock().unwrap().clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Forgets the recorded requests.
    pub fn reset_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

fn targeted_fault(state: &State, path: &str) -> Option<Fault> {
    let mut targeted = state.targeted.lock().unwrap();
    let (_, fault, left) = targeted.iter_mut().find(|(part, _, left)| *left > 0 && path.contains(part.as_str()))?;
    *left -= 1;
    Some(fault.clone())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let fault = targeted_fault(&state, req.uri().path()).or_else(|| state.faults.lock().unwrap().pop_front());
    state.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or_default().to_string(),
        at: Instant::now(),
        fault: fault.clone(),
    });
    match fault {
        Some(Fault::RateLimit { retry_after }) => {
            let mut answer =
                Response::builder().status(StatusCode::TOO_MANY_REQUESTS).header("content-type", "application/json");
            if let Some(value) = retry_after {
                answer = answer.header("retry-after", value);
            }
            let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
            Ok(answer.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap())
        }
        Some(Fault::Unavailable) => Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::from_static(b"service unavailable")))
            .unwrap()),
        Some(Fault::Drop) => Err(std::io::Error::other("fault proxy dropped the connection")),
        None => {
            let req = match &state.token_auth {
                Some(accepted) => match authorize(&state, accepted, req) {
                    Ok(req) => req,
                    Err(answer) => return Ok(*answer),
                },
                None => req,
            };
            let req = if state.refuse_mounts.load(Ordering::SeqCst) { without_mount(req) } else { req };
            Ok(forward(&state, req).await.unwrap_or_else(|e| {
                Response::builder().status(StatusCode::BAD_GATEWAY).body(Full::new(Bytes::from(e))).unwrap()
            }))
        }
    }
}

fn unauthorized(state: &State, scope: Option<&str>, code: &str) -> Response<Full<Bytes>> {
    let mut challenge = format!(r#"Bearer realm="http://{}/token",service="kzo-proxy""#, state.addr);
    if let Some(scope) = scope {
        challenge.push_str(&format!(r#",scope="{scope}""#));
    }
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"authentication required"}}]}}"#);
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("www-authenticate", challenge)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}")).unwrap().query_pairs().into_owned().collect()
}

/// Token auth: answers `/token`, and lets a registry request through (minus its token) only when
/// its token covers the repository and action.
fn authorize(
    state: &State,
    accepted: &str,
    req: Request<Incoming>,
) -> Result<Request<Incoming>, Box<Response<Full<Bytes>>>> {
    use base64::Engine as _;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let authorization =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if path == "/token" {
        let basic = authorization
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if basic.as_deref() != Some(accepted) {
            return Err(Box::new(unauthorized(state, None, "UNAUTHORIZED")));
        }
        let scopes: Vec<String> =
            query_pairs(&query).into_iter().filter(|(k, _)| k == "scope").map(|(_, v)| v).collect();
        let mut tokens = state.tokens.lock().unwrap();
        let token = format!("tok-{}", tokens.len() + 1);
        tokens.insert(token.clone(), scopes);
        let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
        return Err(Box::new(Response::builder().status(StatusCode::OK).body(Full::new(Bytes::from(body))).unwrap()));
    }
    let granted = authorization
        .strip_prefix("Bearer ")
        .and_then(|t| state.tokens.lock().unwrap().get(t).cloned())
        .unwrap_or_default();
    let covers = |repo: &str, action: &str| {
        granted.iter().any(|scope| {
            scope
                .strip_prefix("repository:")
                .and_then(|rest| rest.rsplit_once(':'))
                .is_some_and(|(name, actions)| name == repo && actions.split(',').any(|a| a == action))
        })
    };
    let Some(rest) = path.strip_prefix("/v2/").filter(|r| !r.is_empty()) else {
        return if granted.is_empty() { Err(Box::new(unauthorized(state, None, "UNAUTHORIZED"))) } else { Ok(req) };
    };
    let repo = match (rest.rfind("/manifests/"), rest.rfind("/blobs/")) {
        (Some(i), _) | (None, Some(i)) => &rest[..i],
        (None, None) => rest,
    };
    let action = if matches!(req.method().as_str(), "GET" | "HEAD") { "pull" } else { "push" };
    if !covers(repo, action) {
        let scope = format!("repository:{repo}:{action}");
        return Err(Box::new(unauthorized(state, Some(&scope), "UNAUTHORIZED")));
    }
    // A mount needs pull on the source too; without it real registries start a plain upload.
    let pairs = query_pairs(&query);
    let from = pairs.iter().find(|(k, _)| k == "from").map(|(_, v)| v.clone());
    let mut req = req;
    if let Some(from) = from
        && !covers(&from, "pull")
    {
        *req.uri_mut() = path.parse().unwrap();
    }
    req.headers_mut().remove("authorization");
    Ok(req)
}

/// A mount request (`POST .../blobs/uploads/?mount=...&from=...`) as a plain upload start.
fn without_mount(mut req: Request<Incoming>) -> Request<Incoming> {
    let query = req.uri().query().unwrap_or_default();
    if req.method() == hyper::Method::POST && query_pairs(query).iter().any(|(k, _)| k == "mount") {
        *req.uri_mut() = req.uri().path().parse().unwrap();
    }
    req
}

async fn forward(state: &State, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, String> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{}{path}", state.upstream);
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let mut upstream = state.client.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "connection" | "content-length" | "transfer-encoding") {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.map_err(|e| e.to_string())?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name.as_str() == "location" {
            let location = value.to_str().unwrap_or_default().replace(&state.upstream, &state.addr);
            response = response.header(name, location);
        } else if !matches!(name.as_str(), "connection" | "transfer-encoding") {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
    response.body(Full::new(bytes)).map_err(|e| e.to_string())
}
