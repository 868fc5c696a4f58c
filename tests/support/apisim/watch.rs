//! Watch streams: newline-delimited watch events over a chunked HTTP body.
//!
//! A watch first sends what its plan says (initial ADDED events, the `k8s.io/initial-events-end`
//! bookmark of a streaming list, or the history after the requested resourceVersion), then live
//! changes. Selector-filtered watches see objects entering (ADDED) and leaving (DELETED) their
//! selection. Bookmarks are sent periodically when asked for. A watch ends cleanly at its timeout,
//! when it lags too far behind, or when its type stops being served; `ApiSim::drop_watches` aborts
//! the connection instead, like a network failure.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Shared;
use super::render::{self, Repr};
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, ChangeKind, Stored};
use super::verbs::WatchPlan;

pub type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// What a watch filters on and how it renders.
pub struct WatchSpec {
    pub t: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub repr: Repr,
}

impl WatchSpec {
    fn selects(&self, stored: &Stored) -> bool {
        let in_namespace =
            !self.t.namespaced || self.namespace.as_deref().is_none_or(|ns| stored.meta_str("namespace") == ns);
        in_namespace && self.labels.matches(&stored.value) && self.fields.matches(&stored.value)
    }

    fn event(&self, kind: &str, stored: &Stored) -> Bytes {
        let object = render::object_bytes(stored, &self.t, &self.version, self.repr);
        let mut line = Vec::with_capacity(object.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&object);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (kind, api_version) = match self.repr {
            Repr::Metadata => ("PartialObjectMetadata".to_string(), "meta.k8s.io/v1".to_string()),
            _ => (self.t.kind.clone(), self.t.api_version(&self.version)),
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(&json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}}))
    }

    /// The event (if any) a change produces for this watch.
    fn translate(&self, change: &Change) -> Option<Bytes> {
        let now = self.selects(&change.object);
        let before = change.previous.as_deref().is_some_and(|p| self.selects(p));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Deleted, true, _) => "DELETED",
            (ChangeKind::Deleted, false, _) => return None,
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some(self.event(kind, &change.object))
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).expect("JSON");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// An ERROR watch event (e.g. 410 Expired: the client must re-list).
pub fn error_event(status: Value) -> Bytes {
    line(&json!({"type": "ERROR", "object": status}))
}

/// Runs a watch, writing events into `tx` until it ends.
pub async fn run(shared: Arc<Shared>, plan: WatchPlan, spec: WatchSpec, tx: mpsc::Sender<Chunk>) {
    let WatchPlan { initial, initial_end_bookmark, replay, mut live, start_rv } = plan;
    let send = |bytes: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(Frame::data(bytes))).await.is_ok() }
    };
    for stored in &initial {
        if spec.selects(stored) && !send(spec.event("ADDED", stored)).await {
            return;
        }
    }
    if initial_end_bookmark && !send(spec.bookmark(start_rv, true)).await {
        return;
    }
    let mut last_rv = start_rv;
    for change in &replay {
        last_rv = change.rv;
        if let Some(event) = spec.translate(change)
            && !send(event).await
        {
            return;
        }
    }
    let mut drops = shared.drops.subscribe();
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let interval = shared.options.bookmark_interval;
    let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(change) => {
                    last_rv = change.rv;
                    if let Some(event) = spec.translate(&change)
                        && !send(event).await
                    {
                        return;
                    }
                }
                // Too far behind, or the type is no longer served: end; the client resumes or re-lists.
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
            },
            _ = bookmarks.tick(), if spec.bookmarks => {
                // Everything up to the store's version was delivered only when nothing is queued;
                // commits broadcast under the store lock, so checking under it is race-free.
                let rv = {
                    let store = shared.store.lock().expect("store lock");
                    if live.is_empty() { store.rv.max(last_rv) } else { last_rv }
                };
                if !send(spec.bookmark(rv, false)).await {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = drops.changed() => {
                let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "watch dropped by the simulator"))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
