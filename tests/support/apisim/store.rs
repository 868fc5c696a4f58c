//! The object store: one collection per resource type, a single resourceVersion counter (like
//! etcd's revision), a bounded event history per collection for watch resumption, and the indexes
//! garbage collection needs (uid -> object, owner uid -> dependents).
//!
//! Objects are kept as JSON with their serialized bytes next to them, so lists and watch events
//! are written by copying bytes, never by re-serializing the world.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::{GroupResource, ResourceType};

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub gr: GroupResource,
    pub namespace: String,
    pub name: String,
}

/// A stored object version.
#[derive(Debug)]
pub struct Stored {
    pub value: Value,
    pub json: Bytes,
    pub rv: u64,
}

impl Stored {
    fn new(mut value: Value, rv: u64) -> Stored {
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let json = Bytes::from(serde_json::to_vec(&value).expect("JSON values serialize"));
        Stored { value, json, rv }
    }

    pub fn meta_str(&self, field: &str) -> &str {
        self.value.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watchers see it. `previous` lets selector-filtered watches turn a
/// change that leaves (enters) their selection into DELETED (ADDED), as the apiserver does.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub object: Arc<Stored>,
    pub previous: Option<Arc<Stored>>,
}

/// Broadcast capacity per collection: a watcher lagging further behind is closed and resumes
/// from its last resourceVersion (out of the history), like a slow watcher on the real server.
const BROADCAST_CAPACITY: usize = 8192;

pub struct Collection {
    pub objects: BTreeMap<(String, String), Arc<Stored>>,
    history: VecDeque<Arc<Change>>,
    /// Watches may resume from any resourceVersion >= this one (older ones are compacted).
    pub compacted: u64,
    pub tx: broadcast::Sender<Arc<Change>>,
}

impl Collection {
    fn new(compacted: u64) -> Collection {
        Collection {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted,
            tx: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }

    /// Objects of one namespace (or all when `namespace` is None), in key order, starting after
    /// `after` (a continue token's last key).
    pub fn range<'a>(
        &'a self,
        namespace: Option<&'a str>,
        after: Option<&'a (String, String)>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Arc<Stored>)> + 'a {
        use std::ops::Bound;
        let start = match (after, namespace) {
            (Some(after), _) => Bound::Excluded(after.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        self.objects.range((start, Bound::Unbounded)).take_while(move |((ns, _), _)| namespace.is_none_or(|n| n == ns))
    }
}

/// A watch start: the history to replay (changes after the requested version) and the live feed,
/// taken atomically so nothing is lost or duplicated in between.
pub struct WatchStart {
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
}

pub struct Store {
    pub rv: u64,
    pub types: BTreeMap<GroupResource, Arc<ResourceType>>,
    collections: HashMap<GroupResource, Collection>,
    uids: HashMap<String, ObjectKey>,
    dependents: HashMap<String, BTreeSet<ObjectKey>>,
    history_limit: usize,
    /// Committed changes (each one bumped the resourceVersion), in total and per resource.
    pub writes: u64,
    pub writes_by: BTreeMap<String, u64>,
    /// Per-instance randomness for uids and generated names.
    pub seed: u64,
    uid_counter: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        Store {
            rv: 1,
            types: BTreeMap::new(),
            collections: HashMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history_limit,
            writes: 0,
            writes_by: BTreeMap::new(),
            seed: {
                use std::hash::{BuildHasher, RandomState};
                RandomState::new().hash_one(std::time::SystemTime::now())
            },
            uid_counter: 0,
        }
    }

    /// A fresh UUID-shaped uid (version 4 layout), unique within this simulator.
    pub fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        let a = self.seed;
        let b = self.uid_counter;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a as u16 & 0xfff,
            (b >> 48) as u16 & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    /// Starts (or updates) serving a type; its collection survives updates.
    pub fn register(&mut self, t: ResourceType) {
        let gr = t.group_resource();
        let compacted = self.rv;
        self.collections.entry(gr.clone()).or_insert_with(|| Collection::new(compacted));
        self.types.insert(gr, Arc::new(t));
    }

    /// Stops serving a type; open watches on it end (their sender is dropped).
    pub fn unregister(&mut self, gr: &GroupResource) {
        self.types.remove(gr);
        if let Some(c) = self.collections.remove(gr) {
            for stored in c.objects.values() {
                self.uids.remove(stored.meta_str("uid"));
            }
        }
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&GroupResource::new(group, plural)).filter(|t| t.serves(version)).cloned()
    }

    pub fn collection(&self, gr: &GroupResource) -> Option<&Collection> {
        self.collections.get(gr)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Stored>> {
        self.collections.get(&key.gr)?.objects.get(&(key.namespace.clone(), key.name.clone())).cloned()
    }

    pub fn key_of_uid(&self, uid: &str) -> Option<&ObjectKey> {
        self.uids.get(uid)
    }

    /// Objects whose ownerReferences name this uid.
    pub fn dependents_of(&self, uid: &str) -> Vec<ObjectKey> {
        self.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default()
    }

    /// Writes an object (ADDED when new, MODIFIED otherwise) under a new resourceVersion.
    pub fn put(&mut self, key: &ObjectKey, value: Value) -> Arc<Stored> {
        self.rv += 1;
        let stored = Arc::new(Stored::new(value, self.rv));
        let collection = self.collections.get_mut(&key.gr).expect("type registered before objects are stored");
        let previous = collection.objects.insert((key.namespace.clone(), key.name.clone()), stored.clone());
        let kind = if previous.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.index(key, previous.as_deref(), Some(&stored));
        self.record(key, Change { rv: self.rv, kind, object: stored.clone(), previous });
        stored
    }

    /// Removes an object; watchers get DELETED with the last state under a new resourceVersion.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Arc<Stored>> {
        let collection = self.collections.get_mut(&key.gr)?;
        let previous = collection.objects.remove(&(key.namespace.clone(), key.name.clone()))?;
        self.rv += 1;
        let last = Arc::new(Stored::new(previous.value.clone(), self.rv));
        self.index(key, Some(&previous), None);
        self.record(
            key,
            Change { rv: self.rv, kind: ChangeKind::Deleted, object: last.clone(), previous: Some(previous) },
        );
        Some(last)
    }

    fn record(&mut self, key: &ObjectKey, change: Change) {
        self.writes += 1;
        *self.writes_by.entry(key.gr.qualified()).or_default() += 1;
        let collection = self.collections.get_mut(&key.gr).expect("collection exists");
        let change = Arc::new(change);
        collection.history.push_back(change.clone());
        while collection.history.len() > self.history_limit {
            let dropped = collection.history.pop_front().expect("non-empty history");
            collection.compacted = dropped.rv;
        }
        // No receivers is fine: nobody watches this type right now.
        let _ = collection.tx.send(change);
    }

    fn index(&mut self, key: &ObjectKey, old: Option<&Stored>, new: Option<&Stored>) {
        let owners = |s: Option<&Stored>| -> BTreeSet<String> {
            s.and_then(|s| s.value.pointer("/metadata/ownerReferences"))
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from)).collect()
                })
                .unwrap_or_default()
        };
        let (before, after) = (owners(old), owners(new));
        for uid in before.difference(&after) {
            if let Some(set) = self.dependents.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(uid);
                }
            }
        }
        for uid in after.difference(&before) {
            self.dependents.entry(uid.clone()).or_default().insert(key.clone());
        }
        if let Some(old) = old {
            self.uids.remove(old.meta_str("uid"));
        }
        if let Some(new) = new {
            self.uids.insert(new.meta_str("uid").to_string(), key.clone());
        }
    }

    /// Starts a watch of a collection from `rv` (exclusive). `Err(compacted)` when `rv` is older
    /// than the retained history: the client must re-list (410 Gone).
    pub fn watch_from(&self, gr: &GroupResource, rv: u64) -> Result<WatchStart, u64> {
        let collection = self.collections.get(gr).expect("watch of a registered type");
        if rv < collection.compacted {
            return Err(collection.compacted);
        }
        let replay = collection.history.iter().filter(|c| c.rv > rv).cloned().collect();
        Ok(WatchStart { replay, live: collection.tx.subscribe() })
    }

    /// A live feed without replay (for watches that start "now").
    pub fn subscribe(&self, gr: &GroupResource) -> broadcast::Receiver<Arc<Change>> {
        self.collections.get(gr).expect("watch of a registered type").tx.subscribe()
    }

    /// Forgets all history: every resourceVersion before now becomes too old to watch from.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for c in self.collections.values_mut() {
            c.history.clear();
            c.compacted = rv;
        }
    }
}
