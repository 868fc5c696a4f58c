//! Per-layer scan memory: what the layer walker learned from one layer ([`LayerChanges`]: its
//! entries of interest, whiteouts, opaque directories and replaced paths), remembered by layer
//! digest and [`Question`], so that a scan of tomorrow's base reads only the layers that changed.
//!
//! Why this is exact: a layer digest names the layer's bytes, and a summary depends only on those
//! bytes and the question's interest, never on the layers below or above it (the merger applies
//! summaries in manifest order, see [`super::layers`]). A remembered summary is therefore the
//! summary a fresh read would produce, and merging remembered and freshly read layers gives the
//! view a full scan gives (a property test below checks this for any split).
//!
//! Bounds: the memory holds at most [`DEFAULT_BOUND_BYTES`] (64 MiB) of summaries, weighed by
//! [`LayerChanges::weight`] (16 bytes per path key plus the kept entries). Eviction is
//! quick_cache's size-weighted CLOCK-PRO policy (an LRU approximation that also resists one-off
//! scans: a layer seen on two nights outlives layers seen once). A Kinoite layer holds at most a
//! few tens of thousands of files, well under 1 MiB of summary, so the bound keeps the last few
//! weeks of nightly bases for each question. One instance per process: the operator's client pool
//! owns it ([`crate::registry::ClientPool::scan_memory`]), so every build and both controllers
//! share it; each command-line invocation has its own.
//!
//! Persistence (`--scan-cache DIR` of `resolve`, `verify`, `cache-check`): each summary is also
//! a file `DIR/<question>-v<N>/<algorithm>-<hex>` named by the layer digest. Files are written to
//! a temporary name and renamed, so concurrent writers and readers only ever see whole files; a
//! file that does not decode (bad magic, wrong digest or question, checksum mismatch, truncated)
//! is ignored, the layer is read again and the file replaced.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};
use sha2::{Digest as _, Sha256};

use super::layers::{EntryKind, Interest, LayerChanges, PathSet};

/// Bound of a process's scan memory, in bytes of [`LayerChanges::weight`].
pub const DEFAULT_BOUND_BYTES: u64 = 64 << 20;

/// Errors of the scan memory (only opening a persisted memory can fail; lookups and writes that
/// fail are logged and treated as "not remembered").
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("scan cache directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The kinds of question a layer is scanned for; each has its own fixed interest, so a summary is
/// valid for exactly one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Question {
    /// `(usr/)lib/modules/<release>` directories (input resolution).
    Kernels,
    /// The `zfs`/`zpool` commands and `zfs.ko*` modules (candidate verification).
    Verify,
    /// `rpms/kmods/zfs/kmod-zfs-*.rpm` (the akmods cache scan).
    CacheScan,
}

impl Question {
    pub const ALL: [Question; 3] = [Question::Kernels, Question::Verify, Question::CacheScan];

    /// The paths this question keeps.
    pub fn interest(self) -> Interest {
        match self {
            Question::Kernels => Arc::new(|p: &str| super::resolve::kernel_release_of(p).is_some()),
            Question::Verify => Arc::new(super::verify::is_zfs_payload_path),
            Question::CacheScan => Arc::new(super::cache::is_kmod_rpm_path),
        }
    }

    /// The `work` label of `kzo_layer_bytes_total`: the controller's registry work that asks it
    /// (`check-cache` also covers confirming what an akmods Job pushed).
    pub fn work_label(self) -> &'static str {
        match self {
            Question::Kernels => "resolve",
            Question::Verify => "verify",
            Question::CacheScan => "check-cache",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Directory name of the question's persisted summaries. The version changes whenever the
    /// interest or the summary format changes, so old files are never read with a new meaning.
    pub fn dir_name(self) -> &'static str {
        match self {
            Question::Kernels => "kernels-v1",
            Question::Verify => "verify-v1",
            Question::CacheScan => "cache-scan-v1",
        }
    }
}

type Key = (Question, String);

#[derive(Clone)]
struct ByWeight;

impl Weighter<Key, Arc<LayerChanges>> for ByWeight {
    fn weight(&self, _key: &Key, changes: &Arc<LayerChanges>) -> u64 {
        changes.weight()
    }
}

/// What the memory did, for logs, tests and the benchmark.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    rejected_files: AtomicU64,
    /// Per question: compressed layer bytes downloaded, and bytes of layers answered from memory.
    bytes_read: [AtomicU64; 3],
    bytes_remembered: [AtomicU64; 3],
}

/// The scan memory (see the module docs). Cheap to share (`Arc`), safe to use concurrently.
pub struct ScanMemory {
    cache: Cache<Key, Arc<LayerChanges>, ByWeight>,
    bound: u64,
    dir: Option<PathBuf>,
    counters: Counters,
}

impl std::fmt::Debug for ScanMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanMemory")
            .field("layers", &self.cache.len())
            .field("weight", &self.cache.weight())
            .field("bound", &self.bound)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Default for ScanMemory {
    fn default() -> Self {
        ScanMemory::new(DEFAULT_BOUND_BYTES)
    }
}

impl ScanMemory {
    /// An in-memory scan memory holding at most `bound` bytes of summaries.
    pub fn new(bound: u64) -> ScanMemory {
        // One shard: the bound is global (a sharded cache splits it, and a summary heavier than
        // one shard's part would never be kept); lookups happen once per layer, so a single lock
        // is never contended.
        let options = OptionsBuilder::new()
            .shards(1)
            .estimated_items_capacity(1024)
            .weight_capacity(bound)
            .build()
            .unwrap_or_else(|_| unreachable!("every option is set"));
        ScanMemory {
            cache: Cache::with_options(options, ByWeight, DefaultHashBuilder::default(), Default::default()),
            bound,
            dir: None,
            counters: Counters::default(),
        }
    }

    /// The same memory, also persisted in `dir` (created if missing).
    pub fn with_dir(mut self, dir: &Path) -> Result<ScanMemory, Error> {
        for question in Question::ALL {
            std::fs::create_dir_all(dir.join(question.dir_name()))
                .map_err(|source| Error::Dir { path: dir.display().to_string(), source })?;
        }
        self.dir = Some(dir.to_path_buf());
        Ok(self)
    }

    /// The bound in bytes.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// Bytes of summaries held in memory now (never above the bound).
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// Summaries held in memory now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Lookups answered (from memory or from the directory).
    pub fn hits(&self) -> u64 {
        self.counters.hits.load(Ordering::Relaxed)
    }

    /// Lookups answered from the directory.
    pub fn disk_hits(&self) -> u64 {
        self.counters.disk_hits.load(Ordering::Relaxed)
    }

    /// Lookups not answered (the layer was read).
    pub fn misses(&self) -> u64 {
        self.counters.misses.load(Ordering::Relaxed)
    }

    /// Persisted files that did not decode and were ignored.
    pub fn rejected_files(&self) -> u64 {
        self.counters.rejected_files.load(Ordering::Relaxed)
    }

    /// Counts a layer scanned for `question`: `read` compressed bytes downloaded, or (`None`) a
    /// layer of `size` bytes that was remembered.
    pub fn record(&self, question: Question, read: Option<u64>, size: u64) {
        match read {
            Some(bytes) => self.counters.bytes_read[question.index()].fetch_add(bytes, Ordering::Relaxed),
            None => self.counters.bytes_remembered[question.index()].fetch_add(size, Ordering::Relaxed),
        };
    }

    /// Compressed layer bytes downloaded for `question` so far.
    pub fn bytes_read(&self, question: Question) -> u64 {
        self.counters.bytes_read[question.index()].load(Ordering::Relaxed)
    }

    /// Bytes of layers answered from the memory for `question` so far (not downloaded).
    pub fn bytes_remembered(&self, question: Question) -> u64 {
        self.counters.bytes_remembered[question.index()].load(Ordering::Relaxed)
    }

    /// What `question` learned from the layer `digest`, if remembered (in memory, else on disk).
    pub fn get(&self, question: Question, digest: &str) -> Option<Arc<LayerChanges>> {
        let key = (question, digest.to_string());
        if let Some(changes) = self.cache.get(&key) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Some(changes);
        }
        if let Some(changes) = self.read_file(question, digest) {
            let changes = Arc::new(changes);
            self.cache.insert(key, changes.clone());
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
            return Some(changes);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Remembers what `question` learned from the layer `digest` (and persists it, if persisted).
    pub fn put(&self, question: Question, digest: &str, changes: Arc<LayerChanges>) {
        if let Err(err) = self.write_file(question, digest, &changes) {
            tracing::warn!(layer = digest, error = %err, "could not persist a layer scan (it is kept in memory)");
        }
        self.cache.insert((question, digest.to_string()), changes);
    }

    /// The file of a summary; `None` without a directory or for a digest that is not
    /// `algorithm:hex` (a digest never becomes a path unless it is plainly one file name).
    fn file(&self, question: Question, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let (algorithm, hex) = digest.split_once(':')?;
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
        (plain(algorithm) && plain(hex)).then(|| dir.join(question.dir_name()).join(format!("{algorithm}-{hex}")))
    }

    fn read_file(&self, question: Question, digest: &str) -> Option<LayerChanges> {
        let path = self.file(question, digest)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "could not read a persisted layer scan");
                return None;
            }
        };
        match decode(&bytes, question, digest) {
            Ok(changes) => Some(changes),
            Err(reason) => {
                self.counters.rejected_files.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), reason, "ignoring a corrupt persisted layer scan; the layer is read again");
                None
            }
        }
    }

    fn write_file(&self, question: Question, digest: &str, changes: &LayerChanges) -> io::Result<()> {
        let Some(path) = self.file(question, digest) else { return Ok(()) };
        let dir = path.parent().unwrap_or(Path::new("."));
        // A unique temporary name in the same directory, renamed over the final name: readers
        // and other writers never see a partial file, and the last complete write wins. No
        // fsync: a file torn by a crash fails its checksum and is read again, like any other.
        let mut temp = tempfile_in(dir)?;
        temp.1.write_all(&encode(changes, question, digest))?;
        std::fs::rename(&temp.0, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp.0);
        })
    }
}

/// Creates a new file with a name no other process or thread uses.
fn tempfile_in(dir: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

const MAGIC: &[u8] = b"KZO layer changes 1\n";

/// The persisted form: magic, question, layer digest, the entries of interest, the three key sets
/// and the entry count, then the SHA-256 of everything before it.
fn encode(changes: &LayerChanges, question: Question, digest: &str) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    put_str(&mut out, question.dir_name());
    put_str(&mut out, digest);
    out.extend_from_slice(&changes.entries_seen.to_le_bytes());
    out.extend_from_slice(&(changes.upper.len() as u64).to_le_bytes());
    for (path, kind) in &changes.upper {
        put_str(&mut out, path);
        let (tag, target) = match kind {
            EntryKind::File => (0u8, ""),
            EntryKind::Directory => (1, ""),
            EntryKind::HardLink { target } => (2, target.as_str()),
            EntryKind::Symlink { target } => (3, target.as_str()),
            EntryKind::Other => (4, ""),
        };
        out.push(tag);
        put_str(&mut out, target);
    }
    for set in [&changes.whiteouts, &changes.opaque, &changes.replaced] {
        out.extend_from_slice(&(set.0.len() as u64).to_le_bytes());
        for key in &set.0 {
            out.extend_from_slice(&key.to_le_bytes());
        }
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Decodes a persisted summary, refusing anything that is not exactly what [`encode`] wrote for
/// this question and digest.
fn decode(bytes: &[u8], question: Question, digest: &str) -> Result<LayerChanges, &'static str> {
    let body_len = bytes.len().checked_sub(32).ok_or("shorter than its checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch");
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a layer-changes file");
    }
    if r.string()? != question.dir_name() || r.string()? != digest {
        return Err("written for another question or layer");
    }
    let mut changes = LayerChanges { entries_seen: r.u64()?, ..LayerChanges::default() };
    for _ in 0..r.u64()? {
        let path = r.string()?;
        let tag = r.take(1)?[0];
        let target = r.string()?;
        let kind = match tag {
            0 => EntryKind::File,
            1 => EntryKind::Directory,
            2 => EntryKind::HardLink { target },
            3 => EntryKind::Symlink { target },
            4 => EntryKind::Other,
            _ => return Err("unknown entry kind"),
        };
        changes.upper.insert(path, kind);
    }
    for set in [&mut changes.whiteouts, &mut changes.opaque, &mut changes.replaced] {
        let count = usize::try_from(r.u64()?).map_err(|_| "set too large")?;
        if count > r.0.len() / 16 {
            return Err("set longer than the file");
        }
        *set = PathSet(
            (0..count)
                .map(|_| r.take(16).map(|b| u128::from_le_bytes(b.try_into().unwrap_or_default())))
                .collect::<Result<_, _>>()?,
        );
        // Lookups binary-search the set; never trust the file to be sorted.
        set.seal();
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(changes)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated")?))
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::layers::{MergedView, scan_layers, scan_remembered};
    use crate::registry::fake::FakeRegistry;
    use crate::registry::{ImageRef, OciDescriptor};
    use proptest::prelude::*;

    const REPO: &str = "fake.test/os/base";
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    /// One tar entry of a generated layer.
    #[derive(Debug, Clone)]
    enum Item {
        File(String),
        Dir(String),
        Symlink(String),
        /// `.wh.NAME` for this path.
        Whiteout(String),
        /// `.wh..wh..opq` in this directory (`""`: the root).
        Opaque(String),
    }

    fn tar_of(items: &[Item]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let (path, kind) = match item {
                Item::File(p) => (p.clone(), tar::EntryType::Regular),
                Item::Dir(p) => (p.clone(), tar::EntryType::Directory),
                Item::Symlink(p) => (p.clone(), tar::EntryType::Symlink),
                Item::Whiteout(p) => match p.rsplit_once('/') {
                    Some((dir, name)) => (format!("{dir}/.wh.{name}"), tar::EntryType::Regular),
                    None => (format!(".wh.{p}"), tar::EntryType::Regular),
                },
                Item::Opaque(dir) if dir.is_empty() => (".wh..wh..opq".into(), tar::EntryType::Regular),
                Item::Opaque(dir) => (format!("{dir}/.wh..wh..opq"), tar::EntryType::Regular),
            };
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(0);
            header.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/usr/lib").unwrap();
            }
            builder.append_data(&mut header, &path, std::io::empty()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// Paths that hit every question's interest often: kernel directories, the ZFS commands and
    /// modules, akmods RPMs, and the directories above them (which whiteouts, opaque markers
    /// and symlinks replace).
    fn path() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(vec![
            "usr",
            "usr/lib",
            "usr/lib/modules",
            "lib/modules",
            "usr/sbin",
            "usr/bin",
            "rpms/kmods/zfs",
            "usr/lib/modules/6.1.0-1.fc43.x86_64/extra",
        ]);
        let name = prop::sample::select(vec![
            "6.1.0-1.fc43.x86_64",
            "6.2.0-1.fc43.x86_64",
            "zfs",
            "zpool",
            "extra",
            "zfs.ko.xz",
            "kmod-zfs-6.1.0-1.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm",
        ]);
        (prefix, prop::collection::vec(name, 0..3))
            .prop_map(|(prefix, names)| std::iter::once(prefix).chain(names).collect::<Vec<_>>().join("/"))
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            4 => path().prop_map(Item::File),
            4 => path().prop_map(Item::Dir),
            1 => path().prop_map(Item::Symlink),
            2 => path().prop_map(Item::Whiteout),
            1 => prop_oneof![Just(String::new()), path()].prop_map(Item::Opaque),
        ]
    }

    fn layers() -> impl Strategy<Value = Vec<Vec<Item>>> {
        prop::collection::vec(prop::collection::vec(item(), 0..8), 1..7)
    }

    fn push(registry: &FakeRegistry, layers: &[Vec<u8>]) -> Vec<OciDescriptor> {
        layers
            .iter()
            .map(|bytes| OciDescriptor {
                media_type: TAR.into(),
                digest: registry.add_blob(REPO, bytes),
                size: bytes.len() as i64,
                ..Default::default()
            })
            .collect()
    }

    fn entries(view: &MergedView) -> Vec<(String, EntryKind)> {
        view.entries().map(|(p, k)| (p.to_string(), k.clone())).collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any split between remembered and freshly read layers (whiteouts, opaque markers and
        /// replacements across the split included), remembered in memory or read back from
        /// disk, gives exactly the view of a full scan, for every question.
        #[test]
        fn remembered_and_read_layers_merge_to_the_full_view(
            layers in layers(),
            remembered in prop::collection::vec(any::<bool>(), 7),
            through_disk in any::<bool>(),
        ) {
            let registry = FakeRegistry::new();
            let tars: Vec<Vec<u8>> = layers.iter().map(|l| tar_of(l)).collect();
            let descriptors = push(&registry, &tars);
            let image = ImageRef::parse(&format!("{REPO}:1")).unwrap();
            let dir = tempfile::tempdir().unwrap();
            runtime().block_on(async {
                for question in Question::ALL {
                    let full = scan_layers(&registry, &image, &descriptors, move |p| (question.interest())(p)).await.unwrap();
                    // "Last night": only the remembered layers were scanned.
                    let memory = ScanMemory::default().with_dir(dir.path()).unwrap();
                    let earlier: Vec<OciDescriptor> = descriptors.iter().zip(&remembered).filter(|(_, r)| **r).map(|(d, _)| d.clone()).collect();
                    for layer in &earlier {
                        scan_remembered(&registry, &image, std::slice::from_ref(layer), question, &memory).await.unwrap();
                    }
                    let memory = if through_disk { ScanMemory::default().with_dir(dir.path()).unwrap() } else { memory };
                    let view = scan_remembered(&registry, &image, &descriptors, question, &memory).await.unwrap();
                    prop_assert_eq!(entries(&view), entries(&full), "{:?}", question);
                    prop_assert_eq!(view.layers_scanned(), full.layers_scanned());
                    let is_earlier = |d: &OciDescriptor| earlier.iter().any(|e| e.digest == d.digest);
                    // Every layer not remembered is read; a layer repeated in the image may be read
                    // once or (both copies in flight at once) twice.
                    let unread: Vec<&OciDescriptor> = descriptors.iter().filter(|d| !is_earlier(d)).collect();
                    let mut distinct: Vec<&OciDescriptor> = unread.clone();
                    distinct.sort_by(|a, b| a.digest.cmp(&b.digest));
                    distinct.dedup_by(|a, b| a.digest == b.digest);
                    let at_least: u64 = distinct.iter().map(|d| d.size as u64).sum();
                    let at_most: u64 = unread.iter().map(|d| d.size as u64).sum();
                    prop_assert!((at_least..=at_most).contains(&view.bytes_read()), "{} not in {at_least}..={at_most}", view.bytes_read());
                    prop_assert_eq!(view.entries_seen(), full.entries_seen());
                    if through_disk && !earlier.is_empty() {
                        prop_assert!(memory.disk_hits() > 0);
                    }
                }
                Ok(())
            })?;
        }
    }

    fn sample() -> (FakeRegistry, Vec<OciDescriptor>, ImageRef) {
        let registry = FakeRegistry::new();
        let tars = [
            tar_of(&[
                Item::Dir("usr/lib/modules/6.1.0-1.fc43.x86_64".into()),
                Item::File("usr/lib/modules/6.2.0-1.fc43.x86_64/vmlinuz".into()),
                Item::Symlink("usr/lib/modules/6.3/x".into()),
            ]),
            tar_of(&[Item::Whiteout("usr/lib/modules/6.1.0-1.fc43.x86_64".into()), Item::Opaque("etc".into())]),
        ];
        let descriptors = push(&registry, &tars);
        (registry, descriptors, ImageRef::parse(&format!("{REPO}:1")).unwrap())
    }

    #[test]
    fn persisted_files_round_trip_exactly() {
        let (registry, descriptors, image) = sample();
        let dir = tempfile::tempdir().unwrap();
        let memory = ScanMemory::default().with_dir(dir.path()).unwrap();
        let view =
            runtime().block_on(scan_remembered(&registry, &image, &descriptors, Question::Kernels, &memory)).unwrap();
        assert_eq!(
            view.directories().collect::<Vec<_>>(),
            ["usr/lib/modules/6.2.0-1.fc43.x86_64", "usr/lib/modules/6.3"]
        );
        for (i, layer) in descriptors.iter().enumerate() {
            let kept = memory.get(Question::Kernels, &layer.digest).unwrap();
            let hex = layer.digest.strip_prefix("sha256:").unwrap();
            let bytes = std::fs::read(dir.path().join("kernels-v1").join(format!("sha256-{hex}"))).unwrap();
            assert_eq!(decode(&bytes, Question::Kernels, &layer.digest).unwrap(), *kept);
            // A file is only valid for its own question and layer.
            assert!(decode(&bytes, Question::Verify, &layer.digest).is_err());
            assert!(decode(&bytes, Question::Kernels, &descriptors[1 - i].digest).is_err());
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("kernels-v1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn corrupt_files_are_ignored_and_replaced() {
        let (registry, descriptors, image) = sample();
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let first = ScanMemory::default().with_dir(dir.path()).unwrap();
        let expected =
            rt.block_on(scan_remembered(&registry, &image, &descriptors, Question::Kernels, &first)).unwrap();
        let hex = descriptors[0].digest.strip_prefix("sha256:").unwrap();
        let file = dir.path().join("kernels-v1").join(format!("sha256-{hex}"));
        let good = std::fs::read(&file).unwrap();
        let mut flipped = good.clone();
        flipped[MAGIC.len() + 20] ^= 1;
        for bad in [Vec::new(), good[..good.len() / 2].to_vec(), flipped, b"garbage".to_vec()] {
            std::fs::write(&file, &bad).unwrap();
            let memory = ScanMemory::default().with_dir(dir.path()).unwrap();
            let view =
                rt.block_on(scan_remembered(&registry, &image, &descriptors, Question::Kernels, &memory)).unwrap();
            assert_eq!(entries(&view), entries(&expected));
            assert_eq!((memory.rejected_files(), memory.disk_hits(), view.layers_remembered()), (1, 1, 1));
            assert_eq!(view.bytes_read(), descriptors[0].size as u64, "only the corrupt layer is read again");
            assert_eq!(std::fs::read(&file).unwrap(), good, "and its file rewritten");
        }
    }

    #[test]
    fn the_memory_stays_within_its_bound() {
        let (registry, _, image) = sample();
        let rt = runtime();
        let many: Vec<Vec<u8>> = (0..64)
            .map(|i| tar_of(&(0..50).map(|j| Item::File(format!("usr/share/doc/{i}/{j}"))).collect::<Vec<_>>()))
            .collect();
        let descriptors = push(&registry, &many);
        let one = rt
            .block_on(scan_remembered(&registry, &image, &descriptors[..1], Question::Kernels, &ScanMemory::default()))
            .unwrap();
        assert_eq!(one.layers_remembered(), 0);
        let memory = ScanMemory::new(20 * 1024);
        rt.block_on(scan_remembered(&registry, &image, &descriptors, Question::Kernels, &memory)).unwrap();
        assert!(memory.weight() <= memory.bound(), "{} > {}", memory.weight(), memory.bound());
        assert!(memory.len() < descriptors.len() && !memory.is_empty(), "{} summaries kept", memory.len());
        assert_eq!(memory.bytes_read(Question::Kernels), many.iter().map(|t| t.len() as u64).sum::<u64>());
        // A question never answers for another.
        assert!(memory.get(Question::Verify, &descriptors[63].digest).is_none());
    }

    #[test]
    fn digests_that_are_not_plain_names_are_never_paths() {
        let dir = tempfile::tempdir().unwrap();
        let memory = ScanMemory::default().with_dir(dir.path()).unwrap();
        for digest in ["sha256:../../x", "sha256:", "nocolon", "sha256:ab/cd"] {
            assert!(memory.file(Question::Kernels, digest).is_none(), "{digest}");
        }
        assert!(memory.file(Question::Kernels, "sha256:abc").unwrap().ends_with("kernels-v1/sha256-abc"));
    }
}
