//! The operator's HTTP endpoints: `/healthz` (the process serves requests), `/readyz` (every
//! watch has delivered its first complete list) and `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::controllers::metrics::{self, Metrics};

/// What the endpoints read.
pub struct State {
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
}

/// Serves until `shutdown` resolves. Connections in flight finish on their own (all answers are
/// small and immediate).
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "http: accept");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, state.clone()));
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(%peer, error = %e, "http: connection");
            }
        });
    }
}

/// Binds the listener (so a taken port fails `run` at once, with the address in the message).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

async fn answer(request: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: StatusCode, body: &str| {
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"));
    }
    Ok(match request.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n"),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(metrics::CONTENT_TYPE));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found: /healthz, /readyz, /metrics\n"),
    })
}
