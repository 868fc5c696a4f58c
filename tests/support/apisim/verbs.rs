//! The API verbs with the apiserver's semantics, on a locked [`Store`]: create, get, list, update,
//! patch (merge, JSON, strategic, apply), delete (finalizers, propagation), delete collection, and
//! the watch start. Garbage collection, namespace and CRD cleanup run synchronously after each
//! mutation through a work queue, so a request returns with its cascade already done.
//!
//! Every write goes through one admission path: type meta, preconditions, status/spec separation,
//! system metadata, defaults and validation, generation, field ownership, then the no-op check
//! (a write that changes nothing is not stored and sends no event).

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::apply::{self, Applier, Scope};
use super::builtin;
use super::error::{ApiError, Cause};
use super::meta::{self, meta_mut, meta_str};
use super::patch::{self, PatchError};
use super::resources::{self, Builtin, GroupResource, ResourceType};
use super::schema::{self, UnknownFields};
use super::selector::{FieldSelector, LabelSelector};
use super::shape::Shape;
use super::store::{Change, ObjectKey, Store, Stored};

/// The resource a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub t: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `/status` subresource.
    pub status: bool,
}

impl Target {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            gr: self.t.group_resource(),
            namespace: if self.t.namespaced { self.namespace.clone().unwrap_or_default() } else { String::new() },
            name: name.to_string(),
        }
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::NotFound { group: self.t.group.clone(), resource: self.t.qualified(), name: name.into() }
    }

    fn scope(&self) -> Scope {
        match (self.t.status_subresource, self.status) {
            (false, _) => Scope::All,
            (true, true) => Scope::Status,
            (true, false) => Scope::NoStatus,
        }
    }

    fn invalid(&self, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::Invalid { group: self.t.group.clone(), kind: self.t.kind.clone(), name: name.into(), causes }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

#[derive(Debug, Clone)]
pub struct WriteParams {
    pub dry_run: bool,
    pub manager: String,
    pub validation: FieldValidation,
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    pub propagation: Option<Propagation>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub exact: bool,
}

/// A write's result: the object as stored (or as it would be, for dry runs and no-ops).
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

pub struct ListResult {
    pub items: Vec<Arc<Stored>>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// What a watch starts with, prepared under the store lock.
pub struct WatchPlan {
    pub initial: Vec<Arc<Stored>>,
    pub initial_end_bookmark: bool,
    pub replay: Vec<Arc<Change>>,
    pub live: tokio::sync::broadcast::Receiver<Arc<Change>>,
    pub start_rv: u64,
}

/// Follow-up work of a mutation: what the garbage collector, the namespace controller and the
/// CRD finalizer do on a real cluster.
#[derive(Debug)]
enum Work {
    OwnerGone(String),
    Orphan(ObjectKey),
    Foreground(ObjectKey),
    Namespace(String),
    CrdCleanup(ObjectKey),
    Dangling(ObjectKey),
}

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

/// ObjectMeta's fields, for strict field validation of metadata.
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

pub struct Api<'a> {
    pub store: &'a mut Store,
    now: k8s_openapi::jiff::Timestamp,
    queue: VecDeque<Work>,
}

fn shape_of<'t>(t: &'t ResourceType, version: &str) -> Shape<'t> {
    match t.schema(version) {
        Some(schema) => Shape::custom(schema),
        None => Shape::builtin(),
    }
}

/// Body `kind`/`apiVersion` must name the endpoint's type when given.
fn check_type_meta(target: &Target, body: &Value) -> Result<(), ApiError> {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let expected = target.t.api_version(&target.version);
    if !kind.is_empty() && kind != target.t.kind {
        return Err(ApiError::BadRequest(format!(
            "the kind of the object ({kind}) does not match the endpoint ({})",
            target.t.kind
        )));
    }
    if !api_version.is_empty() && api_version != expected {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected})"
        )));
    }
    Ok(())
}

fn strip_system_meta(object: &mut Value) {
    let meta = meta_mut(object);
    for field in
        ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink"]
    {
        meta.remove(field);
    }
}

/// Whether the part of an object that `metadata.generation` follows differs (everything but
/// metadata, and status when it is a subresource).
fn spec_changed(old: &Value, new: &Value, status_subresource: bool) -> bool {
    let counts = |k: &str| match k {
        "metadata" | "apiVersion" | "kind" => false,
        "status" => !status_subresource,
        _ => true,
    };
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else { return old != new };
    old.iter().filter(|(k, _)| counts(k)).any(|(k, v)| new.get(k) != Some(v))
        || new.keys().filter(|k| counts(k)).any(|k| !old.contains_key(k))
}

/// Paths of fields a schema does not know (for strict/warn field validation).
fn unknown_metadata_fields(object: &Value) -> Vec<String> {
    meta::meta(object)
        .map(|m| m.keys().filter(|k| !META_FIELDS.contains(&k.as_str())).map(|k| format!("metadata.{k}")).collect())
        .unwrap_or_default()
}

fn split_error(error: &str) -> Cause {
    match error.split_once(": ") {
        Some((field, message)) => Cause { field: field.into(), message: message.into() },
        None => Cause { field: "<root>".into(), message: error.into() },
    }
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!([rv, key.0, key.1])).unwrap())
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let (rv, ns, name): (u64, String, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((rv, (ns, name)))
}

impl<'a> Api<'a> {
    pub fn new(store: &'a mut Store, now: k8s_openapi::jiff::Timestamp) -> Api<'a> {
        Api { store, now, queue: VecDeque::new() }
    }

    fn now_str(&self) -> String {
        meta::rfc3339(self.now)
    }

    // ----- reads -----

    pub fn get(&self, target: &Target) -> Result<Arc<Stored>, ApiError> {
        let name = target.name.as_deref().unwrap_or_default();
        self.store.get(&target.key(name)).ok_or_else(|| target.not_found(name))
    }

    fn matches(params: &ListParams, object: &Value) -> bool {
        params.labels.matches(object) && params.fields.matches(object)
    }

    pub fn list(&self, target: &Target, params: &ListParams) -> Result<ListResult, ApiError> {
        let gr = target.t.group_resource();
        let collection = self.store.collection(&gr).ok_or_else(|| target.not_found(""))?;
        if params.exact
            && let Some(rv) = params.resource_version.as_deref().filter(|rv| !rv.is_empty() && *rv != "0")
            && rv != self.store.rv.to_string()
        {
            return Err(ApiError::Gone(format!(
                "too old resource version: {rv} ({}); the simulator serves exact lists only at the current version",
                self.store.rv
            )));
        }
        let (rv, after) = match &params.continue_token {
            Some(token) => {
                let (rv, key) = decode_continue(token)?;
                (rv, Some(key))
            }
            None => (self.store.rv, None),
        };
        let namespace = if target.t.namespaced { target.namespace.as_deref() } else { None };
        let mut matching = collection.range(namespace, after.as_ref()).filter(|(_, s)| Self::matches(params, &s.value));
        let limit = params.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut last_key = None;
        for (key, stored) in matching.by_ref() {
            if limit.is_some_and(|l| items.len() >= l) {
                // One more exists: page ends at the previous item.
                let remaining = 1 + matching.count();
                return Ok(ListResult {
                    items,
                    rv,
                    continue_token: last_key.map(|k| encode_continue(rv, k)),
                    remaining: Some(remaining),
                });
            }
            items.push(stored.clone());
            last_key = Some(key);
        }
        Ok(ListResult { items, rv, continue_token: None, remaining: None })
    }

    pub fn prepare_watch(
        &self,
        target: &Target,
        params: &ListParams,
        send_initial_events: Option<bool>,
    ) -> Result<WatchPlan, ApiError> {
        let gr = target.t.group_resource();
        let rv_param = params.resource_version.clone().unwrap_or_default();
        let from_now = rv_param.is_empty() || rv_param == "0";
        let initial_events = send_initial_events.unwrap_or(from_now);
        if initial_events {
            let listed = self.list(target, &ListParams { limit: None, continue_token: None, ..params.clone() })?;
            let initial = match &target.name {
                Some(name) => listed.items.into_iter().filter(|s| s.meta_str("name") == name).collect(),
                None => listed.items,
            };
            return Ok(WatchPlan {
                initial,
                initial_end_bookmark: send_initial_events == Some(true),
                replay: vec![],
                live: self.store.subscribe(&gr),
                start_rv: self.store.rv,
            });
        }
        if from_now {
            return Ok(WatchPlan {
                initial: vec![],
                initial_end_bookmark: false,
                replay: vec![],
                live: self.store.subscribe(&gr),
                start_rv: self.store.rv,
            });
        }
        let rv: u64 =
            rv_param.parse().map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv_param:?}")))?;
        let start = self
            .store
            .watch_from(&gr, rv)
            .map_err(|oldest| ApiError::Gone(format!("too old resource version: {rv} ({oldest})")))?;
        Ok(WatchPlan {
            initial: vec![],
            initial_end_bookmark: false,
            replay: start.replay,
            live: start.live,
            start_rv: rv,
        })
    }

    // ----- writes -----

    pub fn create(&mut self, target: &Target, mut body: Value, p: &WriteParams) -> Result<Written, ApiError> {
        if target.status || target.name.is_some() {
            return Err(ApiError::MethodNotAllowed);
        }
        check_type_meta(target, &body)?;
        if !body.is_object() {
            return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
        }
        let t = target.t.clone();
        let meta = meta_mut(&mut body);
        let mut name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta.get("generateName").and_then(Value::as_str).unwrap_or_default().to_string();
            if prefix.is_empty() {
                return Err(target.invalid(
                    "",
                    vec![Cause {
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
            name = format!("{prefix}{}", meta::name_suffix(self.store.rv ^ self.store.seed));
            meta.insert("name".into(), json!(name));
        }
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_string();
        if t.namespaced {
            let ns = target.namespace.clone().unwrap_or_default();
            if ns.is_empty() {
                return Err(ApiError::BadRequest("a namespaced resource is created in a namespace".into()));
            }
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            meta.insert("namespace".into(), json!(ns));
            self.check_namespace_open(&ns)?;
        } else {
            meta.remove("namespace");
        }
        let key = target.key(&name);
        if self.store.get(&key).is_some() {
            return Err(ApiError::AlreadyExists { group: t.group.clone(), resource: t.qualified(), name });
        }
        self.create_at(target, &key, body, p, false)
    }

    /// Namespaced objects can only be created in an existing namespace that is not terminating.
    fn check_namespace_open(&self, ns: &str) -> Result<(), ApiError> {
        let key = ObjectKey { gr: GroupResource::new("", "namespaces"), namespace: String::new(), name: ns.into() };
        match self.store.get(&key) {
            None => Err(ApiError::NotFound { group: String::new(), resource: "namespaces".into(), name: ns.into() }),
            Some(n) if meta::is_deleting(&n.value) => Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    fn create_at(
        &mut self,
        target: &Target,
        key: &ObjectKey,
        mut body: Value,
        p: &WriteParams,
        applied: bool,
    ) -> Result<Written, ApiError> {
        strip_system_meta(&mut body);
        let uid = self.store.new_uid();
        let now = self.now_str();
        let meta = meta_mut(&mut body);
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now));
        meta.remove("resourceVersion");
        if target.t.generation {
            meta.insert("generation".into(), json!(1));
        }
        let (object, warnings) = self.admit(target, None, body, p, applied)?;
        let object = self.commit(target, key, None, object, p.dry_run)?;
        self.drain();
        Ok(Written { object, created: true, warnings })
    }

    pub fn update(&mut self, target: &Target, body: Value, p: &WriteParams) -> Result<Written, ApiError> {
        let name = target.name.clone().unwrap_or_default();
        check_type_meta(target, &body)?;
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = target.key(&name);
        let Some(old) = self.store.get(&key) else {
            return Err(target.not_found(&name));
        };
        // Custom resources have no unconditional update: a PUT must say which version it replaces.
        if target.t.crd.is_some() && meta_str(&body, "resourceVersion").is_empty() {
            return Err(target.invalid(
                &name,
                vec![Cause {
                    field: "metadata.resourceVersion".into(),
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                }],
            ));
        }
        self.update_existing(target, &key, &old, body, p, false)
    }

    fn update_existing(
        &mut self,
        target: &Target,
        key: &ObjectKey,
        old: &Arc<Stored>,
        body: Value,
        p: &WriteParams,
        applied: bool,
    ) -> Result<Written, ApiError> {
        let (object, warnings) = self.admit(target, Some(&old.value), body, p, applied)?;
        let object = self.commit(target, key, Some(old), object, p.dry_run)?;
        self.drain();
        Ok(Written { object, created: false, warnings })
    }

    pub fn patch(
        &mut self,
        target: &Target,
        kind: PatchType,
        body: &[u8],
        p: &WriteParams,
    ) -> Result<Written, ApiError> {
        let name = target.name.clone().unwrap_or_default();
        let key = target.key(&name);
        let old = self.store.get(&key);
        if kind == PatchType::Apply {
            return self.apply(target, &key, old, body, p);
        }
        let Some(old) = old else { return Err(target.not_found(&name)) };
        let mut object = old.value.clone();
        let decode = |body: &[u8]| -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(PatchError::Decode(e.to_string()).to_string()))
        };
        match kind {
            PatchType::Merge => patch::merge_patch(&mut object, &decode(body)?),
            PatchType::Json => patch::json_patch(&mut object, body).map_err(|e| match e {
                PatchError::Decode(_) => ApiError::BadRequest(e.to_string()),
                PatchError::Apply(message) => ApiError::UnprocessablePatch(message),
            })?,
            PatchType::Strategic => {
                if target.t.crd.is_some() {
                    return Err(ApiError::UnsupportedMediaType(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
                    ));
                }
                patch::strategic_merge_patch(&mut object, &decode(body)?, &Shape::builtin())
                    .map_err(|e| ApiError::UnprocessablePatch(e.to_string()))?;
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        if meta_str(&object, "name") != name {
            return Err(target.invalid(
                &name,
                vec![Cause { field: "metadata.name".into(), message: "Invalid value: field is immutable".into() }],
            ));
        }
        self.update_existing(target, &key, &old, object, p, false)
    }

    fn apply(
        &mut self,
        target: &Target,
        key: &ObjectKey,
        old: Option<Arc<Stored>>,
        body: &[u8],
        p: &WriteParams,
    ) -> Result<Written, ApiError> {
        let name = key.name.clone();
        if p.manager.is_empty() {
            return Err(ApiError::BadRequest("PATCH, application/apply-patch+yaml: fieldManager is required".into()));
        }
        let text = std::str::from_utf8(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let config: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                serde_saphyr::from_str(text).map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
            }
        };
        if !config.is_object() {
            return Err(ApiError::BadRequest("an apply configuration must be an object".into()));
        }
        for field in ["apiVersion", "kind"] {
            if config.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::BadRequest(format!("{field} must be set in an apply configuration")));
            }
        }
        check_type_meta(target, &config)?;
        let config_name = meta_str(&config, "name");
        if !config_name.is_empty() && config_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({config_name}) does not match the name on the URL ({name})"
            )));
        }
        let t = target.t.clone();
        let shape = shape_of(&t, &target.version);
        let now = self.now_str();
        let api_version = t.api_version(&target.version);
        let who = Applier {
            manager: &p.manager,
            force: p.force,
            scope: target.scope(),
            api_version: &api_version,
            now: &now,
        };
        let conflict = |conflicts| ApiError::ApplyConflict {
            group: t.group.clone(),
            resource: t.qualified(),
            name: name.clone(),
            conflicts,
        };
        match old {
            Some(old) => {
                let merged = apply::apply(&old.value, &config, &shape, &who)
                    .map_err(|apply::ApplyError::Conflicts(c)| conflict(c))?;
                self.update_existing(target, key, &old, merged, p, true)
            }
            None => {
                if target.status {
                    return Err(target.not_found(&name));
                }
                if t.namespaced {
                    self.check_namespace_open(&key.namespace)?;
                }
                let mut skeleton = json!({"apiVersion": api_version, "kind": t.kind, "metadata": {"name": name}});
                if t.namespaced {
                    skeleton["metadata"]["namespace"] = json!(key.namespace);
                }
                let merged = apply::apply(&skeleton, &config, &shape, &who)
                    .map_err(|apply::ApplyError::Conflicts(c)| conflict(c))?;
                self.create_at(target, key, merged, p, true)
            }
        }
    }

    /// The admission path every write takes. `applied`: managedFields were computed by apply.
    fn admit(
        &mut self,
        target: &Target,
        old: Option<&Value>,
        mut new: Value,
        p: &WriteParams,
        applied: bool,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let t = target.t.clone();
        let name = meta_str(&new, "name").to_string();
        let scope = target.scope();
        let mut warnings = Vec::new();

        // Optimistic concurrency: a given resourceVersion must be the current one.
        if let Some(old) = old {
            let wanted = meta_str(&new, "resourceVersion");
            if !wanted.is_empty() && wanted != meta_str(old, "resourceVersion") {
                return Err(ApiError::Conflict {
                    group: t.group.clone(),
                    resource: t.qualified(),
                    name,
                    reason:
                        "the object has been modified; please apply your changes to the latest version and try again"
                            .into(),
                });
            }
        }

        // Unknown fields (before anything is pruned).
        if p.validation != FieldValidation::Ignore {
            let mut unknown = unknown_metadata_fields(&new);
            if let Some(schema) = t.schema(&target.version) {
                unknown.extend(schema::unknown_fields(schema, &new));
            }
            if !unknown.is_empty() {
                let listed: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                if p.validation == FieldValidation::Strict {
                    return Err(ApiError::BadRequest(format!("strict decoding error: {}", listed.join(", "))));
                }
                warnings.extend(listed);
            }
        }
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| META_FIELDS.contains(&k.as_str()));
        }

        new["apiVersion"] = json!(t.api_version(t.storage_version()));
        new["kind"] = json!(t.kind);

        // Status and spec are written through different endpoints when the type says so.
        let applied_fields =
            if applied { meta::meta(&new).and_then(|m| m.get("managedFields")).cloned() } else { None };
        match (old, scope) {
            (Some(old), Scope::Status) => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(status) => new["status"] = status,
                    None => {
                        new.as_object_mut().expect("objects are JSON objects").remove("status");
                    }
                }
            }
            (Some(old), Scope::NoStatus) => match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().expect("objects are JSON objects").remove("status");
                }
            },
            (None, Scope::NoStatus) => {
                new.as_object_mut().expect("objects are JSON objects").remove("status");
                if let Some(status) = t.builtin.and_then(builtin::initial_status) {
                    new["status"] = status;
                }
            }
            _ => {}
        }

        // System metadata is the server's.
        if let Some(old) = old {
            let old_meta = meta::meta(old).cloned().unwrap_or_default();
            let meta = meta_mut(&mut new);
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "resourceVersion",
                "managedFields",
            ] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            meta.remove("selfLink");
            if meta::is_deleting(old) {
                let before = meta::finalizers(old);
                if meta::finalizers(&new).iter().any(|f| !before.contains(f)) {
                    return Err(target.invalid(
                        &name,
                        vec![Cause {
                            field: "metadata.finalizers".into(),
                            message: "Forbidden: no new finalizers can be added if the object is being deleted".into(),
                        }],
                    ));
                }
            }
        }
        if let Some(fields) = applied_fields {
            meta_mut(&mut new).insert("managedFields".into(), fields);
        }

        // Defaults and validation.
        let mut causes = meta::validate(&new, t.builtin == Some(Builtin::Namespace));
        let uid = meta_str(&new, "uid").to_string();
        if let Some(kind) = t.builtin {
            builtin::default(kind, &mut new, &uid, &name);
            causes.extend(builtin::validate(kind, &new, old));
            if kind == Builtin::CustomResourceDefinition {
                causes.extend(self.admit_crd(&mut new, old));
            }
        }
        if let Some(schema) = t.schema(&target.version) {
            match schema::validate_update(schema, &new, old, UnknownFields::Prune) {
                Ok(defaulted) => new = defaulted,
                Err(errors) => causes.extend(errors.iter().map(|e| split_error(e))),
            }
        }
        if !causes.is_empty() {
            return Err(target.invalid(&name, causes));
        }

        // Generation follows the spec (everything but metadata, and status when separate).
        if t.generation
            && let Some(old) = old
        {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            let changed = spec_changed(old, &new, t.status_subresource);
            meta_mut(&mut new).insert("generation".into(), json!(if changed { generation + 1 } else { generation }));
        }

        if !applied {
            let now = self.now_str();
            let api_version = t.api_version(&target.version);
            let who = Applier { manager: &p.manager, force: false, scope, api_version: &api_version, now: &now };
            apply::record_update(old, &mut new, &shape_of(&t, &target.version), &who);
        }
        Ok((new, warnings))
    }

    /// CRD specifics: the definition must be valid and keep its scope; it is accepted (and
    /// established) at once, as there is no other apiserver to agree with.
    fn admit_crd(&self, new: &mut Value, old: Option<&Value>) -> Vec<Cause> {
        let t = match resources::from_crd(new) {
            Ok(t) => t,
            Err(ApiError::Invalid { causes, .. }) => return causes,
            Err(other) => return vec![Cause { field: "<root>".into(), message: other.to_string() }],
        };
        if let Some(old) = old
            && old.pointer("/spec/scope") != new.pointer("/spec/scope")
        {
            return vec![Cause { field: "spec.scope".into(), message: "Invalid value: field is immutable".into() }];
        }
        if old.is_none() {
            let name = meta_str(new, "name").to_string();
            for (existing, other) in &self.store.types {
                if existing.group == t.group && existing.resource == t.plural && other.crd.is_none() {
                    return vec![Cause {
                        field: "metadata.name".into(),
                        message: format!("{name} is a built-in type"),
                    }];
                }
            }
            let mut finalizers = meta::finalizers(new);
            if !finalizers.iter().any(|f| f == CRD_CLEANUP) {
                finalizers.push(CRD_CLEANUP.into());
            }
            meta::set_finalizers(new, &finalizers);
        }
        let now = self.now_str();
        let condition = |type_: &str, reason: &str, message: &str| json!({"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
        let mut status = json!({
            "acceptedNames": new.pointer("/spec/names").cloned().unwrap_or(json!({})),
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "storedVersions": [t.storage_version()],
        });
        // Keep earlier transition times so a CRD re-apply is a no-op.
        if let Some(old_conditions) = old.and_then(|o| o.pointer("/status/conditions")) {
            status["conditions"] = old_conditions.clone();
        }
        if let Some(stored) = old.and_then(|o| o.pointer("/status/storedVersions")).and_then(Value::as_array) {
            let mut versions = stored.clone();
            if !versions.contains(&json!(t.storage_version())) {
                versions.push(json!(t.storage_version()));
            }
            status["storedVersions"] = Value::Array(versions);
        }
        new["status"] = status;
        vec![]
    }

    /// Stores an admitted object. A no-op is not stored; a deleting object whose last finalizer
    /// went away is removed.
    fn commit(
        &mut self,
        target: &Target,
        key: &ObjectKey,
        old: Option<&Arc<Stored>>,
        new: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if let Some(old) = old
            && old.value == new
        {
            return Ok(new);
        }
        if dry_run {
            return Ok(new);
        }
        if meta::is_deleting(&new) && meta::finalizers(&new).is_empty() && !self.waits_for_cleanup(target, &new) {
            self.store.put(key, new);
            let last = self.remove_object(key).expect("object just stored");
            return Ok(last.value.clone());
        }
        let stored = self.store.put(key, new);
        // A terminating namespace whose own finalizers were just removed may be done now.
        if target.t.builtin == Some(Builtin::Namespace) && meta::is_deleting(&stored.value) {
            self.queue.push_back(Work::Namespace(key.name.clone()));
        }
        if target.t.builtin == Some(Builtin::CustomResourceDefinition) {
            let t = resources::from_crd(&stored.value).expect("admitted CRDs are valid");
            self.store.register(t);
        }
        if old.is_none_or(|o| meta::owner_references(&o.value) != meta::owner_references(&stored.value))
            && !meta::owner_references(&stored.value).is_empty()
        {
            self.queue.push_back(Work::Dangling(key.clone()));
        }
        Ok(stored.value.clone())
    }

    /// Namespaces are removed by their cleanup, not by an empty finalizer list.
    fn waits_for_cleanup(&self, target: &Target, _object: &Value) -> bool {
        target.t.builtin == Some(Builtin::Namespace)
    }

    // ----- deletes -----

    pub fn delete(&mut self, target: &Target, d: &DeleteParams) -> Result<(Value, bool), ApiError> {
        let name = target.name.clone().unwrap_or_default();
        let key = target.key(&name);
        let stored = self.store.get(&key).ok_or_else(|| target.not_found(&name))?;
        let precondition = |what: &str, wanted: &str, actual: &str| ApiError::Conflict {
            group: target.t.group.clone(),
            resource: target.t.qualified(),
            name: name.clone(),
            reason: format!("Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}"),
        };
        if let Some(uid) = &d.uid
            && uid != stored.meta_str("uid")
        {
            return Err(precondition("UID", uid, stored.meta_str("uid")));
        }
        if let Some(rv) = &d.resource_version
            && rv != stored.meta_str("resourceVersion")
        {
            return Err(precondition("ResourceVersion", rv, stored.meta_str("resourceVersion")));
        }
        let result = self.delete_object(&key, d.propagation, d.dry_run);
        self.drain();
        result
    }

    /// The apiserver's default propagation: background, except `batch/v1` Jobs, which orphan
    /// their pods when the client does not choose (kept for compatibility upstream).
    fn default_propagation(t: &ResourceType) -> Propagation {
        if t.builtin == Some(Builtin::Job) { Propagation::Orphan } else { Propagation::Background }
    }

    /// Deletes one object: removed at once, or marked (deletionTimestamp) while finalizers remain.
    /// Returns the object and whether it is gone.
    fn delete_object(
        &mut self,
        key: &ObjectKey,
        propagation: Option<Propagation>,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let Some(stored) = self.store.get(key) else {
            return Err(ApiError::NotFound {
                group: key.gr.group.clone(),
                resource: key.gr.qualified(),
                name: key.name.clone(),
            });
        };
        let t = self.store.types.get(&key.gr).cloned().expect("stored objects have a type");
        let propagation = propagation.unwrap_or_else(|| Self::default_propagation(&t));
        let mut object = stored.value.clone();
        let mut finalizers = meta::finalizers(&object);
        let has_dependents = !self.store.dependents_of(stored.meta_str("uid")).is_empty();
        let add = |finalizers: &mut Vec<String>, f: &str| {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(f.into());
            }
        };
        match propagation {
            Propagation::Orphan if has_dependents => add(&mut finalizers, ORPHAN),
            Propagation::Foreground if has_dependents => add(&mut finalizers, FOREGROUND),
            _ => {}
        }
        let namespace = t.builtin == Some(Builtin::Namespace);
        let crd_with_instances = t.builtin == Some(Builtin::CustomResourceDefinition)
            && resources::from_crd(&object)
                .is_ok_and(|ct| self.store.collection(&ct.group_resource()).is_some_and(|c| !c.objects.is_empty()));
        if crd_with_instances {
            add(&mut finalizers, CRD_CLEANUP);
        } else {
            finalizers.retain(|f| f != CRD_CLEANUP);
        }
        if finalizers.is_empty() && !namespace {
            if dry_run {
                return Ok((object, true));
            }
            let last = self.remove_object(key).expect("object exists");
            return Ok((last.value.clone(), true));
        }
        let newly = !meta::is_deleting(&object);
        if newly {
            let meta = meta_mut(&mut object);
            meta.insert("deletionTimestamp".into(), json!(meta::rfc3339(self.now)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if t.generation {
                let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
        meta::set_finalizers(&mut object, &finalizers);
        if namespace {
            object["status"] = json!({"phase": "Terminating"});
        }
        if dry_run {
            return Ok((object, false));
        }
        if object != stored.value {
            self.store.put(key, object.clone());
        }
        let stored_object = self.store.get(key).map(|s| s.value.clone()).unwrap_or(object);
        if finalizers.iter().any(|f| f == ORPHAN) {
            self.queue.push_back(Work::Orphan(key.clone()));
        }
        if finalizers.iter().any(|f| f == FOREGROUND) {
            self.queue.push_back(Work::Foreground(key.clone()));
        }
        if namespace {
            self.queue.push_back(Work::Namespace(key.name.clone()));
        }
        if crd_with_instances {
            self.queue.push_back(Work::CrdCleanup(key.clone()));
        }
        Ok((stored_object, false))
    }

    pub fn delete_collection(
        &mut self,
        target: &Target,
        params: &ListParams,
        d: &DeleteParams,
    ) -> Result<Vec<Value>, ApiError> {
        let keys: Vec<ObjectKey> = self
            .list(target, &ListParams { limit: None, continue_token: None, ..params.clone() })?
            .items
            .iter()
            .map(|s| target_key(target, s))
            .collect();
        let mut deleted = Vec::new();
        for key in keys {
            if let Ok((object, _)) = self.delete_object(&key, d.propagation, d.dry_run) {
                deleted.push(object);
            }
        }
        self.drain();
        Ok(deleted)
    }

    /// Removes an object from the store and schedules what its removal triggers.
    fn remove_object(&mut self, key: &ObjectKey) -> Option<Arc<Stored>> {
        let last = self.store.remove(key)?;
        let uid = last.meta_str("uid").to_string();
        if !self.store.dependents_of(&uid).is_empty() {
            self.queue.push_back(Work::OwnerGone(uid));
        }
        for owner in meta::owner_references(&last.value) {
            let owner_uid = owner.get("uid").and_then(Value::as_str).unwrap_or_default();
            if let Some(owner_key) = self.store.key_of_uid(owner_uid).cloned()
                && let Some(o) = self.store.get(&owner_key)
                && meta::is_deleting(&o.value)
                && meta::finalizers(&o.value).iter().any(|f| f == FOREGROUND)
            {
                self.queue.push_back(Work::Foreground(owner_key));
            }
        }
        if !key.namespace.is_empty() && self.namespace_terminating(&key.namespace) {
            self.queue.push_back(Work::Namespace(key.namespace.clone()));
        }
        if let Some(t) = self.store.types.get(&key.gr).cloned() {
            if let Some(info) = &t.crd {
                let crd_key = ObjectKey {
                    gr: GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
                    namespace: String::new(),
                    name: info.crd.metadata.name.clone().unwrap_or_default(),
                };
                if self.store.get(&crd_key).is_some_and(|c| meta::is_deleting(&c.value)) {
                    self.queue.push_back(Work::CrdCleanup(crd_key));
                }
            }
            if t.builtin == Some(Builtin::CustomResourceDefinition)
                && let Ok(ct) = resources::from_crd(&last.value)
            {
                self.store.unregister(&ct.group_resource());
            }
        }
        Some(last)
    }

    fn namespace_terminating(&self, ns: &str) -> bool {
        let key = ObjectKey { gr: GroupResource::new("", "namespaces"), namespace: String::new(), name: ns.into() };
        self.store.get(&key).is_some_and(|n| meta::is_deleting(&n.value))
    }

    /// Whether an owner reference of an object in `namespace` points at an existing object
    /// (same uid, and in the same namespace unless the owner is cluster-scoped).
    fn owner_alive(&self, namespace: &str, reference: &Value) -> bool {
        let uid = reference.get("uid").and_then(Value::as_str).unwrap_or_default();
        self.store.key_of_uid(uid).is_some_and(|k| k.namespace.is_empty() || k.namespace == namespace)
    }

    /// Rewrites an object's owner references (a system write: no managedFields entry).
    fn set_owner_references(&mut self, key: &ObjectKey, keep: impl Fn(&Value) -> bool) {
        let Some(stored) = self.store.get(key) else { return };
        let mut object = stored.value.clone();
        let refs: Vec<Value> = meta::owner_references(&object).into_iter().filter(|r| keep(r)).collect();
        let meta = meta_mut(&mut object);
        if refs.is_empty() {
            meta.remove("ownerReferences");
        } else {
            meta.insert("ownerReferences".into(), Value::Array(refs));
        }
        if object != stored.value {
            self.store.put(key, object);
        }
    }

    /// Removes one system finalizer; the object goes away when it was the last one.
    fn release_finalizer(&mut self, key: &ObjectKey, finalizer: &str) {
        let Some(stored) = self.store.get(key) else { return };
        let mut object = stored.value.clone();
        let mut finalizers = meta::finalizers(&object);
        finalizers.retain(|f| f != finalizer);
        meta::set_finalizers(&mut object, &finalizers);
        if finalizers.is_empty() && meta::is_deleting(&object) && key.gr != GroupResource::new("", "namespaces") {
            self.store.put(key, object);
            self.remove_object(key);
        } else if object != stored.value {
            self.store.put(key, object);
        }
    }

    fn drain(&mut self) {
        while let Some(work) = self.queue.pop_front() {
            match work {
                Work::OwnerGone(uid) => {
                    for dependent in self.store.dependents_of(&uid) {
                        self.collect_if_orphaned(&dependent, Some(&uid));
                    }
                }
                Work::Dangling(key) => self.collect_if_orphaned(&key, None),
                Work::Orphan(key) => {
                    let Some(owner) = self.store.get(&key) else { continue };
                    let uid = owner.meta_str("uid").to_string();
                    for dependent in self.store.dependents_of(&uid) {
                        self.set_owner_references(&dependent, |r| r.get("uid").and_then(Value::as_str) != Some(&uid));
                    }
                    self.release_finalizer(&key, ORPHAN);
                }
                Work::Foreground(key) => {
                    let Some(owner) = self.store.get(&key) else { continue };
                    let uid = owner.meta_str("uid").to_string();
                    for dependent in self.store.dependents_of(&uid) {
                        if self.store.get(&dependent).is_some_and(|d| !meta::is_deleting(&d.value)) {
                            let _ = self.delete_object(&dependent, Some(Propagation::Foreground), false);
                        }
                    }
                    if self.store.dependents_of(&uid).is_empty() {
                        self.release_finalizer(&key, FOREGROUND);
                    }
                }
                Work::Namespace(ns) => self.clean_namespace(&ns),
                Work::CrdCleanup(crd_key) => {
                    let Some(crd) = self.store.get(&crd_key) else { continue };
                    let Ok(ct) = resources::from_crd(&crd.value) else { continue };
                    let gr = ct.group_resource();
                    let keys: Vec<ObjectKey> = self
                        .store
                        .collection(&gr)
                        .map(|c| {
                            c.objects
                                .keys()
                                .map(|(ns, name)| ObjectKey {
                                    gr: gr.clone(),
                                    namespace: ns.clone(),
                                    name: name.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    for key in &keys {
                        if self.store.get(key).is_some_and(|o| !meta::is_deleting(&o.value)) {
                            let _ = self.delete_object(key, None, false);
                        }
                    }
                    if self.store.collection(&gr).is_none_or(|c| c.objects.is_empty()) {
                        self.release_finalizer(&crd_key, CRD_CLEANUP);
                    }
                }
            }
        }
    }

    /// Background garbage collection of one dependent: deleted when no owner is left, dangling
    /// references dropped when some owner remains.
    fn collect_if_orphaned(&mut self, key: &ObjectKey, gone: Option<&str>) {
        let Some(stored) = self.store.get(key) else { return };
        let refs = meta::owner_references(&stored.value);
        if refs.is_empty() {
            return;
        }
        let alive = |r: &Value| r.get("uid").and_then(Value::as_str) != gone && self.owner_alive(&key.namespace, r);
        let solid = refs.iter().filter(|r| alive(r)).count();
        if solid == 0 {
            if !meta::is_deleting(&stored.value) {
                let _ = self.delete_object(key, Some(Propagation::Background), false);
            }
        } else if solid < refs.len() {
            let keep: Vec<Value> = refs.iter().filter(|r| alive(r)).cloned().collect();
            self.set_owner_references(key, |r| keep.contains(r));
        }
    }

    fn clean_namespace(&mut self, ns: &str) {
        let namespaced: Vec<GroupResource> =
            self.store.types.iter().filter(|(_, t)| t.namespaced).map(|(gr, _)| gr.clone()).collect();
        let mut remaining = false;
        for gr in namespaced {
            let keys: Vec<ObjectKey> = self
                .store
                .collection(&gr)
                .map(|c| {
                    c.range(Some(ns), None)
                        .map(|((ns, name), _)| ObjectKey { gr: gr.clone(), namespace: ns.clone(), name: name.clone() })
                        .collect()
                })
                .unwrap_or_default();
            for key in keys {
                if self.store.get(&key).is_some_and(|o| !meta::is_deleting(&o.value)) {
                    let _ = self.delete_object(&key, Some(Propagation::Background), false);
                }
                remaining |= self.store.get(&key).is_some();
            }
        }
        let key = ObjectKey { gr: GroupResource::new("", "namespaces"), namespace: String::new(), name: ns.into() };
        if !remaining
            && let Some(n) = self.store.get(&key)
            && meta::is_deleting(&n.value)
            && meta::finalizers(&n.value).is_empty()
        {
            self.remove_object(&key);
        }
    }
}

fn target_key(target: &Target, stored: &Stored) -> ObjectKey {
    ObjectKey {
        gr: target.t.group_resource(),
        namespace: stored.meta_str("namespace").to_string(),
        name: stored.meta_str("name").to_string(),
    }
}
