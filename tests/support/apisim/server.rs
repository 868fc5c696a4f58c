//! HTTP: hyper's HTTP/1.1 server, routing of Kubernetes API paths to discovery, OpenAPI and the
//! verbs, query and header parsing, fault injection and request counting, and responses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::error::{ApiError, success_status};
use super::meta::meta_str;
use super::proto::{self, ProtoError};
use super::render::{self, Repr};
use super::resources;
use super::selector::{FieldSelector, LabelSelector};
use super::verbs::{Api, DeleteParams, FieldValidation, ListParams, PatchType, Propagation, Target, WriteParams};
use super::watch::{self, WatchSpec};
use super::{Shared, Verb, openapi};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Accepts connections until `shutdown` fires.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    // Connection errors (clients going away, dropped watches) end only that connection.
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

struct Req {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.q(key), Some("true" | "1"))
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

/// Percent-decoding; `+` means a space only in query strings.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) if plus_is_space => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error_response(&ApiError::BadRequest(format!("reading the request body: {e}"))),
    };
    let path = parts.uri.path().to_string();
    let req = Req { method: parts.method, query: parse_query(parts.uri.query()), headers: parts.headers, body };
    match dispatch(&shared, &path, &req) {
        Ok(Reply::Response(response)) => response,
        Ok(Reply::Watch(plan, spec)) => {
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(watch::run(shared.clone(), plan, spec, tx));
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
            Response::builder()
                .status(StatusCode::OK)
                .header("Content-Type", "application/json")
                .body(BoxBody::new(StreamBody::new(stream)))
                .expect("valid response")
        }
        Err(e) => error_response(&e),
    }
}

enum Reply {
    Response(Response<Body>),
    Watch(super::verbs::WatchPlan, WatchSpec),
}

fn full(bytes: Bytes) -> Body {
    BoxBody::new(Full::new(bytes).map_err(|never: Infallible| match never {}))
}

fn bytes_response(code: u16, bytes: Bytes, warnings: &[String]) -> Response<Body> {
    let mut builder = Response::builder().status(code).header("Content-Type", "application/json");
    for warning in warnings {
        builder = builder.header("Warning", format!("299 - {}", Value::String(warning.clone())));
    }
    builder.body(full(bytes)).expect("valid response")
}

fn json_response(code: u16, value: &Value, warnings: &[String]) -> Response<Body> {
    bytes_response(code, Bytes::from(serde_json::to_vec(value).expect("JSON")), warnings)
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut response = json_response(e.code(), &e.status(), &[]);
    if e.code() == 429 {
        response.headers_mut().insert("Retry-After", http::HeaderValue::from_static("1"));
    }
    response
}

fn not_found_path() -> ApiError {
    ApiError::NotFound {
        group: String::new(),
        resource: "the server could not find the requested resource".into(),
        name: String::new(),
    }
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-apisim", "gitCommit": "", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "n/a", "compiler": "rust", "platform": "linux/amd64",
    })
}

fn dispatch(shared: &Arc<Shared>, path: &str, req: &Req) -> Result<Reply, ApiError> {
    let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let resource_request = matches!(s.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if !resource_request {
        shared.count_discovery();
        if req.method != Method::GET {
            return Err(ApiError::MethodNotAllowed);
        }
        let store = shared.store.lock().expect("store lock");
        let types = store.types.values().map(|t| t.as_ref());
        let body = match s.as_slice() {
            ["version"] => version_info(),
            ["healthz" | "livez" | "readyz"] => {
                return Ok(Reply::Response(
                    Response::builder().status(200).body(full(Bytes::from_static(b"ok"))).expect("valid response"),
                ));
            }
            ["api"] => resources::core_versions(&shared.address),
            ["apis"] => resources::group_list(types),
            ["apis", group] => resources::group(types, group).ok_or_else(not_found_path)?,
            ["api", version] => resources::resource_list(types, "", version).ok_or_else(not_found_path)?,
            ["apis", group, version] => resources::resource_list(types, group, version).ok_or_else(not_found_path)?,
            ["openapi", "v3"] => openapi::index(store.types.values().map(|t| t.as_ref())),
            ["openapi", "v3", rest @ ..] => openapi::document(types, &rest.join("/")).ok_or_else(not_found_path)?,
            _ => return Err(not_found_path()),
        };
        return Ok(Reply::Response(json_response(200, &body, &[])));
    }
    let (group, version, rest) = match s.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => unreachable!("matched above"),
    };
    // namespaces/{ns}/{plural}[/{name}[/{sub}]], or {plural}[/{name}[/{sub}]]
    let namespaced_path =
        rest.len() >= 3 && rest[0] == "namespaces" && !(rest.len() == 3 && ["status", "finalize"].contains(&rest[2]));
    let (namespace, rest) = if namespaced_path { (Some(rest[1].to_string()), &rest[2..]) } else { (None, rest) };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(*sub)),
        _ => return Err(not_found_path()),
    };
    let t = shared.store.lock().expect("store lock").lookup(group, version, plural).ok_or_else(not_found_path)?;
    if namespace.is_some() && !t.namespaced {
        return Err(not_found_path());
    }
    let status = match sub {
        None => false,
        Some("status") if t.status_subresource => true,
        Some(_) => return Err(not_found_path()),
    };
    let target = Target { t: t.clone(), version: version.to_string(), namespace, name, status };
    let watch = req.flag("watch");
    let verb = match (&req.method, target.name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let resource = if status { format!("{}/status", t.qualified()) } else { t.qualified() };
    shared.count(verb, &resource);
    shared.injected_failure(verb, &resource)?;
    let repr = render::negotiate(req.header("accept"))
        .ok_or_else(|| ApiError::NotAcceptable("only application/json is served by the simulator".into()))?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut store = shared.store.lock().expect("store lock");
    let mut api = Api::new(&mut store, now);
    let version = target.version.clone();
    match verb {
        Verb::Get => {
            let stored = api.get(&target)?;
            if repr == Repr::Table {
                let table = render::table(&t, &version, &[stored], api.store.rv, None, now);
                return Ok(Reply::Response(json_response(200, &table, &[])));
            }
            Ok(Reply::Response(bytes_response(200, render::object_bytes(&stored, &t, &version, repr), &[])))
        }
        Verb::List => {
            let params = list_params(req, &target)?;
            let listed = api.list(&target, &params)?;
            if repr == Repr::Table {
                let table =
                    render::table(&t, &version, &listed.items, listed.rv, listed.continue_token.as_deref(), now);
                return Ok(Reply::Response(json_response(200, &table, &[])));
            }
            let bytes = render::list_bytes(
                &t,
                &version,
                repr,
                &listed.items,
                listed.rv,
                listed.continue_token.as_deref(),
                listed.remaining,
            );
            Ok(Reply::Response(bytes_response(200, bytes, &[])))
        }
        Verb::Watch => {
            let params = list_params(req, &target)?;
            let send_initial = req.q("sendInitialEvents").map(|v| v == "true");
            if send_initial == Some(true) && req.q("resourceVersionMatch") != Some("NotOlderThan") {
                return Err(ApiError::Invalid {
                    group: "meta.k8s.io".into(),
                    kind: "ListOptions".into(),
                    name: String::new(),
                    causes: vec![super::error::Cause {
                        field: "resourceVersionMatch".into(),
                        message: "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                            .into(),
                    }],
                });
            }
            let timeout = req
                .q("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .map_or(shared.options.default_watch_timeout, Duration::from_secs);
            let spec = WatchSpec {
                t: t.clone(),
                version,
                namespace: target.namespace.clone(),
                labels: params.labels.clone(),
                fields: params.fields.clone(),
                bookmarks: req.flag("allowWatchBookmarks"),
                timeout,
                repr: if repr == Repr::Metadata { Repr::Metadata } else { Repr::Full },
            };
            match api.prepare_watch(&target, &params, send_initial) {
                Ok(plan) => Ok(Reply::Watch(plan, spec)),
                // A too-old version is reported inside the stream, where kube's watcher re-lists.
                Err(e @ ApiError::Gone(_)) => {
                    Ok(Reply::Response(bytes_response(200, watch::error_event(e.status()), &[])))
                }
                Err(e) => Err(e),
            }
        }
        Verb::Create => {
            let p = write_params(req)?;
            let written = api.create(&target, decode_body(req)?, &p)?;
            let object = render::object_value(&written.object, &t, &version, repr);
            Ok(Reply::Response(json_response(201, &object, &written.warnings)))
        }
        Verb::Update => {
            let p = write_params(req)?;
            let written = api.update(&target, decode_body(req)?, &p)?;
            let object = render::object_value(&written.object, &t, &version, repr);
            Ok(Reply::Response(json_response(200, &object, &written.warnings)))
        }
        Verb::Patch => {
            let content_type = req.header("content-type").split(';').next().unwrap_or_default().trim().to_string();
            let kind = match content_type.as_str() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" => PatchType::Apply,
                other => {
                    return Err(ApiError::UnsupportedMediaType(format!(
                        "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
                    )));
                }
            };
            let mut p = write_params(req)?;
            if kind == PatchType::Apply {
                p.manager = req.q("fieldManager").unwrap_or_default().to_string();
            }
            let written = api.patch(&target, kind, &req.body, &p)?;
            let object = render::object_value(&written.object, &t, &version, repr);
            Ok(Reply::Response(json_response(if written.created { 201 } else { 200 }, &object, &written.warnings)))
        }
        Verb::Delete => {
            let d = delete_params(req)?;
            let (object, gone) = api.delete(&target, &d)?;
            // Custom resources return the deleted object; built-ins a Success status once gone.
            let body = if gone && t.crd.is_none() {
                success_status(&t.group, &t.plural, meta_str(&object, "name"), meta_str(&object, "uid"))
            } else {
                render::object_value(&object, &t, &version, repr)
            };
            Ok(Reply::Response(json_response(200, &body, &[])))
        }
        Verb::DeleteCollection => {
            let params = list_params(req, &target)?;
            let d = delete_params(req)?;
            let deleted = api.delete_collection(&target, &params, &d)?;
            let items: Vec<Value> = deleted.iter().map(|o| render::object_value(o, &t, &version, repr)).collect();
            let list =
                json!({"kind": t.list_kind, "apiVersion": t.api_version(&version), "metadata": {}, "items": items});
            Ok(Reply::Response(json_response(200, &list, &[])))
        }
    }
}

fn list_params(req: &Req, target: &Target) -> Result<ListParams, ApiError> {
    Ok(ListParams {
        labels: LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(req.q("fieldSelector").unwrap_or_default(), &target.t)?,
        limit: match req.q("limit") {
            Some(l) => Some(l.parse().map_err(|_| ApiError::BadRequest(format!("invalid limit: {l:?}")))?),
            None => None,
        },
        continue_token: req.q("continue").filter(|c| !c.is_empty()).map(String::from),
        resource_version: req.q("resourceVersion").map(String::from),
        exact: req.q("resourceVersionMatch") == Some("Exact"),
    })
}

fn write_params(req: &Req) -> Result<WriteParams, ApiError> {
    let validation = match req.q("fieldValidation").unwrap_or("Warn") {
        "Strict" => FieldValidation::Strict,
        "Warn" | "" => FieldValidation::Warn,
        "Ignore" => FieldValidation::Ignore,
        other => {
            return Err(ApiError::BadRequest(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            )));
        }
    };
    // Without fieldManager, the apiserver names the manager after the user agent's product.
    let agent = req.header("user-agent").split('/').next().unwrap_or_default().trim().to_string();
    let manager =
        req.q("fieldManager").map(String::from).unwrap_or(if agent.is_empty() { "unknown".into() } else { agent });
    Ok(WriteParams { dry_run: req.q("dryRun") == Some("All"), manager, validation, force: req.flag("force") })
}

fn decode_body(req: &Req) -> Result<Value, ApiError> {
    let content_type = req.header("content-type");
    if content_type.contains("protobuf") {
        return proto::decode(&req.body).map_err(|e| match e {
            ProtoError::Unsupported(_) => ApiError::UnsupportedMediaType(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        });
    }
    if content_type.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(format!("{content_type} is not served by the simulator; use JSON")));
    }
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(&req.body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        return serde_saphyr::from_str(text).map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn delete_params(req: &Req) -> Result<DeleteParams, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
    };
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| req.q("propagationPolicy").map(String::from));
    let propagation = match policy.as_deref() {
        None => match body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or(req.q("orphanDependents").map(|v| v == "true"))
        {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => None,
        },
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let dry_run = body.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|x| x == "All"))
        || req.q("dryRun") == Some("All");
    Ok(DeleteParams {
        propagation,
        uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
        resource_version: body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from),
        dry_run,
    })
}
