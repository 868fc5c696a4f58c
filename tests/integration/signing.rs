//! Signing checked the way a Kinoite host checks it: containers/image (tools/imagehost, the
//! library rpm-ostree, bootc, podman and skopeo use) copies the stable image under a
//! `policy.json` with a `sigstoreSigned` entry and a `registries.d` file with
//! `use-sigstore-attachments: true`, against the real registry fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

use kinoite_zfs_operator::pipeline::promote::{PromotionRequest, StepKind, execute_step, observe, plan};
use kinoite_zfs_operator::registry::ImageRef;
use kinoite_zfs_operator::signing::{self, PrivateKey};

use crate::promote::{AUDIT, client, full_args, promote_cli, push_candidate, skopeo_digest, snapshot};
use crate::support::image::{Format, Pusher};
use crate::support::init;
use crate::support::registry::Registry;

/// tools/imagehost built by `ci/imagehost` (ci/test runs it). Missing fails loudly.
pub(crate) fn imagehost() -> PathBuf {
    let path = std::env::var_os("KZO_IMAGEHOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/imagehost"));
    assert!(
        path.is_file(),
        "{} is missing: this test verifies signatures with containers/image; build it with `ci/imagehost` (ci/test does this)",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(imagehost()).args(args).output().expect("run imagehost");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A key pair from containers/image's own generator (`skopeo generate-sigstore-key`).
pub(crate) struct Keys {
    pub key: PathBuf,
    pub public: PathBuf,
    pub password: PathBuf,
}

pub(crate) fn generate(dir: &Path, name: &str, password: &str) -> Keys {
    let prefix = dir.join(name);
    let password_file = dir.join(format!("{name}.password"));
    std::fs::write(&password_file, password).unwrap();
    let (ok, err) = run(&[
        "generate-sigstore-key",
        "--output-prefix",
        prefix.to_str().unwrap(),
        "--passphrase-file",
        password_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    Keys { key: prefix.with_extension("key"), public: prefix.with_extension("pub"), password: password_file }
}

/// The host's trust files (R8.14): one `sigstoreSigned` entry for `repository`, everything else
/// rejected; attachments on for the repository.
fn host_policy(dir: &Path, repository: &str, public: &Path) -> (PathBuf, PathBuf) {
    let policy = dir.join(format!("policy-{}.json", public.file_stem().unwrap().to_string_lossy()));
    let trust = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {repository: [{
            "type": "sigstoreSigned",
            "keyPath": public,
            "signedIdentity": {"type": "matchRepository"},
        }]}},
    });
    std::fs::write(&policy, serde_json::to_vec_pretty(&trust).unwrap()).unwrap();
    (policy, registries_d(dir, repository))
}

fn registries_d(dir: &Path, repository: &str) -> PathBuf {
    let registries = dir.join("registries.d");
    std::fs::create_dir_all(&registries).unwrap();
    std::fs::write(
        registries.join("kinoite-zfs.yaml"),
        format!("docker:\n  {repository}:\n    use-sigstore-attachments: true\n"),
    )
    .unwrap();
    registries
}

/// `skopeo copy docker://REF dir:...` under the host policy: Ok when the host accepts the image.
fn host_pull(policy: &Path, registries: &Path, reference: &str) -> Result<(), String> {
    let out = tempfile::tempdir().unwrap();
    let (ok, err) = run(&[
        "copy",
        "--policy",
        policy.to_str().unwrap(),
        "--registries.d",
        registries.to_str().unwrap(),
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("dir:{}", out.path().display()),
    ]);
    if ok { Ok(()) } else { Err(err) }
}

fn with_key(mut args: Vec<String>, keys: &Keys) -> Vec<String> {
    args.extend([
        "--sign-key".into(),
        keys.key.display().to_string(),
        "--sign-password-file".into(),
        keys.password.display().to_string(),
    ]);
    args
}

#[tokio::test]
async fn hosts_accept_the_promoted_digest_refuse_other_keys_and_both_signatures_survive() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let ours = generate(dir.path(), "ours", "s3cret");
    let theirs = generate(dir.path(), "theirs", "");
    // The current cosign PEM label: the same envelope under ENCRYPTED SIGSTORE PRIVATE KEY.
    let pem = std::fs::read_to_string(&ours.key).unwrap();
    assert!(pem.contains("ENCRYPTED COSIGN PRIVATE KEY"), "containers/image writes the older label");
    std::fs::write(&ours.key, pem.replace("ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY")).unwrap();

    let c = push_candidate(&registry).await;
    let stable = format!("{host}/o/kinoite-zfs");
    let (code, out, stderr) = promote_cli(with_key(full_args(host, &c, "absent"), &ours)).await;
    assert_eq!(code, 0, "{stderr}\n{out:#}");
    let steps: Vec<&str> = out["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        ["copy-image", "copy-akmods", "sign", "audit-tag", "tag:latest", "tag:43", "akmods-tag", "confirm"]
    );
    let sig_tag = format!("{}.sig", c.image.digest.replace(':', "-"));
    assert_eq!(out["signature"]["reference"], format!("{stable}:{sig_tag}"));
    assert_eq!(out["signature"]["written"], true);

    // The host with our public key accepts the stable tag, the audit tag and the digest.
    let (policy, registries) = host_policy(dir.path(), &stable, &ours.public);
    for reference in [format!("{stable}:latest"), format!("{stable}:{AUDIT}"), format!("{stable}@{}", c.image.digest)] {
        host_pull(&policy, &registries, &reference).unwrap_or_else(|e| panic!("{reference} refused: {e}"));
    }
    // The same policy with another key refuses it.
    let (other_policy, _) = host_policy(dir.path(), &stable, &theirs.public);
    let err = host_pull(&other_policy, &registries, &format!("{stable}:latest")).unwrap_err();
    assert!(err.contains("Source image rejected"), "{err}");

    // containers/image signs the same digest with another key (skopeo copy
    // --sign-by-sigstore-private-key): its layer is appended next to ours.
    let accept = dir.path().join("accept.json");
    std::fs::write(&accept, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let (ok, err) = run(&[
        "copy",
        "--policy",
        accept.to_str().unwrap(),
        "--registries.d",
        registries.to_str().unwrap(),
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        "--sign-by-sigstore-private-key",
        theirs.key.to_str().unwrap(),
        "--sign-passphrase-file",
        theirs.password.to_str().unwrap(),
        &format!("docker://{stable}@{}", c.image.digest),
        &format!("docker://{stable}:countersigned"),
    ]);
    assert!(ok, "{err}");
    host_pull(&policy, &registries, &format!("{stable}:latest")).expect("ours still verifies");
    host_pull(&other_policy, &registries, &format!("{stable}:latest")).expect("theirs verifies too");

    // Promoting again keeps both and adds nothing.
    let (code, out, stderr) = promote_cli(with_key(full_args(host, &c, &c.image.digest), &ours)).await;
    assert_eq!(code, 0, "{stderr}\n{out:#}");
    assert_eq!(out["result"], "AlreadyPromoted");
    assert_eq!(out["signature"]["written"], false);
    let repo = ImageRef::parse(&stable).unwrap();
    let attachment = signing::read(&client(host), &repo, &c.image.digest).await.unwrap();
    assert_eq!(attachment.layers.len(), 2, "ours and theirs, once each");
    host_pull(&policy, &registries, &format!("{stable}:latest")).expect("still accepted");
}

#[tokio::test]
async fn a_wrong_password_or_missing_key_writes_nothing() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let keys = generate(dir.path(), "k", "right");
    let c = push_candidate(&registry).await;
    let before = snapshot(&registry).await;

    std::fs::write(&keys.password, "wrong").unwrap();
    let (code, out, stderr) = promote_cli(with_key(full_args(host, &c, "absent"), &keys)).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(out.is_null(), "no report: the registry was never asked: {out}");
    assert!(stderr.contains("wrong password") && stderr.contains("nothing was written"), "{stderr}");
    assert!(!stderr.contains("right"), "no secret in the message: {stderr}");

    let mut missing = full_args(host, &c, "absent");
    missing.extend(["--sign-key".into(), dir.path().join("nope.key").display().to_string()]);
    let (code, _, stderr) = promote_cli(missing).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read it"), "{stderr}");
    assert_eq!(snapshot(&registry).await, before, "nothing written");
}

#[tokio::test]
async fn stopped_after_signing_and_resumed_signs_once_and_moves_the_tags() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let keys = generate(dir.path(), "k", "");
    let key = PrivateKey::decrypt(&std::fs::read(&keys.key).unwrap(), b"").unwrap();
    let c = push_candidate(&registry).await;
    let stable = format!("{host}/o/kinoite-zfs");
    let request = PromotionRequest::parse(
        &format!("{host}/o/kinoite-zfs-candidate@{}", c.image.digest),
        &stable,
        &["latest".to_string()],
        Some(AUDIT),
        None,
        Some("absent"),
    )
    .unwrap()
    .with_signing(Some(key.clone()));
    let registry_client = client(host);

    // First attempt: everything up to and including `sign`, then the process "dies".
    let first = plan(&request, &observe(&registry_client, &request).await.unwrap()).unwrap();
    for step in first.steps.iter().filter(|s| !s.done) {
        execute_step(&registry_client, &first, &step.kind).await.unwrap();
        if step.kind == StepKind::Sign {
            break;
        }
    }
    assert_eq!(skopeo_digest(&format!("{stable}:latest")), None, "no tag before the resume");

    // Resumed: planning again finds the signature in the registry (done), so it is not made twice.
    let second = plan(&request, &observe(&registry_client, &request).await.unwrap()).unwrap();
    let done: Vec<String> = second.steps.iter().filter(|s| s.done).map(|s| s.kind.name()).collect();
    assert_eq!(done, ["copy-image", "sign"]);
    for step in second.steps.iter().filter(|s| !s.done) {
        let outcome = execute_step(&registry_client, &second, &step.kind).await.unwrap();
        assert!(step.kind != StepKind::Sign || !outcome.wrote);
    }
    assert_eq!(skopeo_digest(&format!("{stable}:latest")), Some(c.image.digest.clone()));
    let attachment =
        signing::read(&registry_client, &ImageRef::parse(&stable).unwrap(), &c.image.digest).await.unwrap();
    assert_eq!(attachment.layers.len(), 1, "one signature");
    let (policy, registries) = host_policy(dir.path(), &stable, &keys.public);
    host_pull(&policy, &registries, &format!("{stable}:latest")).unwrap();
}

#[tokio::test]
async fn an_unsigned_candidate_never_reaches_a_stable_tag() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let keys = generate(dir.path(), "k", "");
    let c = push_candidate(&registry).await;
    let stable = format!("{host}/o/kinoite-zfs");
    // The stable repository's .sig tag for the digest holds what hosts reject (a Docker schema 2
    // manifest): the signature cannot be appended there, so nothing may be tagged.
    let sig_tag = format!("{}.sig", c.image.digest.replace(':', "-"));
    let docker = crate::promote::akmods_image("x").format(Format::Docker);
    Pusher::new(&registry).push_image("o/kinoite-zfs", Some(&sig_tag), &docker).await;
    let (code, out, stderr) = promote_cli(with_key(full_args(host, &c, "absent"), &keys)).await;
    assert_eq!(code, 3, "refused: {out:#}");
    assert_eq!(out["reason"], "SignatureAttachmentInvalid", "{out:#}");
    assert_eq!(out["registryChanged"], false);
    for tag in ["latest", "43", AUDIT] {
        assert_eq!(skopeo_digest(&format!("{stable}:{tag}")), None, "{tag} must not exist: {stderr}");
    }
    assert_eq!(skopeo_digest(&format!("{host}/o/akmods:main-43")), None);
    let (policy, registries) = host_policy(dir.path(), &stable, &keys.public);
    assert!(host_pull(&policy, &registries, &format!("{stable}@{}", c.image.digest)).is_err());
}
