//! Hostile input (issue 11 item 7): property tests (proptest) for every parser that reads input
//! from outside the operator: image layers (the layer walker), replay locks (files, ConfigMap
//! keys, inline), docker config files and Secrets, image references, the builder's termination
//! message, kmod RPM file names, run records and image configs. Each property is "no panic, and
//! what is accepted is what was meant"; the walker also has bounds on memory and work (its
//! `Limits`). Case counts are small and fixed so `cargo test` stays fast; docs/testing.md lists
//! what each property covers.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use proptest::prelude::*;

use kinoite_zfs_operator::api::lock::InputLock;
use kinoite_zfs_operator::jobs::JobKind;
use kinoite_zfs_operator::jobs::result::{self, BuilderResult};
use kinoite_zfs_operator::pipeline::cache::rpm_kernel;
use kinoite_zfs_operator::pipeline::layers::{Compression, LayerMerger, Limits};
use kinoite_zfs_operator::pipeline::{lock, records};
use kinoite_zfs_operator::registry::{CredentialSet, ImageConfig, ImageRef};

fn config(cases: u32) -> ProptestConfig {
    // No persistence files in the source tree; failures print the minimal case instead.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A merger keeping every path (the most work per entry).
fn merger(limits: Limits) -> LayerMerger {
    LayerMerger::with_limits(Arc::new(|_: &str| true), limits)
}

fn walk(compression: Compression, bytes: &[u8]) -> Result<usize, String> {
    let mut m = merger(Limits::default());
    m.apply_layer(compression, bytes)?;
    Ok(m.finish(0).entries().count())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// One tar entry of a generated layer.
#[derive(Debug, Clone)]
enum Item {
    File(String),
    Dir(String),
    Symlink(String, String),
    Whiteout(String),
    Opaque(String),
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("usr".to_string()), "[a-z0-9_-][a-z0-9._-]{0,11}"]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..6).prop_map(|parts| parts.join("/"))
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => path().prop_map(Item::File),
        2 => path().prop_map(Item::Dir),
        1 => (path(), "[a-z][a-z0-9/_-]{0,39}").prop_map(|(p, t)| Item::Symlink(p, t)),
        1 => path().prop_map(Item::Whiteout),
        1 => prop::collection::vec(component(), 0..3).prop_map(|p| Item::Opaque(p.join("/"))),
    ]
}

/// A well-formed tar of `items` (GNU headers; long paths get GNU long-name entries).
fn tar_of(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(0);
        let (kind, path) = match item {
            Item::File(p) => (tar::EntryType::Regular, p.clone()),
            Item::Dir(p) => (tar::EntryType::Directory, p.clone()),
            Item::Symlink(p, _) => (tar::EntryType::Symlink, p.clone()),
            Item::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let wh = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
                (tar::EntryType::Regular, wh)
            }
            Item::Opaque(dir) => (
                tar::EntryType::Regular,
                if dir.is_empty() { ".wh..wh..opq".into() } else { format!("{dir}/.wh..wh..opq") },
            ),
        };
        header.set_entry_type(kind);
        if let Item::Symlink(_, target) = item {
            builder.append_link(&mut header, &path, target).unwrap();
        } else {
            builder.append_data(&mut header, &path, &[][..]).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

/// A raw 512-byte header block with these fields and a valid checksum.
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    header
}

fn end_of_archive() -> [u8; 1024] {
    [0; 1024]
}

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary bytes as a layer of each compression: an answer (mostly an error), no panic.
    #[test]
    fn the_walker_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let _ = walk(compression, &bytes);
        }
        // The same bytes behind a valid gzip stream reach the tar parser itself.
        let _ = walk(Compression::Gzip, &gzip(&bytes));
    }

    /// Any header block (random fields, valid checksum) followed by random data: no panic, no
    /// overflow on huge sizes (base-256 sizes near `u64::MAX`).
    #[test]
    fn any_single_header_is_handled(block in prop::collection::vec(any::<u8>(), 512), body in prop::collection::vec(any::<u8>(), 0..1500)) {
        let mut header = tar::Header::from_byte_slice(&block).clone();
        header.set_cksum();
        let mut layer = header.as_bytes().to_vec();
        layer.extend_from_slice(&body);
        layer.extend_from_slice(&end_of_archive());
        let _ = walk(Compression::None, &layer);
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// A well-formed layer is read; cut anywhere before its end-of-archive marker it is an
    /// error, never a partial view taken for the whole.
    #[test]
    fn well_formed_layers_are_read_and_truncated_ones_refused(items in prop::collection::vec(item(), 0..24), cut in any::<prop::sample::Index>()) {
        let tar = tar_of(&items);
        prop_assert!(walk(Compression::None, &tar).is_ok(), "{:?}", walk(Compression::None, &tar));
        prop_assert!(walk(Compression::Gzip, &gzip(&tar)).is_ok());
        // The builder ends with two zero blocks; the walker needs the first of them.
        let cut = cut.index(tar.len() - 512);
        prop_assert!(walk(Compression::None, &tar[..cut]).is_err(), "cut at {cut} of {}", tar.len());
        prop_assert!(walk(Compression::Gzip, &gzip(&tar[..cut])).is_err());
    }

    /// More entries than the limit: refused, whatever they are (memory per layer is bounded by
    /// the limit); up to the limit: read.
    #[test]
    fn the_entry_limit_holds(items in prop::collection::vec(item(), 1..80), limit in 1u64..80) {
        let tar = tar_of(&items);
        let mut m = merger(Limits { max_entries: limit, ..Limits::default() });
        let result = m.apply_tar(&tar[..]);
        if items.len() as u64 > limit {
            let expected = format!("more than {limit} entries");
            prop_assert!(result.unwrap_err().contains(&expected));
        } else {
            prop_assert!(result.is_ok(), "{result:?}");
        }
    }

    /// Deep paths (GNU long names): kept up to PATH_MAX bytes, refused beyond, in time
    /// proportional to the input.
    #[test]
    fn deep_paths_are_bounded(depth in 1usize..4000) {
        let path = vec!["d"; depth].join("/");
        let tar = tar_of(&[Item::File(path.clone())]);
        let started = Instant::now();
        let mut m = merger(Limits::default());
        let result = m.apply_tar(&tar[..]);
        if path.len() <= 4096 {
            prop_assert!(result.is_ok(), "{result:?}");
            let view = m.finish(0);
            prop_assert!(view.has_payload(&path));
            prop_assert_eq!(view.entries().count(), depth, "the file and each parent directory");
        } else {
            prop_assert!(result.unwrap_err().contains("PATH_MAX"));
        }
        prop_assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A long-name, long-link or PAX header that declares more than the limit is refused
    /// before it is read, whatever follows.
    #[test]
    fn huge_extension_headers_are_refused_unread(
        kind in prop_oneof![Just(tar::EntryType::GNULongName), Just(tar::EntryType::GNULongLink), Just(tar::EntryType::XHeader)],
        size in (1u64 << 20) + 1..u64::MAX / 2,
    ) {
        let mut layer = raw_header(b"././@LongLink", kind, size).as_bytes().to_vec();
        layer.extend_from_slice(&[b'a'; 4096]);
        let err = walk(Compression::None, &layer).unwrap_err();
        prop_assert!(err.contains("declares") || err.contains("size overflow"), "{err}");
    }
}

/// The tar crate on its own reads a long name whole into memory, whatever its size; a layer of
/// a few KiB (gzip) could make it hold gigabytes. The walker refuses it at the header.
#[test]
fn a_long_name_over_the_limit_is_refused_even_when_the_data_is_there() {
    let name = vec![b'x'; (1 << 20) + 1];
    let mut layer = raw_header(b"././@LongLink", tar::EntryType::GNULongName, name.len() as u64).as_bytes().to_vec();
    layer.extend_from_slice(&name);
    layer.resize(layer.len().div_ceil(512) * 512, 0);
    layer.extend_from_slice(raw_header(b"x", tar::EntryType::Regular, 0).as_bytes());
    layer.extend_from_slice(&end_of_archive());
    let err = walk(Compression::Gzip, &gzip(&layer)).unwrap_err();
    assert!(err.contains("declares 1048577 bytes, more than 1048576"), "{err}");
}

/// PAX paths and link targets are honoured (what the tar crate did), and a PAX size that
/// disagrees with the header (the walker reads raw, so it cannot follow it) is refused.
#[test]
fn pax_paths_are_used_and_pax_sizes_must_agree() {
    let mut builder = tar::Builder::new(Vec::new());
    let long = format!("usr/{}/zfs", "p".repeat(200));
    builder.append_pax_extensions([("path", long.as_bytes())]).unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("short").unwrap();
    header.set_size(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, &[][..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut m = merger(Limits::default());
    m.apply_tar(&tar[..]).unwrap();
    assert!(m.finish(0).has_payload(&long));

    let mut builder = tar::Builder::new(Vec::new());
    builder.append_pax_extensions([("size", b"7".as_slice())]).unwrap();
    builder.append(&header, &[][..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let err = merger(Limits::default()).apply_tar(&tar[..]).unwrap_err();
    assert!(err.contains("PAX header sets size 7"), "{err}");
}

fn digest_strategy() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}"))
}

fn kernel() -> impl Strategy<Value = String> {
    ("[1-9]\\.[0-9]{1,2}\\.[0-9]{1,2}", "[1-9][0-9]{0,2}", "fc[0-9]{2}", prop_oneof![Just("x86_64"), Just("aarch64")])
        .prop_map(|(v, r, d, a)| format!("{v}-{r}.{d}.{a}"))
}

proptest! {
    #![proptest_config(config(64))]

    /// Replay locks from text (file, ConfigMap key): no panic; what is accepted has a base
    /// image and no placeholder.
    #[test]
    fn locks_from_text(text in "\\PC{0,200}", base in "[ -~]{0,60}", other in "[ -~]{0,40}") {
        let _ = lock::parse(&text, "fuzz");
        let json = serde_json::json!({"base_image": base, "build_container": other, "zfs_minor_version": other, "akmods_upstream_ref": other}).to_string();
        if let Ok(l) = lock::parse(&json, "fuzz") {
            prop_assert!(!l.base_image.is_empty() && !l.base_image.contains("REPLACE_ME"));
        }
        // The inline lock of a ZfsImageBuild: the same validation.
        if let Ok(inline) = serde_json::from_str::<InputLock>(&json)
            && let Ok(l) = lock::from_api(&inline, "inline")
        {
            prop_assert!(!l.base_image.is_empty() && !l.base_image.contains("REPLACE_ME"));
        }
        let _ = serde_json::from_str::<InputLock>(&text);
    }

    /// Docker config files and `.dockerconfigjson`: no panic on any bytes; a well-formed entry
    /// is read back exactly; no error message ever contains the password.
    #[test]
    fn docker_configs(bytes in prop::collection::vec(any::<u8>(), 0..300), host in "[a-z0-9]{1,10}\\.[a-z]{2,5}(:[0-9]{2,5})?", user in "[a-zA-Z0-9_]{1,12}", password in "[!-~]{8,24}", junk in "[ -~]{0,12}") {
        let _ = CredentialSet::from_docker_config(&bytes);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let good = serde_json::json!({"auths": {host.clone(): {"auth": auth}}}).to_string();
        let set = CredentialSet::from_docker_config(good.as_bytes()).unwrap();
        let credential = set.get(&host).expect("the host's credential");
        prop_assert_eq!(format!("{credential:?}").contains(&password), false, "Debug never shows the password");
        for bad in [
            serde_json::json!({"auths": {host.clone(): {"auth": auth, "password": format!("{password}{junk}x")}}}),
            serde_json::json!({"auths": {format!("{host}/{junk} bad"): {"auth": auth}}}),
            serde_json::json!({"auths": {host.clone(): {"username": "", "password": password}}}),
            serde_json::json!({"auths": {host.clone(): {"auth": format!("{password}!")}}}),
        ] {
            if let Err(e) = CredentialSet::from_docker_config(bad.to_string().as_bytes()) {
                prop_assert!(!e.to_string().contains(&password), "{e}");
            }
        }
    }

    /// Image references: no panic; what parses prints back to the same reference; generated
    /// qualified references keep their parts.
    #[test]
    fn image_references(text in "\\PC{0,80}", host in "[a-z0-9]{1,8}\\.[a-z]{2,4}(:[0-9]{2,5})?", repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", digest in digest_strategy()) {
        if let Ok(r) = ImageRef::parse(&text) {
            prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        }
        let r = ImageRef::parse(&format!("{host}/{repo}:{tag}@{digest}")).unwrap();
        prop_assert_eq!((r.registry(), r.repository(), r.tag(), r.digest()), (host.as_str(), repo.as_str(), Some(tag.as_str()), Some(digest.as_str())));
        prop_assert!(ImageRef::parse(&format!("{repo}:{tag}")).is_err() || repo.contains('.'), "short names are refused");
    }

    /// The builder's termination message: no panic on any text; every valid result renders and
    /// parses back to itself; the step must match the Job.
    #[test]
    fn termination_messages(text in "\\PC{0,300}", digest in digest_strategy(), kernels in prop::collection::btree_set(kernel(), 1..5)) {
        for kind in [JobKind::Akmods, JobKind::Image] {
            let _ = result::parse(kind, &text);
        }
        let akmods = BuilderResult::Akmods { digest: digest.clone(), kernel_releases: kernels.into_iter().collect() };
        prop_assert_eq!(result::parse(JobKind::Akmods, &result::render(&akmods)).unwrap(), akmods.clone());
        prop_assert!(result::parse(JobKind::Image, &result::render(&akmods)).is_err());
        let image = BuilderResult::Image { digest };
        prop_assert_eq!(result::parse(JobKind::Image, &result::render(&image)).unwrap(), image);
    }

    /// kmod RPM file names (from akmods image layers): no panic; the kernel is exactly the one
    /// the name was made for, never a prefix of it.
    #[test]
    fn kmod_rpm_names(text in "\\PC{0,80}", kernel in kernel(), version in "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}", release in "[0-9]{1,2}\\.fc[0-9]{2}", arch in prop_oneof![Just("x86_64"), Just("noarch")]) {
        let _ = rpm_kernel(&text);
        let name = format!("kmod-zfs-{kernel}-{version}-{release}.{arch}.rpm");
        prop_assert_eq!(rpm_kernel(&name), Some(kernel.as_str()));
        let source = format!("kmod-zfs-{kernel}-{version}-{release}.src.rpm");
        prop_assert_eq!(rpm_kernel(&source), None);
    }

    /// Run records (ConfigMaps anyone may write) and image configs (registry blobs): no panic.
    #[test]
    fn records_and_image_configs(text in "\\PC{0,300}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = records::parse_provenance(&text);
        let _ = ImageConfig::parse(&bytes);
        let _ = ImageConfig::parse(text.as_bytes());
    }
}
