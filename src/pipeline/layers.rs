//! The layer walker: streams an image's layers (`tar`, `tar+gzip`, `tar+zstd`; OCI and Docker
//! media types), reads only the tar headers, and builds the merged filesystem view of the paths a
//! caller is interested in. Two layers are read at a time (one decompressor per core), each into a
//! summary of its changes, and the summaries are applied in manifest order. Nothing is written to
//! disk; what is kept is the entries matching the interest plus, for the layers being read, 16
//! bytes per non-directory entry (the paths that may replace a lower directory), so memory stays
//! bounded whatever the image size.
//!
//! Merge rules (OCI image spec "applying changesets"; fixes hazard H9):
//! - `.wh.NAME` removes `NAME` and everything below it from the *lower* layers;
//! - `.wh..wh..opq` in `DIR` hides the lower layers' contents of `DIR` (never entries of the
//!   same layer, whatever their order in the tar);
//! - a non-directory entry replaces whatever the lower layers had at that path, subtree included;
//! - regular files, hard links and symlinks are all "present" (OSTree images use absolute link
//!   targets, which are recorded, never followed);
//! - every entry implies its parent directories exist.
//!
//! Callers (each a few lines): kernel discovery keeps `(usr/)?lib/modules/<release>` directories,
//! the akmods cache scan keeps `rpms/kmods/zfs/kmod-zfs-*.rpm`, candidate verification keeps the
//! `zfs`/`zpool` commands and `zfs.ko*` module paths. A caller that knows the base image's layers
//! passes only the layers on top of them.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::scan_memory::{Question, ScanMemory};
use crate::registry::{self, ImageRef, OciDescriptor, RegistryClient};

/// Errors of a layer scan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a layer from the registry failed (classified; includes digest mismatches).
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(
        "layer {digest} has unsupported media type {media_type:?} (expected an OCI or Docker tar, tar+gzip or tar+zstd layer)"
    )]
    MediaType { digest: String, media_type: String },
    #[error("layer {digest} is malformed or truncated: {detail}")]
    Malformed { digest: String, detail: String },
    #[error("scan of layer {digest} stopped unexpectedly: {detail}")]
    Task { digest: String, detail: String },
}

/// Layer compression, from the layer's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type; `None` for media types that are not tar layers.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// What a path is in the merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    HardLink {
        target: String,
    },
    Symlink {
        target: String,
    },
    /// Device, FIFO and other special files.
    Other,
}

impl EntryKind {
    /// Files, hard links and symlinks: what counts as "present" for payload checks.
    pub fn is_payload(&self) -> bool {
        matches!(self, EntryKind::File | EntryKind::HardLink { .. } | EntryKind::Symlink { .. })
    }
}

/// The merged view of the interesting paths after all scanned layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedView {
    entries: BTreeMap<String, EntryKind>,
    bytes_read: u64,
    layers_scanned: usize,
    layers_remembered: usize,
    entries_seen: u64,
}

impl MergedView {
    /// The entry at a normalized path (`usr/bin/zfs`), if it survived the merge.
    pub fn get(&self, path: &str) -> Option<&EntryKind> {
        self.entries.get(path)
    }

    /// Whether `path` is a file, hard link or symlink.
    pub fn has_payload(&self, path: &str) -> bool {
        self.get(path).is_some_and(EntryKind::is_payload)
    }

    /// Whether `path` is a directory (explicit or implied by an entry below it).
    pub fn is_dir(&self, path: &str) -> bool {
        self.get(path) == Some(&EntryKind::Directory)
    }

    /// Every kept entry, in path order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &EntryKind)> {
        self.entries.iter().map(|(p, k)| (p.as_str(), k))
    }

    /// Paths that are files, hard links or symlinks.
    pub fn payload_paths(&self) -> impl Iterator<Item = &str> {
        self.entries().filter(|(_, k)| k.is_payload()).map(|(p, _)| p)
    }

    /// Paths that are directories.
    pub fn directories(&self) -> impl Iterator<Item = &str> {
        self.entries().filter(|(_, k)| **k == EntryKind::Directory).map(|(p, _)| p)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Compressed bytes downloaded (what a delta-only scan keeps small).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Layers applied (read or remembered).
    pub fn layers_scanned(&self) -> usize {
        self.layers_scanned
    }

    /// Layers answered by the scan memory instead of being downloaded.
    pub fn layers_remembered(&self) -> usize {
        self.layers_remembered
    }

    /// Tar entries read, over all layers (whiteouts included).
    pub fn entries_seen(&self) -> u64 {
        self.entries_seen
    }
}

/// Which normalized paths a scan keeps. Called for every entry path and its parent directories.
pub type Interest = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Chunks buffered between receiving a layer and decompressing it (registry chunks are at most
/// tens of KiB, so this stays in the low MiB).
const PIPELINE_CHUNKS: usize = 4;

/// Largest zstd window accepted (32 MiB): the decoder allocates the window a frame declares, so
/// this bounds memory; layers written by podman/buildah use far smaller windows.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// Layers read at the same time by [`scan_layers`]. Decompression is most of a scan's CPU, so two
/// layers in flight use two cores; each holds a decompressor (a zstd window is at most 32 MiB,
/// gzip's 32 KiB) and a few pipeline chunks, which keeps the scan's memory bounded.
const MAX_PARALLEL_LAYERS: usize = 2;

/// Bounds on what one layer may make the walker hold or do, whatever its content: every tar
/// header field is outside input. A layer over a bound is malformed (the scan fails; nothing is
/// guessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest entry path or link target, in bytes. Linux's `PATH_MAX` is 4096, so no file a
    /// layer was made from has a longer path.
    pub max_path_bytes: usize,
    /// Largest GNU long-name/long-link or PAX extended header read into memory (the tar crate
    /// would read any size whole).
    pub max_header_bytes: u64,
    /// Most entries in one layer (each non-directory entry costs 16 bytes until the layer is
    /// applied). A Fedora Kinoite layer has a few hundred thousand.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_path_bytes: 4096, max_header_bytes: 1 << 20, max_entries: 4 << 20 }
    }
}

/// The key of a normalized path: the first 128 bits of its SHA-256, so a layer's removals are
/// remembered in 16 bytes per path whatever the path length. The key is the same in every merger
/// and every process, which is what lets a layer's [`LayerChanges`] be remembered (in memory and
/// on disk, [`super::scan_memory`]) and applied in any later scan; a collision is neither likely
/// by chance nor practical to craft (about 2^64 work for a truncated SHA-256).
pub(crate) fn path_key(path: &str) -> u128 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(path.as_bytes());
    u128::from_be_bytes(digest[..16].try_into().unwrap_or_default())
}

/// A set of path keys (sorted once the layer is read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PathSet(pub(crate) Vec<u128>);

impl PathSet {
    pub(crate) fn seal(&mut self) {
        self.0.sort_unstable();
        self.0.dedup();
        self.0.shrink_to_fit();
    }

    fn contains(&self, key: u128) -> bool {
        self.0.binary_search(&key).is_ok()
    }
}

/// What one layer does to the merged view, read from the layer alone so that layers can be read
/// in parallel; [`LayerMerger::apply`] applies it on top of the lower layers, in order. Within a
/// layer the order of entries does not matter for the lower layers (whiteouts, opaque markers and
/// replacements only ever touch them), so a summary is exact. A summary depends only on the
/// layer's bytes and the interest, so it can be remembered by layer digest and question
/// ([`super::scan_memory`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerChanges {
    /// This layer's entries of interest and the implied parent directories of interest.
    pub(crate) upper: BTreeMap<String, EntryKind>,
    /// Whiteout targets: removed from the lower layers with everything below them.
    pub(crate) whiteouts: PathSet,
    /// Directories with an opaque marker (`""` for the root): the lower layers' contents below
    /// them are hidden.
    pub(crate) opaque: PathSet,
    /// Paths of non-directory entries: each replaces whatever the lower layers had below it.
    pub(crate) replaced: PathSet,
    pub(crate) entries_seen: u64,
}

impl LayerChanges {
    /// Approximate heap bytes this summary holds (what the scan memory's bound counts): 16 bytes
    /// per remembered path key, each kept entry's path and link target plus map overhead.
    pub fn weight(&self) -> u64 {
        let keys = self.whiteouts.0.len() + self.opaque.0.len() + self.replaced.0.len();
        let entries: usize = self
            .upper
            .iter()
            .map(|(path, kind)| {
                let target = match kind {
                    EntryKind::HardLink { target } | EntryKind::Symlink { target } => target.len(),
                    _ => 0,
                };
                path.len() + target + 80
            })
            .sum();
        (keys * 16 + entries + 128) as u64
    }

    /// Tar entries of the layer (whiteouts included).
    pub fn entries_seen(&self) -> u64 {
        self.entries_seen
    }

    /// Whether a lower entry at `path` does not survive this layer.
    fn removes(&self, path: &str) -> bool {
        if self.whiteouts.contains(path_key(path)) || self.opaque.contains(path_key("")) {
            return true;
        }
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let key = path_key(&path[..end + slash]);
            if self.whiteouts.contains(key) || self.opaque.contains(key) || self.replaced.contains(key) {
                return true;
            }
            end += slash + 1;
        }
        false
    }
}

/// Reads layers into [`LayerChanges`] (pure, synchronous; cheap to clone, one per layer in flight).
#[derive(Clone)]
pub struct LayerReader {
    interest: Interest,
    limits: Limits,
}

impl LayerReader {
    /// Reads one compressed layer from `reader`, which is read to its end.
    pub fn read_layer<R: Read>(&self, compression: Compression, mut reader: R) -> Result<LayerChanges, String> {
        let changes = match compression {
            Compression::None => self.read_tar(&mut reader)?,
            Compression::Gzip => self.read_tar(flate2::read::MultiGzDecoder::new(BufReader::new(&mut reader)))?,
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::new(&mut reader).map_err(|e| format!("zstd: {e}"))?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| format!("zstd: {e}"))?;
                self.read_tar(decoder)?
            }
        };
        // Read whatever the decompressor did not need, so the blob is consumed (and its digest
        // checked) to the end.
        io::copy(&mut reader, &mut io::sink()).map_err(|e| e.to_string())?;
        Ok(changes)
    }

    /// Reads one uncompressed tar layer from `reader`, which is read to its end.
    ///
    /// The archive is read raw: GNU long names, long links and PAX headers are read here, each
    /// bounded by [`Limits::max_header_bytes`] (the tar crate's own handling reads them whole,
    /// whatever size the header declares).
    pub fn read_tar<R: Read>(&self, reader: R) -> Result<LayerChanges, String> {
        let key = path_key;
        let limits = &self.limits;
        let mut counting = Counting { inner: reader, count: 0 };
        let mut changes = LayerChanges::default();
        let mut end_of_entries = 0u64;
        {
            let mut archive = tar::Archive::new(&mut counting);
            let mut pending = Extensions::default();
            for entry in archive.entries().map_err(|e| e.to_string())?.raw(true) {
                let mut entry = entry.map_err(|e| e.to_string())?;
                // No overflow: the tar crate checked that the next header's offset fits.
                end_of_entries = entry.raw_file_position() + entry.size().div_ceil(512) * 512;
                if pending.take_extension(&mut entry, limits)? {
                    continue;
                }
                changes.entries_seen += 1;
                if changes.entries_seen > limits.max_entries {
                    return Err(format!("the layer has more than {} entries", limits.max_entries));
                }
                let extensions = std::mem::take(&mut pending);
                let header = entry.header();
                if header.entry_type().is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended()) {
                    return Err("GNU sparse entries with extension headers are not supported".into());
                }
                if let Some(size) = extensions.size()?
                    && size != entry.size()
                {
                    return Err(format!(
                        "a PAX header sets size {size} for an entry whose header says {} (not supported)",
                        entry.size()
                    ));
                }
                let path_bytes = extensions.path(header);
                if path_bytes.len() > limits.max_path_bytes {
                    return Err(format!(
                        "an entry path is {} bytes long, more than {} (PATH_MAX)",
                        path_bytes.len(),
                        limits.max_path_bytes
                    ));
                }
                let link_bytes = extensions.link(header);
                if link_bytes.as_ref().is_some_and(|l| l.len() > limits.max_path_bytes) {
                    return Err(format!("a link target is longer than {} bytes (PATH_MAX)", limits.max_path_bytes));
                }
                let Some(path) = normalize(&String::from_utf8_lossy(&path_bytes))? else { continue };
                if let Some(reserved_dir) = inside_reserved_dir(&path) {
                    // Below an AUFS metadata directory (`.wh..wh.plnk/...`): not part of the image.
                    self.imply_parents(&mut changes.upper, reserved_dir);
                    continue;
                }
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                if name == ".wh..wh..opq" {
                    changes.opaque.0.push(key(parent));
                } else if name.starts_with(".wh..wh.") {
                    // Reserved AUFS metadata (e.g. `.wh..wh.plnk`): neither payload nor whiteout.
                } else if let Some(hidden) = name.strip_prefix(".wh.") {
                    let target = if parent.is_empty() { hidden.to_string() } else { format!("{parent}/{hidden}") };
                    changes.whiteouts.0.push(key(&target));
                } else {
                    let link = link_bytes.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                    let kind = kind_of(header.entry_type(), link)?;
                    if kind != EntryKind::Directory {
                        // A file, link or device replaces a lower directory with all it held.
                        changes.replaced.0.push(key(&path));
                    }
                    if (self.interest)(&path) {
                        changes.upper.insert(path.clone(), kind);
                    }
                }
                self.imply_parents(&mut changes.upper, &path);
            }
            if !pending.is_empty() {
                return Err("the layer ends with a long-name or PAX header that describes no entry".into());
            }
        }
        // The tar crate also ends at a plain EOF between entries; a layer must end with the
        // end-of-archive block, or it was cut short.
        if counting.count < end_of_entries.saturating_add(512) {
            return Err("the tar stream ends before its end-of-archive marker (truncated layer)".into());
        }
        io::copy(&mut counting, &mut io::sink()).map_err(|e| e.to_string())?;
        for set in [&mut changes.whiteouts, &mut changes.opaque, &mut changes.replaced] {
            set.seal();
        }
        Ok(changes)
    }

    fn imply_parents(&self, upper: &mut BTreeMap<String, EntryKind>, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let dir = &path[..end + slash];
            // The interest first: it rejects most directories at once, and the map lookup of a
            // long prefix is the expensive part.
            if (self.interest)(dir) && !upper.contains_key(dir) {
                upper.insert(dir.to_string(), EntryKind::Directory);
            }
            end += slash + 1;
        }
    }
}

/// The merge state, fed one layer at a time in order (pure, synchronous; the async driver is
/// [`scan_layers`]).
pub struct LayerMerger {
    reader: LayerReader,
    lower: BTreeMap<String, EntryKind>,
    layers: usize,
    entries_seen: u64,
}

impl LayerMerger {
    pub fn new(interest: Interest) -> LayerMerger {
        LayerMerger::with_limits(interest, Limits::default())
    }

    /// A merger whose layers must stay within `limits` (tests use small ones).
    pub fn with_limits(interest: Interest, limits: Limits) -> LayerMerger {
        LayerMerger { reader: LayerReader { interest, limits }, lower: BTreeMap::new(), layers: 0, entries_seen: 0 }
    }

    /// A reader whose [`LayerChanges`] this merger can apply (layers may be read in parallel).
    pub fn reader(&self) -> LayerReader {
        self.reader.clone()
    }

    /// Applies the next layer's changes: its whiteouts, opaque markers and replacements remove
    /// lower entries, then its own entries are laid on top.
    pub fn apply(&mut self, changes: &LayerChanges) {
        self.lower.retain(|path, _| !changes.removes(path));
        self.lower.extend(changes.upper.iter().map(|(path, kind)| (path.clone(), kind.clone())));
        self.entries_seen += changes.entries_seen;
        self.layers += 1;
    }

    /// Reads and applies one compressed layer read from `reader`, which is read to its end.
    pub fn apply_layer<R: Read>(&mut self, compression: Compression, reader: R) -> Result<(), String> {
        let changes = self.reader.read_layer(compression, reader)?;
        self.apply(&changes);
        Ok(())
    }

    /// Reads and applies one uncompressed tar layer read from `reader`, which is read to its end.
    pub fn apply_tar<R: Read>(&mut self, reader: R) -> Result<(), String> {
        let changes = self.reader.read_tar(reader)?;
        self.apply(&changes);
        Ok(())
    }

    /// The view after all layers applied so far.
    pub fn finish(self, bytes_read: u64) -> MergedView {
        MergedView {
            entries: self.lower,
            bytes_read,
            layers_scanned: self.layers,
            layers_remembered: 0,
            entries_seen: self.entries_seen,
        }
    }
}

/// For a path below a `.wh..wh.*` directory, that directory's path.
fn inside_reserved_dir(path: &str) -> Option<&str> {
    let mut start = 0;
    for part in path.split('/') {
        let end = start + part.len();
        if part.starts_with(".wh..wh.") && end < path.len() {
            return Some(&path[..end]);
        }
        start = end + 1;
    }
    None
}

fn kind_of(entry_type: tar::EntryType, link: String) -> Result<EntryKind, String> {
    Ok(match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Directory,
        tar::EntryType::Link => EntryKind::HardLink { target: normalize(&link)?.unwrap_or(link) },
        tar::EntryType::Symlink => EntryKind::Symlink { target: link },
        _ => EntryKind::Other,
    })
}

/// The GNU long name, long link and PAX extended header that precede an entry (the tar
/// crate's rules: a long name wins over a PAX `path`, which wins over the header's name).
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }

    /// Reads `entry` when it is an extension header (true), bounded by the limits.
    fn take_extension<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, limits: &Limits) -> Result<bool, String> {
        let header = entry.header();
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let entry_type = header.entry_type();
        if entry_type.is_pax_global_extensions() {
            // Archive-wide defaults (comments, mtimes); nothing the merge uses. Skipped unread.
            return Ok(true);
        }
        let slot = match entry_type {
            t if recognized && t.is_gnu_longname() => &mut self.long_name,
            t if recognized && t.is_gnu_longlink() => &mut self.long_link,
            t if recognized && t.is_pax_local_extensions() => &mut self.pax,
            _ => return Ok(false),
        };
        if slot.is_some() {
            return Err("two long-name or PAX headers describe the same entry".into());
        }
        if entry.size() > limits.max_header_bytes {
            return Err(format!(
                "a long-name or PAX header declares {} bytes, more than {}",
                entry.size(),
                limits.max_header_bytes
            ));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        *slot = Some(data);
        Ok(true)
    }

    fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        let pax = self.pax.as_deref()?;
        tar::PaxExtensions::new(pax).filter_map(Result::ok).find(|e| e.key_bytes() == key).map(|e| e.value_bytes())
    }

    fn path<'h>(&'h self, header: &'h tar::Header) -> std::borrow::Cow<'h, [u8]> {
        match (&self.long_name, self.pax_value(b"path")) {
            (Some(name), _) => std::borrow::Cow::Borrowed(name.strip_suffix(&[0]).unwrap_or(name)),
            (None, Some(path)) => std::borrow::Cow::Borrowed(path),
            (None, None) => header.path_bytes(),
        }
    }

    fn link<'h>(&'h self, header: &'h tar::Header) -> Option<std::borrow::Cow<'h, [u8]>> {
        match (&self.long_link, self.pax_value(b"linkpath")) {
            (Some(link), _) => Some(std::borrow::Cow::Borrowed(link.strip_suffix(&[0]).unwrap_or(link))),
            (None, Some(link)) => Some(std::borrow::Cow::Borrowed(link)),
            (None, None) => header.link_name_bytes(),
        }
    }

    /// The PAX `size`, when there is one.
    fn size(&self) -> Result<Option<u64>, String> {
        self.pax_value(b"size")
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| "a PAX header has an invalid size".to_string())
            })
            .transpose()
    }
}

/// `./usr//lib/` -> `usr/lib`; the root itself -> `None`. `..` components make a layer invalid
/// (no legitimate layer has them; they are how path traversal attacks look).
pub fn normalize(raw: &str) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("entry {raw:?} has a '..' component")),
            part => parts.push(part),
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("/")) })
}

struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Streams `layers` (a manifest's layers in order, or the tail of them on top of a known base)
/// from `repository` and returns the merged view of the paths `interest` keeps.
///
/// ```no_run
/// # use kinoite_zfs_operator::registry::{OciRegistry, ResolvedImage};
/// # async fn example(client: &OciRegistry, image: &ResolvedImage) -> Result<(), kinoite_zfs_operator::pipeline::layers::Error> {
/// use kinoite_zfs_operator::pipeline::layers::scan_layers;
/// let view = scan_layers(client, &image.reference, image.layers(), |p| p.starts_with("usr/bin/")).await?;
/// let has_zfs = view.has_payload("usr/bin/zfs");
/// # Ok(()) }
/// ```
pub async fn scan_layers<R, F>(
    registry: &R,
    repository: &ImageRef,
    layers: &[OciDescriptor],
    interest: F,
) -> Result<MergedView, Error>
where
    R: RegistryClient + ?Sized,
    F: Fn(&str) -> bool + Send + Sync + 'static,
{
    scan(registry, repository, layers, Arc::new(interest), None).await
}

/// [`scan_layers`] for one of the fixed questions, with every layer `memory` remembers for it
/// taken from there instead of the registry; the layers read are remembered. The view is the one
/// a full scan gives ([`super::scan_memory`] says why); `bytes_read` counts only what was read.
pub async fn scan_remembered<R>(
    registry: &R,
    repository: &ImageRef,
    layers: &[OciDescriptor],
    question: Question,
    memory: &ScanMemory,
) -> Result<MergedView, Error>
where
    R: RegistryClient + ?Sized,
{
    scan(registry, repository, layers, question.interest(), Some((question, memory))).await
}

async fn scan<R>(
    registry: &R,
    repository: &ImageRef,
    layers: &[OciDescriptor],
    interest: Interest,
    memory: Option<(Question, &ScanMemory)>,
) -> Result<MergedView, Error>
where
    R: RegistryClient + ?Sized,
{
    // Every media type is checked before anything is downloaded.
    let plan = layers
        .iter()
        .map(|layer| {
            Compression::from_media_type(&layer.media_type)
                .map(|c| (c, layer))
                .ok_or_else(|| Error::MediaType { digest: layer.digest.clone(), media_type: layer.media_type.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut merger = LayerMerger::new(interest);
    let reader = merger.reader();
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_PARALLEL_LAYERS);
    // Layers are read (downloaded, verified, decompressed, parsed) `parallel` at a time and
    // applied strictly in manifest order; the first failing layer in that order is the error.
    // The reads are made up front (futures do nothing until polled) and boxed as `dyn Future +
    // Send`: a stream that keeps a closure returning borrowing futures cannot be proven Send for
    // every lifetime (rust-lang/rust#102211), and callers that spawn the scan (the controller's
    // reconcile) would not compile.
    let reads: Vec<LayerRead<'_>> = plan
        .into_iter()
        .map(|(compression, layer)| {
            let reader = reader.clone();
            Box::pin(async move {
                if let Some((question, memory)) = memory {
                    let size = u64::try_from(layer.size).unwrap_or_default();
                    if let Some(changes) = memory.get(question, &layer.digest) {
                        memory.record(question, None, size);
                        return Ok((changes, None));
                    }
                    let (changes, bytes) = read_layer(registry, repository, layer, compression, reader).await?;
                    let changes = Arc::new(changes);
                    memory.put(question, &layer.digest, changes.clone());
                    memory.record(question, Some(bytes), size);
                    return Ok((changes, Some(bytes)));
                }
                let (changes, bytes) = read_layer(registry, repository, layer, compression, reader).await?;
                Ok((Arc::new(changes), Some(bytes)))
            }) as LayerRead<'_>
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(parallel);
    let (mut bytes_read, mut remembered) = (0, 0);
    while let Some(read) = reads.next().await {
        let (changes, bytes) = read?;
        merger.apply(&changes);
        match bytes {
            Some(bytes) => bytes_read += bytes,
            None => remembered += 1,
        }
    }
    let mut view = merger.finish(bytes_read);
    view.layers_remembered = remembered;
    Ok(view)
}

/// One layer's read in flight: its changes and the compressed bytes downloaded (`None`: the
/// scan memory remembered it).
type LayerRead<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Arc<LayerChanges>, Option<u64>), Error>> + Send + 'a>>;

/// Aborts a spawned task when dropped: a layer read that is given up (an earlier layer failed)
/// stops downloading.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Downloads one layer and reads its changes; returns them with the compressed bytes received.
async fn read_layer<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    layer: &OciDescriptor,
    compression: Compression,
    reader: LayerReader,
) -> Result<(LayerChanges, u64), Error> {
    let mut stream = registry.blob_stream(repository, &layer.digest).await?;
    let counted = Arc::new(AtomicU64::new(0));
    // The registry's own error (classified) is kept here; the sync reader only sees io errors.
    let failure: Arc<Mutex<Option<registry::Error>>> = Arc::default();
    let (count, fail) = (counted.clone(), failure.clone());
    // Receiving and digest verification run in this task, decompression and tar parsing on the
    // blocking thread: the two proceed in parallel, with at most PIPELINE_CHUNKS chunks between.
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(PIPELINE_CHUNKS);
    let mut pump = AbortOnDrop(tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    Ok(bytes)
                }
                Err(err) => {
                    let message = err.to_string();
                    *fail.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                    Err(io::Error::other(message))
                }
            };
            let stop = item.is_err();
            // A closed receiver means the reader stopped (a malformed layer): done.
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    }));
    let chunks = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let bridge = SyncIoBridge::new(StreamReader::new(Box::pin(chunks)));
    let task = tokio::task::spawn_blocking(move || reader.read_layer(compression, bridge));
    let task_error = |e: tokio::task::JoinError| Error::Task { digest: layer.digest.clone(), detail: e.to_string() };
    let result = task.await.map_err(task_error)?;
    // The blocking reader is done and its receiver dropped, so the pump has finished or stops at
    // its next send; waiting for it makes `counted` and `failure` final.
    (&mut pump.0).await.map_err(task_error)?;
    if let Some(err) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(Error::Registry(err));
    }
    let changes = result.map_err(|detail| Error::Malformed { digest: layer.digest.clone(), detail })?;
    let bytes = counted.load(Ordering::Relaxed);
    tracing::debug!(layer = %layer.digest, bytes, "layer scanned");
    Ok((changes, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time check (never run): a scan can be spawned on a task that owns its inputs, as
    /// the controller's reconcile does; see the comment on the boxed reads in `scan_layers`.
    #[allow(dead_code)]
    fn scan_is_spawnable(
        registry: Arc<crate::registry::OciRegistry>,
        repository: ImageRef,
        layers: Vec<OciDescriptor>,
    ) {
        tokio::spawn(async move {
            let _ = scan_layers(&*registry, &repository, &layers, |_| true).await;
        });
    }

    /// A tar for tests from (path, kind): `f` file, `d` dir, `h:T` hard link to T, `s:T` symlink
    /// to T. Names are written raw, so tests can use `./`, absolute and `..` names as found in
    /// the wild (the tar crate's builder refuses some of them).
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut header = tar::Header::new_old();
            header.set_mode(0o644);
            header.set_size(0);
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            let (entry_type, link, data): (_, &str, &[u8]) = match *kind {
                "f" => (tar::EntryType::Regular, "", b"abc"),
                "d" => (tar::EntryType::Directory, "", b""),
                k if k.starts_with("h:") => (tar::EntryType::Link, &k[2..], b""),
                k if k.starts_with("s:") => (tar::EntryType::Symlink, &k[2..], b""),
                k => panic!("unknown kind {k}"),
            };
            header.set_entry_type(entry_type);
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn merge(
        layers: &[Vec<u8>],
        interest: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<MergedView, String> {
        let mut merger = LayerMerger::new(Arc::new(interest));
        for layer in layers {
            merger.apply_tar(&layer[..])?;
        }
        Ok(merger.finish(0))
    }

    fn all(_: &str) -> bool {
        true
    }

    fn paths(view: &MergedView) -> Vec<&str> {
        view.entries().map(|(p, _)| p).collect()
    }

    #[test]
    fn names_are_normalized_and_parents_implied() {
        let view = merge(&[tar_of(&[("./usr/bin/zfs", "f"), ("/etc//os-release", "f"), ("./", "d")])], all).unwrap();
        assert_eq!(paths(&view), ["etc", "etc/os-release", "usr", "usr/bin", "usr/bin/zfs"]);
        assert!(view.has_payload("usr/bin/zfs") && view.is_dir("usr/bin") && !view.has_payload("usr/bin"));
        assert_eq!(normalize("a/../b"), Err("entry \"a/../b\" has a '..' component".into()));
        assert_eq!(normalize("./"), Ok(None));
    }

    #[test]
    fn files_hard_links_and_symlinks_are_payload() {
        let view = merge(
            &[tar_of(&[
                ("usr/sbin/zfs", "f"),
                ("usr/sbin/zpool", "h:./usr/sbin/zfs"),
                ("usr/lib/modules/6.1/extra/zfs/zfs.ko", "s:/sysroot/ostree/repo/objects/aa/bb.file"),
                ("usr/lib/modules/6.1/extra", "d"),
            ])],
            all,
        )
        .unwrap();
        assert_eq!(view.get("usr/sbin/zpool"), Some(&EntryKind::HardLink { target: "usr/sbin/zfs".into() }));
        assert_eq!(
            view.get("usr/lib/modules/6.1/extra/zfs/zfs.ko"),
            Some(&EntryKind::Symlink { target: "/sysroot/ostree/repo/objects/aa/bb.file".into() })
        );
        assert_eq!(view.payload_paths().count(), 3);
        assert!(view.is_dir("usr/lib/modules/6.1/extra"));
    }

    #[test]
    fn only_interesting_paths_are_kept() {
        let view = merge(
            &[tar_of(&[
                ("usr/lib/modules/6.1/vmlinuz", "f"),
                ("usr/lib/modules/6.2/kernel/a.ko", "f"),
                ("etc/x", "f"),
            ])],
            |p| p.strip_prefix("usr/lib/modules/").is_some_and(|rest| !rest.contains('/')),
        )
        .unwrap();
        assert_eq!(view.directories().collect::<Vec<_>>(), ["usr/lib/modules/6.1", "usr/lib/modules/6.2"]);
        assert_eq!(view.entries_seen(), 3);
    }

    #[test]
    fn whiteouts_remove_lower_files_and_whole_subtrees() {
        let base = tar_of(&[
            ("usr/lib/modules/6.1/extra/zfs/zfs.ko", "f"),
            ("usr/lib/modules/6.2/extra/zfs/zfs.ko", "f"),
            ("usr/lib/modules/6.2-other/extra/zfs/zfs.ko", "f"),
            ("usr/bin/zfs", "f"),
        ]);
        let upper = tar_of(&[("usr/lib/modules/.wh.6.2", "f"), ("usr/bin/.wh.zfs", "f")]);
        let view = merge(&[base, upper], all).unwrap();
        assert!(view.has_payload("usr/lib/modules/6.1/extra/zfs/zfs.ko"));
        assert!(view.get("usr/lib/modules/6.2").is_none(), "the directory itself is gone");
        assert!(view.get("usr/lib/modules/6.2/extra/zfs/zfs.ko").is_none(), "and everything below it");
        assert!(view.has_payload("usr/lib/modules/6.2-other/extra/zfs/zfs.ko"), "a sibling with the same prefix stays");
        assert!(!view.has_payload("usr/bin/zfs"));
        assert!(view.is_dir("usr/bin"), "whiting out a file keeps its directory");
    }

    #[test]
    fn whiteouts_never_touch_their_own_layer() {
        // Re-creating a path in the same layer as its whiteout (in either order) keeps the new one.
        let base = tar_of(&[("opt/old/a", "f")]);
        let upper = tar_of(&[("opt/old/b", "f"), ("opt/.wh.old", "f"), ("opt/old/c", "f")]);
        let view = merge(&[base, upper], all).unwrap();
        assert_eq!(paths(&view), ["opt", "opt/old", "opt/old/b", "opt/old/c"]);
    }

    #[test]
    fn opaque_directories_hide_lower_contents_only() {
        let base =
            tar_of(&[("usr/lib/modules/6.1/extra/zfs/zfs.ko", "f"), ("usr/lib/modules/6.1/extra/other.ko", "f")]);
        // The opaque marker comes after an entry of the same layer (hazard H9): that entry stays.
        let upper =
            tar_of(&[("usr/lib/modules/6.1/extra/new.ko", "f"), ("usr/lib/modules/6.1/extra/.wh..wh..opq", "f")]);
        let view = merge(&[base, upper], all).unwrap();
        assert!(view.is_dir("usr/lib/modules/6.1/extra"), "the opaque directory itself exists");
        assert!(view.has_payload("usr/lib/modules/6.1/extra/new.ko"));
        assert!(view.get("usr/lib/modules/6.1/extra/zfs/zfs.ko").is_none());
        assert!(view.get("usr/lib/modules/6.1/extra/other.ko").is_none());
        // A third layer adding content back is visible again.
        let third = tar_of(&[("usr/lib/modules/6.1/extra/zfs/zfs.ko.xz", "f")]);
        let view2 = merge(&[tar_of(&[("a/x", "f")]), tar_of(&[("a/.wh..wh..opq", "f")]), third], all).unwrap();
        assert!(view2.has_payload("usr/lib/modules/6.1/extra/zfs/zfs.ko.xz") && view2.get("a/x").is_none());
        // A root-level opaque marker hides everything below.
        let view3 = merge(&[tar_of(&[("a/x", "f")]), tar_of(&[(".wh..wh..opq", "f"), ("b", "f")])], all).unwrap();
        assert_eq!(paths(&view3), ["b"]);
    }

    #[test]
    fn a_file_replacing_a_directory_hides_its_subtree() {
        let base = tar_of(&[("lib/modules/6.1/extra/zfs/zfs.ko", "f")]);
        let upper = tar_of(&[("lib", "s:usr/lib")]);
        let view = merge(&[base, upper], all).unwrap();
        assert_eq!(paths(&view), ["lib"]);
        assert_eq!(view.get("lib"), Some(&EntryKind::Symlink { target: "usr/lib".into() }));
        // The interest does not need to cover the replacing entry for the subtree to go.
        let view =
            merge(&[tar_of(&[("lib/modules/6.1/x", "f")]), tar_of(&[("lib/modules", "s:/x")])], |p| p.ends_with("/x"))
                .unwrap();
        assert!(view.is_empty());
    }

    #[test]
    fn layers_read_in_any_order_are_applied_in_order() {
        // What the parallel driver does: each layer is read on its own, the changes applied in order.
        let mut merger = LayerMerger::new(Arc::new(all));
        let reader = merger.reader();
        let upper = reader.read_tar(&tar_of(&[("a", "s:/z"), (".wh.b", "f"), ("c/.wh..wh..opq", "f")])[..]).unwrap();
        let lower = reader.read_tar(&tar_of(&[("a/x", "f"), ("b/y", "f"), ("c/d/e", "f"), ("k", "d")])[..]).unwrap();
        merger.apply(&lower);
        merger.apply(&upper);
        let view = merger.finish(0);
        assert_eq!(paths(&view), ["a", "c", "k"]);
        assert!(view.has_payload("a"), "the symlink replaced the directory");
    }

    #[test]
    fn reserved_whiteout_names_are_not_payload() {
        let view = merge(&[tar_of(&[(".wh..wh.plnk/123", "f"), ("dir/.wh..wh.aufs", "f")])], all).unwrap();
        assert_eq!(paths(&view), ["dir"]);
    }

    #[test]
    fn truncated_and_garbage_layers_are_errors() {
        let layer = tar_of(&[("usr/bin/zfs", "f"), ("usr/bin/zpool", "f")]);
        // Cut inside a header, inside data, and exactly between entries (no end marker).
        for cut in [100, 512 + 2, 1024, 1536, 2048] {
            let err = merge(&[layer[..cut].to_vec()], all).unwrap_err();
            assert!(!err.is_empty(), "{cut}");
        }
        for cut in [1024, 2048] {
            assert!(merge(&[layer[..cut].to_vec()], all).unwrap_err().contains("truncated"), "{cut}");
        }
        assert!(merge(&[Vec::new()], all).unwrap_err().contains("truncated"));
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let err = merge(std::slice::from_ref(&garbage), all).unwrap_err();
        assert!(err.contains("checksum") || err.contains("numeric field"), "{err}");
        // An empty tar (just the end marker) is a valid, empty layer.
        assert!(merge(&[vec![0; 1024]], all).unwrap().is_empty());
        assert!(merge(&[tar_of(&[("../etc/passwd", "f")])], all).unwrap_err().contains("'..'"));

        let mut merger = LayerMerger::new(Arc::new(all));
        assert!(merger.apply_layer(Compression::Gzip, &garbage[..]).is_err());
        assert!(merger.apply_layer(Compression::Zstd, &garbage[..]).is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &layer).unwrap();
        let gz = gz.finish().unwrap();
        assert!(merger.apply_layer(Compression::Gzip, &gz[..gz.len() - 10]).is_err(), "truncated gzip");
        let zst = zstd::encode_all(&layer[..], 3).unwrap();
        assert!(merger.apply_layer(Compression::Zstd, &zst[..zst.len() / 2]).is_err(), "truncated zstd");
        assert!(merger.apply_layer(Compression::Gzip, &gz[..]).is_ok());
        assert!(merger.apply_layer(Compression::Zstd, &zst[..]).is_ok());
        let view = merger.finish(0);
        assert!(view.has_payload("usr/bin/zpool"));
        assert_eq!(view.layers_scanned(), 2, "failed layers are not counted");
    }

    #[test]
    fn media_types() {
        for (media_type, expected) in [
            ("application/vnd.oci.image.layer.v1.tar", Some(Compression::None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Compression::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Compression::Zstd)),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Some(Compression::Gzip)),
            ("application/vnd.docker.image.rootfs.diff.tar", Some(Compression::None)),
            ("application/vnd.docker.image.rootfs.diff.tar.zstd", Some(Compression::Zstd)),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.in-toto+json", None),
        ] {
            assert_eq!(Compression::from_media_type(media_type), expected, "{media_type}");
        }
    }
}
