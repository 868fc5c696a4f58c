//! The registry layer against the real registry fixture (docker-registry), with skopeo as the
//! independent check and a fault-injecting proxy for rate limits, 5xx and dropped connections.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kinoite_zfs_operator::cli::common::RegistryArgs;
use kinoite_zfs_operator::registry::{
    AnswerClass, BlobTransfer, ClientPool, ClientSettings, Credential, CredentialSet, Error, ImageRef, OciRegistry,
    RegistryClient, RetryPolicy, image_config, media_types, resolve_image,
};

use crate::support::faults::{Fault, FaultProxy};
use crate::support::image::{Entry, Format, ImageSpec, Layer, Platform, Pusher, digest_of};
use crate::support::registry::Registry;
use crate::support::{init, skopeo};

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A client for these plain-HTTP hosts with these credentials (host, user, password).
fn client(hosts: &[&str], credentials: &[(&str, &str, &str)]) -> OciRegistry {
    let mut set = CredentialSet::anonymous();
    for (host, user, password) in credentials {
        set.insert(host, Credential::new(*user, *password));
    }
    OciRegistry::new(ClientSettings {
        credentials: set,
        insecure_registries: hosts.iter().map(|h| h.to_string()).collect(),
        retry: fast_retry(),
        ..ClientSettings::default()
    })
    .unwrap()
}

fn image_ref(host: &str, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/{rest}")).unwrap()
}

fn small_image(marker: &str) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::gzip(vec![Entry::file("etc/marker", marker.as_bytes().to_vec())]),
        Layer::gzip(vec![Entry::file("usr/bin/tool", b"tool".to_vec())]),
    ])
    .label("org.opencontainers.image.version", "43.20260227.1")
}

fn class(result: Result<impl std::fmt::Debug, Error>) -> AnswerClass {
    let err = result.expect_err("expected a classified error");
    err.class().unwrap_or_else(|| panic!("not a registry answer: {err}"))
}

#[tokio::test]
async fn digests_by_head_for_image_and_index() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let image = pusher.push_image("test/image", Some("v1"), &small_image("a")).await;
    let docker = pusher.push_image("test/docker", Some("v1"), &small_image("b").format(Format::Docker)).await;
    let index = pusher
        .push_index("test/index", Some("v1"), &[small_image("c").platform(Platform::linux("arm64")), small_image("d")])
        .await;
    // The proxy (no faults queued) shows which requests the client makes.
    let proxy = FaultProxy::start(registry.host()).await;
    let host = proxy.host();
    let client = client(&[host], &[]);

    for (repo, expected) in
        [("test/image", &image.digest), ("test/docker", &docker.digest), ("test/index", &index.digest)]
    {
        proxy.reset_seen();
        let digest = client.resolve_digest(&image_ref(host, &format!("{repo}:v1"))).await.unwrap();
        assert_eq!(&digest, expected, "{repo}");
        let seen: Vec<(String, String)> = proxy.seen().into_iter().map(|s| (s.method, s.path)).collect();
        assert_eq!(seen, [("HEAD".to_string(), format!("/v2/{repo}/manifests/v1"))], "one HEAD, no body download");
    }

    let raw = client.manifest(&image_ref(host, "test/index:v1")).await.unwrap();
    assert_eq!((raw.digest.as_str(), raw.media_type.as_str()), (index.digest.as_str(), media_types::OCI_INDEX));
    assert_eq!(&raw.bytes[..], &index.manifest[..], "the raw bytes, unchanged");
    let raw = client.manifest(&image_ref(host, "test/docker:v1")).await.unwrap();
    assert_eq!(raw.media_type, media_types::DOCKER_MANIFEST);
    // By digest, the answer is checked against the digest asked for.
    let by_digest = image_ref(host, &format!("test/image@{}", image.digest));
    assert_eq!(client.resolve_digest(&by_digest).await.unwrap(), image.digest);
    assert_eq!(client.manifest(&by_digest).await.unwrap().bytes, Bytes::from(image.manifest.clone()));
    assert_eq!(client.counters().get(AnswerClass::Present), client.counters().total());
}

#[tokio::test]
async fn missing_tags_repositories_and_blobs_are_absent() {
    init();
    let registry = Registry::start().await;
    let pushed = Pusher::new(&registry).push_image("test/present", Some("v1"), &small_image("a")).await;
    let host = registry.host();
    let client = client(&[host], &[]);

    let missing_tag = client.resolve_digest(&image_ref(host, "test/present:nope")).await.unwrap_err();
    assert!(missing_tag.is_absent(), "{missing_tag}");
    assert!(missing_tag.to_string().contains("not found"), "{missing_tag}");
    let missing_repo = client.resolve_digest(&image_ref(host, "test/never-pushed:v1")).await.unwrap_err();
    assert!(missing_repo.is_absent(), "{missing_repo}");
    assert!(client.manifest(&image_ref(host, "test/never-pushed:v1")).await.unwrap_err().is_absent());
    let unknown = digest_of(b"never pushed");
    let repo = image_ref(host, "test/present");
    assert!(!client.blob_exists(&repo, &unknown).await.unwrap());
    assert!(client.blob_exists(&repo, &pushed.layer_digests[0]).await.unwrap());
    assert!(client.read_blob(&repo, &unknown, 1024).await.unwrap_err().is_absent());
    assert!(client.blob_stream(&repo, &unknown).await.err().unwrap().is_absent());
    assert_eq!(client.counters().get(AnswerClass::Absent), 6);
}

#[tokio::test]
async fn auth_errors_are_unauthorized_never_absent() {
    init();
    let registry = Registry::start_with_auth("builder", "s3cret-pw-7f2a").await;
    let image = Pusher::new(&registry).push_image("private/akmods", Some("main-43"), &small_image("a")).await;
    let host = registry.host();
    let present = image_ref(host, "private/akmods:main-43");
    let missing = image_ref(host, "private/akmods:main-99");

    let anonymous = client(&[host], &[]);
    let wrong = client(&[host], &[(host, "builder", "wrong")]);
    for c in [&anonymous, &wrong] {
        assert_eq!(class(c.resolve_digest(&present).await), AnswerClass::Unauthorized);
        assert_eq!(
            class(c.resolve_digest(&missing).await),
            AnswerClass::Unauthorized,
            "a missing tag behind auth is not 'absent'"
        );
        assert_eq!(class(c.manifest(&present).await), AnswerClass::Unauthorized);
        assert_eq!(class(c.blob_exists(&present, &image.layer_digests[0]).await), AnswerClass::Unauthorized);
        let err = c.resolve_digest(&present).await.unwrap_err();
        assert!(err.to_string().contains(&format!("check the credentials for {host}")), "{err}");
        assert_eq!(c.counters().get(AnswerClass::Absent), 0);
    }

    // The right credentials, read from a docker config file as the CLI does.
    let args =
        RegistryArgs { registry_config: Some(registry.docker_config()), insecure_registries: vec![host.to_string()] };
    let right = OciRegistry::from_args(&args).unwrap();
    assert_eq!(right.resolve_digest(&present).await.unwrap(), image.digest);
    assert!(right.resolve_digest(&missing).await.unwrap_err().is_absent(), "with access, a missing tag is absent");
    assert!(right.blob_exists(&present, &image.layer_digests[0]).await.unwrap());
    let resolved = resolve_image(&right, &present).await.unwrap();
    assert_eq!(
        image_config(&right, &resolved).await.unwrap().labels["org.opencontainers.image.version"],
        "43.20260227.1"
    );

    // The pool gives the same answers for a dockerconfigjson Secret's bytes.
    let pool =
        ClientPool::from_args(&RegistryArgs { registry_config: None, insecure_registries: vec![host.to_string()] })
            .unwrap();
    let from_secret = pool.client_for_docker_config(&std::fs::read(registry.docker_config()).unwrap()).unwrap();
    assert_eq!(from_secret.resolve_digest(&present).await.unwrap(), image.digest);
    // A pooled `Arc` client is a `RegistryClient` itself.
    assert_eq!(resolve_image(&from_secret, &present).await.unwrap().digest, image.digest);
    assert_eq!(class(pool.anonymous().unwrap().resolve_digest(&present).await), AnswerClass::Unauthorized);
    assert_eq!(pool.counters().get(AnswerClass::Unauthorized), 1);
}

/// Collects everything written to the tracing subscriber installed for one test thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn credentials_never_reach_logs_debug_output_or_errors() {
    init();
    let (user, password) = ("ci-robot-4d1e", "pw-9c8b7a6f5e4d");
    let registry = Registry::start_with_auth(user, password).await;
    let host = registry.host().to_string();
    Pusher::new(&registry).push_image("private/x", Some("v1"), &small_image("a")).await;
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    // tracing-core caches a callsite's interest from the registering thread's default while
    // exactly one dispatch exists (tokio-rs/tracing#3611): other test threads would disable our
    // callsites. A second live dispatch makes it consult every registered dispatch.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let wrong_password = format!("{password}-wrong");
    let right = client(&[&host], &[(&host, user, password)]);
    let wrong = client(&[&host], &[(&host, user, &wrong_password)]);
    let mut shown = vec![format!("{right:?}"), format!("{:?}", right.settings())];
    right.resolve_digest(&image_ref(&host, "private/x:v1")).await.unwrap();
    for result in [
        right.resolve_digest(&image_ref(&host, "private/x:missing")).await,
        wrong.resolve_digest(&image_ref(&host, "private/x:v1")).await,
        wrong.manifest(&image_ref(&host, "private/x:v1")).await.map(|m| m.digest),
    ] {
        let err = result.unwrap_err();
        shown.push(format!("{err} {err:?}"));
    }
    // A config naming a helper or token fails without echoing the secret around it.
    let config = format!(r#"{{"auths":{{"{host}":{{"identitytoken":"{password}"}}}}}}"#);
    let err = CredentialSet::from_docker_config(config.as_bytes()).unwrap_err();
    shown.push(format!("{err} {err:?}"));
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("registry answer"), "the registry layer logged at all: {logged}");
    shown.push(logged);

    use base64::Engine as _;
    let encoded = [
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{wrong_password}")),
    ];
    for text in shown {
        for secret in [password, &wrong_password, user, &encoded[0], &encoded[1]] {
            assert!(!text.contains(secret), "{secret:?} leaked into: {text}");
        }
    }
}

#[tokio::test]
async fn cross_repository_mount_on_the_same_registry() {
    init();
    let registry = Registry::start().await;
    let image = Pusher::new(&registry).push_image("team/source", Some("v1"), &small_image("m")).await;
    let host = registry.host();
    let client = client(&[host], &[]);
    let from = image_ref(host, "team/source");
    let to = image_ref(host, "team/target");
    let layer = &image.layer_digests[0];

    assert!(!client.blob_exists(&to, layer).await.unwrap());
    assert_eq!(client.copy_blob(&from, &to, layer).await.unwrap(), BlobTransfer::Mounted);
    assert_eq!(client.copy_blob(&from, &to, layer).await.unwrap(), BlobTransfer::AlreadyPresent);
    // Checked independently: the registry serves the blob from the target repository.
    let served = reqwest::get(format!("{}/v2/team/target/blobs/{layer}", registry.base_url())).await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(digest_of(&served.bytes().await.unwrap()), *layer);
}

#[tokio::test]
async fn copy_between_registries_streams_and_skopeo_reads_the_result() {
    init();
    let (source_registry, target_registry) =
        (Registry::start().await, Registry::start_with_auth("pusher", "pw-t").await);
    let spec = ImageSpec::new(vec![
        Layer::gzip(vec![Entry::file("big", crate::support::image::noise(3 * 1024 * 1024, 7))]),
        Layer::gzip(vec![Entry::file("small", b"x".to_vec())]),
    ]);
    let image = Pusher::new(&source_registry).push_image("src/app", Some("v1"), &spec).await;
    let (src_host, dst_host) = (source_registry.host(), target_registry.host());
    let client = client(&[src_host, dst_host], &[(dst_host, "pusher", "pw-t")]);
    let from = image_ref(src_host, "src/app");
    let to = image_ref(dst_host, "dst/app");

    let mut blobs = image.layer_digests.clone();
    blobs.push(image.config_digest.clone());
    for digest in &blobs {
        let transfer = client.copy_blob(&from, &to, digest).await.unwrap();
        let size = reqwest::get(format!("{}/v2/src/app/blobs/{digest}", source_registry.base_url()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len() as u64;
        assert_eq!(transfer, BlobTransfer::Copied { bytes: size }, "{digest}: no mount across registries");
    }
    assert_eq!(client.copy_blob(&from, &to, &blobs[0]).await.unwrap(), BlobTransfer::AlreadyPresent);

    // Manifest push by tag, then by digest; skopeo reads back the exact bytes and copies the
    // image (verifying every blob digest on the way).
    let tagged = image_ref(dst_host, "dst/app:copied");
    let digest =
        client.put_manifest(&tagged, media_types::OCI_MANIFEST, Bytes::from(image.manifest.clone())).await.unwrap();
    assert_eq!(digest, image.digest);
    let by_digest = image_ref(dst_host, &format!("dst/other@{}", image.digest));
    for digest in &blobs {
        client.copy_blob(&to, &by_digest, digest).await.unwrap();
    }
    assert_eq!(
        client.put_manifest(&by_digest, media_types::OCI_MANIFEST, Bytes::from(image.manifest.clone())).await.unwrap(),
        image.digest
    );
    let creds = ["--creds", "pusher:pw-t", "--tls-verify=false"];
    for reference in
        [format!("docker://{dst_host}/dst/app:copied"), format!("docker://{dst_host}/dst/other@{}", image.digest)]
    {
        let raw = skopeo(&[&["inspect", "--raw"][..], &creds[..], &[&reference]].concat());
        assert_eq!(raw.as_bytes(), &image.manifest[..], "{reference}");
    }
    let out = tempfile::tempdir().unwrap();
    let dir = format!("dir:{}", out.path().display());
    skopeo(&[
        "copy",
        "--src-creds",
        "pusher:pw-t",
        "--src-tls-verify=false",
        &format!("docker://{dst_host}/dst/app:copied"),
        &dir,
    ]);

    // A digest target must match the bytes.
    let wrong = image_ref(dst_host, &format!("dst/app@{}", digest_of(b"other")));
    let err =
        client.put_manifest(&wrong, media_types::OCI_MANIFEST, Bytes::from(image.manifest.clone())).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn blob_streams_are_verified_against_their_digest() {
    init();
    let registry = Registry::start().await;
    let spec =
        ImageSpec::new(vec![Layer::gzip(vec![Entry::file("data", crate::support::image::noise(2 * 1024 * 1024, 3))])]);
    let image = Pusher::new(&registry).push_image("test/blob", Some("v1"), &spec).await;
    let host = registry.host();
    let client = client(&[host], &[]);
    let repo = image_ref(host, "test/blob");
    let layer = &image.layer_digests[0];

    let mut stream = client.blob_stream(&repo, layer).await.unwrap();
    let (mut bytes, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_eq!(digest_of(&bytes), *layer);
    assert_eq!(bytes.len() as u64, image.layer_sizes[0]);
    assert!(chunks > 1, "delivered in chunks, not buffered whole");

    // Corrupt the stored blob behind the registry's back: the stream must end in an error.
    let hex = layer.trim_start_matches("sha256:");
    let path = registry.dir().join(format!("storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut stored = std::fs::read(&path).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 0xff;
    std::fs::write(&path, stored).unwrap();
    let results: Vec<_> = client.blob_stream(&repo, layer).await.unwrap().collect().await;
    let last = results.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(last, Error::Invalid { .. }) && last.to_string().contains("expected sha256:"), "{last}");
    assert!(results[..results.len() - 1].iter().all(Result::is_ok));
    let err = client.read_blob(&repo, layer, 16 * 1024 * 1024).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = client.read_blob(&repo, &image.config_digest, 10).await.unwrap_err();
    assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
}

#[tokio::test]
async fn index_resolves_to_linux_amd64_with_both_digests() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let host = registry.host();
    let client = client(&[host], &[]);
    for (repo, format) in [("test/oci-index", Format::Oci), ("test/docker-list", Format::Docker)] {
        let index = pusher
            .push_index(
                repo,
                Some("latest"),
                &[
                    small_image("arm").platform(Platform::linux("arm64")).format(format),
                    small_image("amd").label("arch", "amd64").format(format),
                ],
            )
            .await;
        let resolved = resolve_image(&client, &image_ref(host, &format!("{repo}:latest"))).await.unwrap();
        let amd64 = &index.children[1];
        assert_eq!(resolved.index_digest.as_deref(), Some(index.digest.as_str()), "{repo}");
        assert_eq!(resolved.digest, amd64.digest);
        assert_eq!(resolved.top_digest(), index.digest);
        assert_eq!(resolved.pinned(), format!("{host}/{repo}@{}", index.digest));
        assert_eq!(resolved.platform_pinned(), format!("{host}/{repo}@{}", amd64.digest));
        let layers: Vec<&str> = resolved.layers().iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(layers, amd64.layer_digests);
        assert_eq!(image_config(&client, &resolved).await.unwrap().labels["arch"], "amd64");
        // skopeo picks the same image for linux/amd64.
        let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--override-os=linux",
            "--override-arch=amd64",
            &format!("docker://{host}/{repo}:latest"),
        ]))
        .unwrap();
        let skopeo_layers: Vec<&str> =
            inspect["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(skopeo_layers, layers);
    }

    let plain = pusher.push_image("test/plain", Some("v1"), &small_image("p")).await;
    let resolved = resolve_image(&client, &image_ref(host, "test/plain:v1")).await.unwrap();
    assert_eq!((resolved.index_digest, resolved.digest), (None, plain.digest));

    pusher.push_index("test/arm-only", Some("v1"), &[small_image("a").platform(Platform::linux("arm64"))]).await;
    let err = resolve_image(&client, &image_ref(host, "test/arm-only:v1")).await.unwrap_err();
    assert!(err.to_string().contains("has no linux/amd64 image (platforms: linux/arm64)"), "{err}");
}

// ---- transient answers through the fault proxy ------------------------------------------------

async fn proxied() -> (Registry, FaultProxy, String) {
    init();
    let registry = Registry::start().await;
    let image = Pusher::new(&registry).push_image("test/faults", Some("v1"), &small_image("f")).await;
    let proxy = FaultProxy::start(registry.host()).await;
    (registry, proxy, image.digest)
}

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after() {
    let (_registry, proxy, digest) = proxied().await;
    let client = client(&[proxy.host()], &[]);
    let reference = image_ref(proxy.host(), "test/faults:v1");
    proxy.inject(Fault::RateLimit { retry_after: Some("1".into()) }, 2);
    let started = Instant::now();
    assert_eq!(client.resolve_digest(&reference).await.unwrap(), digest);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 3, "two rate-limited attempts, then success");
    for pair in seen.windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= Duration::from_secs(1), "Retry-After: 1 honoured, waited {waited:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.counters().get(AnswerClass::RateLimited), 2);
    assert_eq!(client.counters().get(AnswerClass::Present), 1);

    // A Retry-After longer than the policy allows is not waited out: the caller gets the delay.
    proxy.reset_seen();
    proxy.inject(Fault::RateLimit { retry_after: Some("120".into()) }, 1);
    let started = Instant::now();
    let err = client.resolve_digest(&reference).await.unwrap_err();
    assert_eq!(err.class(), Some(AnswerClass::RateLimited));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(err.is_transient() && !err.is_absent());
    assert_eq!(proxy.seen().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Rate limited on every attempt: bounded, then reported as rate limited.
    proxy.reset_seen();
    proxy.inject(Fault::RateLimit { retry_after: None }, 10);
    let err = client.resolve_digest(&reference).await.unwrap_err();
    assert_eq!(err.class(), Some(AnswerClass::RateLimited));
    assert_eq!(proxy.seen().len(), 4, "max_attempts");
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried_with_bounded_backoff() {
    let (_registry, proxy, digest) = proxied().await;
    let client = client(&[proxy.host()], &[]);
    let reference = image_ref(proxy.host(), "test/faults:v1");

    proxy.inject(Fault::Unavailable, 2);
    assert_eq!(client.resolve_digest(&reference).await.unwrap(), digest);
    assert_eq!(proxy.seen().len(), 3);

    proxy.reset_seen();
    proxy.inject(Fault::Drop, 2);
    let manifest = client.manifest(&reference).await.unwrap();
    assert_eq!(manifest.digest, digest);
    assert_eq!(proxy.seen().len(), 3, "two dropped connections, then success");

    proxy.reset_seen();
    proxy.inject(Fault::Unavailable, 100);
    let err = client.resolve_digest(&reference).await.unwrap_err();
    assert_eq!(err.class(), Some(AnswerClass::Unreachable));
    assert!(!err.is_absent());
    let seen = proxy.seen();
    assert_eq!(seen.len(), 4, "attempts are bounded");
    // Backoff grows (jittered over [half, full] of 20, 40, 80 ms) and stays under the cap.
    let gaps: Vec<Duration> = seen.windows(2).map(|p| p[1].at - p[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(10) && gaps[2] >= Duration::from_millis(40), "{gaps:?}");
    assert!(gaps.iter().all(|g| *g < Duration::from_millis(1500)), "{gaps:?}");
    proxy.clear();

    // Blob reads retry too.
    proxy.inject(Fault::Unavailable, 1);
    let repo = image_ref(proxy.host(), "test/faults");
    let config = resolve_image(&client, &reference).await.unwrap().manifest.config.digest;
    proxy.inject(Fault::Drop, 1);
    assert!(client.read_blob(&repo, &config, 1 << 20).await.is_ok());
    assert_eq!(client.counters().get(AnswerClass::Absent), 0);
}

#[tokio::test]
async fn an_unreachable_registry_is_reported_as_unreachable() {
    init();
    let mut registry = Registry::start().await;
    Pusher::new(&registry).push_image("test/gone", Some("v1"), &small_image("g")).await;
    let host = registry.host().to_string();
    let client = client(&[&host], &[]);
    registry.stop();
    let started = Instant::now();
    let err = client.resolve_digest(&image_ref(&host, "test/gone:v1")).await.unwrap_err();
    assert_eq!(err.class(), Some(AnswerClass::Unreachable), "{err}");
    assert!(!err.is_absent());
    assert!(err.to_string().contains(&format!("registry {host} unreachable")), "{err}");
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.counters().get(AnswerClass::Unreachable), 4);

    // HTTPS is used for hosts not listed as insecure: a plain-HTTP registry then fails to
    // answer rather than being spoken to in clear text.
    registry.restart().await;
    let strict = OciRegistry::new(ClientSettings { retry: RetryPolicy::none(), ..ClientSettings::default() }).unwrap();
    let err = strict.resolve_digest(&image_ref(&host, "test/gone:v1")).await.unwrap_err();
    assert_eq!(err.class(), Some(AnswerClass::Unreachable), "{err}");
}

// ---- docker token authentication (ghcr.io, Docker Hub, quay.io style) -------------------------

#[tokio::test]
async fn bearer_tokens_are_fetched_per_scope_and_cached() {
    init();
    let registry = Registry::start().await;
    let image = Pusher::new(&registry).push_image("org/source", Some("v1"), &small_image("t")).await;
    let proxy = FaultProxy::start_with_token_auth(registry.host(), "bot", "tok-pw-31c5").await;
    let host = proxy.host();
    let source = image_ref(host, "org/source:v1");

    for (name, c) in [("anonymous", client(&[host], &[])), ("wrong", client(&[host], &[(host, "bot", "nope")]))] {
        let err = c.resolve_digest(&source).await.unwrap_err();
        assert_eq!(err.class(), Some(AnswerClass::Unauthorized), "{name}: {err}");
        assert!(err.to_string().contains("token for resolve"), "{name}: the token service refused: {err}");
    }

    let client = client(&[host], &[(host, "bot", "tok-pw-31c5")]);
    proxy.reset_seen();
    assert_eq!(client.resolve_digest(&source).await.unwrap(), image.digest);
    let resolved = resolve_image(&client, &source).await.unwrap();
    let mut stream = client.blob_stream(&source, &resolved.layers()[0].digest).await.unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    let token_requests: Vec<String> =
        proxy.seen().into_iter().filter(|s| s.path == "/token").map(|s| s.query).collect();
    assert_eq!(token_requests.len(), 1, "one token for the pull scope, then cached: {token_requests:?}");
    assert!(token_requests[0].contains("scope=repository%3Aorg%2Fsource%3Apull"), "{token_requests:?}");
    assert!(token_requests[0].contains("service=kzo-proxy"), "{token_requests:?}");

    // A mount asks for push on the target and pull on the source in one token.
    proxy.reset_seen();
    let target = image_ref(host, "org/target:v1");
    for layer in resolved.layers() {
        assert_eq!(client.copy_blob(&source, &target, &layer.digest).await.unwrap(), BlobTransfer::Mounted);
    }
    client.copy_blob(&source, &target, &resolved.manifest.config.digest).await.unwrap();
    let digest = client
        .put_manifest(&target, &resolved.media_type, client.manifest(&source).await.unwrap().bytes)
        .await
        .unwrap();
    assert_eq!(digest, image.digest);
    let scopes: Vec<String> = proxy.seen().into_iter().filter(|s| s.path == "/token").map(|s| s.query).collect();
    assert!(
        scopes
            .iter()
            .any(|q| q.contains("repository%3Aorg%2Ftarget%3Apull%2Cpush")
                && q.contains("repository%3Aorg%2Fsource%3Apull")),
        "{scopes:?}"
    );
    let raw =
        skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/org/target:v1", registry.host())]);
    assert_eq!(raw.as_bytes(), &image.manifest[..]);
    assert_eq!(client.counters().get(AnswerClass::Unauthorized), 0, "handshake 401s are not counted");
}
