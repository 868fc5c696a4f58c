//! Objects as the API server returns them, read one by one: the typed object when the types can
//! read it, otherwise its metadata and the field that could not be read.
//!
//! The watches list `ZfsImageBuild`s and `Promotion`s as [`Decoded`] so that one object the types
//! cannot read (stored under an older, looser schema; written around validation) never fails a
//! whole list. With typed lists, kube's list decode fails for everyone, the watch relists
//! forever (kube-client logs each failing response body at warn level), the caches never become
//! ready, and no build or Promotion is reconciled at all. Here the unreadable object is reported
//! on itself (`Stalled`, reason [`UNREADABLE`], the field path in the message) and the others go on.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::{Value, json};

use crate::controllers::conditions::{self, DesiredCondition};
use crate::controllers::runtime::{MAX_EVENT_NOTE, truncate};
use crate::jobs::MANAGER;

/// Condition reason of an object the operator cannot read (both kinds).
pub const UNREADABLE: &str = "Unreadable";

/// Longest decode problem kept (a message in a condition, not a copy of the object).
const MAX_PROBLEM: usize = 512;

/// An object of kind `K` as read from the API server.
#[derive(Clone, Debug)]
pub enum Decoded<K> {
    /// The types read it.
    Typed(K),
    /// The types could not read it (boxed: rare, and larger than most objects).
    Unreadable(Box<Unreadable>),
}

/// What is known of an object the types could not read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unreadable {
    pub metadata: ObjectMeta,
    /// Where and why decoding failed, e.g. `spec.builder.ttlSecondsAfterFinished: invalid
    /// value: integer `3000000000`, expected i32`.
    pub problem: String,
    /// The stored `status` as it is (JSON null when there is none): it is written back whole,
    /// with the conditions changed, so the operator's own status fields are kept.
    pub status: Value,
}

impl Unreadable {
    /// `status.conditions`, when those can be read.
    fn conditions(&self) -> Vec<Condition> {
        self.status.get("conditions").and_then(|c| Vec::<Condition>::deserialize(c).ok()).unwrap_or_default()
    }
}

impl<K> Decoded<K> {
    /// The typed object, when it could be read.
    pub fn typed(&self) -> Option<&K> {
        match self {
            Decoded::Typed(k) => Some(k),
            Decoded::Unreadable(_) => None,
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(typed) => Ok(Decoded::Typed(typed)),
            Err(error) => {
                // Metadata is the API server's own and always readable; without it the object
                // could not even be named, so that alone fails the decode.
                let metadata = ObjectMeta::deserialize(value.get("metadata").unwrap_or(&Value::Null))
                    .map_err(|e| D::Error::custom(format!("metadata: {e}")))?;
                Ok(Decoded::Unreadable(Box::new(Unreadable {
                    metadata,
                    problem: truncate(&describe(&error), MAX_PROBLEM),
                    status: value.get("status").cloned().unwrap_or(Value::Null),
                })))
            }
        }
    }
}

/// `path: what`, or just `what` when the failure is at the top.
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    if path == "." { error.inner().to_string() } else { format!("{path}: {}", error.inner()) }
}

impl<K: Resource> Resource for Decoded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Decoded::Typed(k) => k.meta(),
            Decoded::Unreadable(u) => &u.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Decoded::Typed(k) => k.meta_mut(),
            Decoded::Unreadable(u) => &mut u.metadata,
        }
    }
}

/// The conditions that say `object` cannot be read: `Ready=False` and `Stalled=True` with reason
/// [`UNREADABLE`] and a message naming the field to fix; `Reconciling` removed. `None` when the
/// stored conditions already say exactly that (no write).
pub fn unreadable_conditions(object: &Unreadable, kind: &str, now: &Time) -> Option<Vec<Condition>> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let message = format!(
        "this {kind} cannot be read by the operator ({}); fix that field (kubectl edit {} {name}); nothing is done for it until then",
        object.problem,
        kind.to_lowercase(),
    );
    let generation = object.metadata.generation;
    let current = object.conditions();
    let mut next = current.clone();
    for type_ in ["Ready", "Stalled"] {
        let status = if type_ == "Ready" { conditions::FALSE } else { conditions::TRUE };
        conditions::set_condition(
            &mut next,
            DesiredCondition::new(type_, status, UNREADABLE, message.clone()),
            generation,
            now,
        );
    }
    conditions::remove_condition(&mut next, "Reconciling");
    (next != current).then_some(next)
}

/// Records on `object` that it cannot be read (see [`unreadable_conditions`]): the stored status
/// applied back whole by the controller's field manager with only the conditions and
/// `observedGeneration` changed, so the run bookkeeping stays for when the object is fixed, and
/// the next status the controller applies once it can read the object replaces these conditions
/// (server-side apply removes what the same manager no longer sets). An API server that
/// validates the whole object on a status write (one without CRD validation ratcheting, with a
/// stricter schema than the object was stored under) refuses that patch: then a Warning Event
/// says the same.
pub async fn record_unreadable<K>(
    api: &Api<Decoded<K>>,
    recorder: &Recorder,
    object: &Unreadable,
    now: &Time,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let Some(next) = unreadable_conditions(object, &kind, now) else { return Ok(()) };
    tracing::warn!(kind, problem = %object.problem, "object cannot be read: Stalled");
    let mut status = match &object.status {
        Value::Object(fields) => fields.clone(),
        _ => Default::default(),
    };
    status.insert("observedGeneration".into(), json!(object.metadata.generation));
    status.insert("conditions".into(), json!(next));
    let dt = K::DynamicType::default();
    let patch = json!({ "apiVersion": K::api_version(&dt), "kind": kind, "status": status });
    let name = object.metadata.name.as_deref().unwrap_or_default();
    match api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let message = next.iter().find(|c| c.type_ == "Stalled").map(|c| c.message.clone()).unwrap_or_default();
            let event = Event {
                type_: EventType::Warning,
                reason: UNREADABLE.into(),
                note: Some(truncate(&message, MAX_EVENT_NOTE)),
                action: UNREADABLE.into(),
                secondary: None,
            };
            let reference = Decoded::<K>::Unreadable(Box::new(object.clone())).object_ref(&dt);
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "cannot publish event");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ZfsImageBuild;
    use crate::test_support::build;
    use k8s_openapi::jiff::Timestamp;

    fn build_json(ttl: Value) -> Value {
        let mut value = serde_json::to_value(build("Main", "")).unwrap();
        value["metadata"]["name"] = json!("bad");
        value["metadata"]["uid"] = json!("u-1");
        value["metadata"]["generation"] = json!(3);
        value["spec"]["builder"] = json!({ "ttlSecondsAfterFinished": ttl });
        value["status"] = json!({"conditions": [{"type": "InputsResolved", "status": "True", "reason": "Resolved", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        value
    }

    #[test]
    fn a_readable_object_is_typed() {
        let decoded: Decoded<ZfsImageBuild> = serde_json::from_value(build_json(json!(3600))).unwrap();
        let typed = decoded.typed().expect("readable");
        assert_eq!(typed.spec.builder.ttl_seconds_after_finished, 3600);
        assert_eq!(decoded.meta().name.as_deref(), Some("bad"));
    }

    #[test]
    fn an_unreadable_object_keeps_its_metadata_and_says_which_field() {
        let decoded: Decoded<ZfsImageBuild> = serde_json::from_value(build_json(json!(3_000_000_000u64))).unwrap();
        let Decoded::Unreadable(u) = &decoded else { panic!("read an i32 of 3000000000") };
        assert_eq!(u.metadata.uid.as_deref(), Some("u-1"));
        assert!(u.problem.starts_with("spec.builder.ttlSecondsAfterFinished: "), "{}", u.problem);
        assert!(u.problem.contains("3000000000"), "{}", u.problem);
        assert_eq!(u.conditions().len(), 1, "the readable conditions are kept");
    }

    #[test]
    fn a_list_with_one_unreadable_item_still_decodes() {
        let list = json!({
            "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "7"},
            "items": [build_json(json!(60)), build_json(json!(null)), build_json(json!("x"))]
        });
        let list: kube::core::ObjectList<Decoded<ZfsImageBuild>> = serde_json::from_value(list).unwrap();
        let readable: Vec<bool> = list.items.iter().map(|i| i.typed().is_some()).collect();
        assert_eq!(readable, [true, false, false]);
    }

    #[test]
    fn unreadable_conditions_are_stalled_and_written_once() {
        let decoded: Decoded<ZfsImageBuild> = serde_json::from_value(build_json(json!(-1.5))).unwrap();
        let Decoded::Unreadable(mut u) = decoded else { panic!("read a float as i32") };
        let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
        let next = unreadable_conditions(&u, "ZfsImageBuild", &now).expect("a change");
        let stalled = conditions::find(&next, "Stalled").unwrap();
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", UNREADABLE));
        assert!(stalled.message.contains("spec.builder.ttlSecondsAfterFinished"), "{}", stalled.message);
        assert!(stalled.message.contains("kubectl edit zfsimagebuild bad"), "{}", stalled.message);
        assert_eq!(stalled.observed_generation, Some(3));
        assert_eq!(conditions::find(&next, "Ready").unwrap().status, "False");
        assert!(conditions::find(&next, "InputsResolved").is_some());
        u.status["conditions"] = json!(next);
        assert_eq!(unreadable_conditions(&u, "ZfsImageBuild", &now), None, "converged: no second write");
    }

    #[test]
    fn metadata_that_cannot_be_read_fails_the_item() {
        let mut value = build_json(json!("x"));
        value["metadata"] = json!({"name": 5});
        assert!(serde_json::from_value::<Decoded<ZfsImageBuild>>(value).is_err());
    }
}
