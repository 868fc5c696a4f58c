//! A tiny fault-injecting HTTP proxy in front of the registry fixture: it forwards requests to the
//! real registry unless a fault is queued, in which case it answers 429 (with or without
//! `Retry-After`), answers 503, or drops the connection without answering. It records every
//! request it saw (method, path, time), so tests can check how often and when clients retried.

use std::collections::VecDeque;
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
    pub at: Instant,
    /// The fault applied, or `None` when forwarded.
    pub fault: Option<Fault>,
}

struct State {
    upstream: String,
    faults: Mutex<VecDeque<Fault>>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            faults: Mutex::default(),
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

    /// Drops faults that were queued but not used.
    pub fn clear(&self) {
        self.state.faults.lock().unwrap().clear();
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

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let fault = state.faults.lock().unwrap().pop_front();
    state.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
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
        None => Ok(forward(&state, req).await.unwrap_or_else(|e| {
            Response::builder().status(StatusCode::BAD_GATEWAY).body(Full::new(Bytes::from(e))).unwrap()
        })),
    }
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
        if !matches!(name.as_str(), "connection" | "transfer-encoding") {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
    response.body(Full::new(bytes)).map_err(|e| e.to_string())
}
