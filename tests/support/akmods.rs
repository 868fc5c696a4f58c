//! Fixtures for the akmods builder: a local git repository shaped like the upstream
//! ublue-os/akmods tree (Justfile with both patch patterns, images.yaml), a node with real
//! buildah (vfs storage and chroot isolation under a temp dir, the test registry marked
//! plain-HTTP) and the `just` stand-in (tests/support/akmods/just) first on `PATH`, and the
//! build, inputs and rendered akmods Job of a Main run.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::batch::v1::Job;
use kinoite_zfs_operator::api::ZfsImageBuild;
use kinoite_zfs_operator::api::build::ResolvedInputs;
use kinoite_zfs_operator::jobs::render::{JobInputs, akmods_job};
use kinoite_zfs_operator::pipeline::targets::run_targets;
use tempfile::TempDir;

use super::kubelet::Kubelet;
use super::registry::find_tool;

pub const K1: &str = "6.18.9-200.fc43.x86_64";
pub const K2: &str = "6.18.12-200.fc43.x86_64";
pub const ORG: &str = "danathar";
pub const CANDIDATE: &str = "kinoite-zfs-bluebuild-akmods-candidate";
pub const TOOLS_IMAGE: &str =
    "ghcr.io/kzo/operator@sha256:1111111111111111111111111111111111111111111111111111111111111111";
pub const BUILDER_DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// The upstream Justfile, reduced to the lines the builder patches (and a recipe around them).
pub const JUSTFILE: &str = "set unstable := true\n\nakmods_target := env('AKMODS_TARGET', 'common')\nakmods_name := 'akmods' + if akmods_target != 'common' { '-' + akmods_target } else { '' }\n\nbuild:\n    podman run --rm --volume {{ KCPATH }}:/tmp/kernel_cache:ro --env KERNEL_RELEASE builder\n\npush:\n    podman push {{ akmods_name }}\n";
pub const IMAGES_YAML: &str =
    "images:\n  \"43\":\n    main:\n      common:\n        org: ublue-os\n        name: akmods\n";

/// What an akmods remote looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Upstream,
    NoVolumePattern,
    NoNamePattern,
    NoImagesYaml,
}

/// A local git repository as the akmods remote.
pub struct Remote {
    _dir: TempDir,
    pub path: PathBuf,
    /// The commit of its one branch.
    pub commit: String,
    /// An annotated tag object pointing at that commit (a 40-hex that is not the commit).
    pub tag_object: String,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(find_tool("git", "git"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Remote {
    pub fn create(shape: Shape) -> Remote {
        let dir = tempfile::Builder::new().prefix("kzo-akmods-remote-").tempdir().unwrap();
        let path = dir.path().join("akmods");
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "--quiet", "-b", "main"]);
        let justfile = match shape {
            Shape::NoVolumePattern => JUSTFILE.replace("--volume {{ KCPATH }}", "-v {{ KCPATH }}"),
            Shape::NoNamePattern => JUSTFILE.replace("akmods_name := 'akmods' + if", "akmods_name := 'akmods-' + if"),
            _ => JUSTFILE.to_string(),
        };
        std::fs::write(path.join("Justfile"), justfile).unwrap();
        if shape != Shape::NoImagesYaml {
            std::fs::write(path.join("images.yaml"), IMAGES_YAML).unwrap();
        }
        git(&path, &["add", "."]);
        git(&path, &["commit", "--quiet", "-m", "akmods tooling"]);
        let commit = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["tag", "-a", "-m", "release", "v1"]);
        let tag_object = git(&path, &["rev-parse", "v1"]);
        assert_ne!(commit, tag_object);
        Remote { _dir: dir, path, commit, tag_object }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// The node: buildah storage, registries.conf, the `just` stand-in.
pub struct Node {
    dir: TempDir,
    pub env: Vec<(String, String)>,
    pub bin: PathBuf,
}

impl Node {
    /// A node whose tools treat `insecure_hosts` as plain-HTTP registries.
    pub fn new(insecure_hosts: &[&str]) -> Node {
        for (tool, package) in [("buildah", "buildah"), ("rpmbuild", "rpm"), ("git", "git"), ("skopeo", "skopeo")] {
            find_tool(tool, package);
        }
        let dir = tempfile::Builder::new().prefix("kzo-node-").tempdir().unwrap();
        let root = dir.path();
        let storage = root.join("storage.conf");
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("graph").display(),
                root.join("run").display()
            ),
        )
        .unwrap();
        let registries = root.join("registries.conf");
        let mut text = String::from("unqualified-search-registries = []\n");
        for host in insecure_hosts {
            text.push_str(&format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"));
        }
        std::fs::write(&registries, text).unwrap();
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/akmods/just");
        std::os::unix::fs::symlink(stub, bin.join("just")).unwrap();
        let env = vec![
            ("CONTAINERS_STORAGE_CONF".to_string(), storage.display().to_string()),
            ("CONTAINERS_REGISTRIES_CONF".to_string(), registries.display().to_string()),
            ("BUILDAH_ISOLATION".to_string(), "chroot".to_string()),
            ("STORAGE_DRIVER".to_string(), "vfs".to_string()),
            ("STUB_LOG".to_string(), root.join("just.log").display().to_string()),
        ];
        Node { dir, env, bin }
    }

    /// A kubelet on this node (the tools image holds `binary`) that holds the push Secret `push`
    /// with this docker config.
    pub fn kubelet(&self, binary: &Path, docker_config: &[u8]) -> Kubelet {
        let mut kubelet = Kubelet::new(TOOLS_IMAGE, binary);
        kubelet.node_env = self.env.clone();
        kubelet.path_prefix = vec![self.bin.clone()];
        kubelet.secrets.insert("push".into(), [(".dockerconfigjson".to_string(), docker_config.to_vec())].into());
        kubelet
    }

    /// Runs buildah against this node's storage.
    pub fn buildah(&self, args: &[&str]) -> String {
        let out = Command::new(find_tool("buildah", "buildah"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run buildah");
        assert!(out.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The `just` recipe runs, one line each: `<recipe> <kernel> <build root>`.
    pub fn just_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("just.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A Main build pushing to `registry_host`, with the akmods tooling at `akmods_url`.
pub fn build(registry_host: &str, akmods_url: &str, akmods_rev: &str) -> ZfsImageBuild {
    let yaml = format!(
        "apiVersion: kinoite-zfs.io/v1alpha1
kind: ZfsImageBuild
metadata: {{name: zib, namespace: builds, uid: uid-1, generation: 1}}
spec:
  mode: Main
  source: {{git: {{url: 'https://github.com/danathar/kinoite-zfs.git', revision: '02701fe0000000000000000000000000000000ab'}}}}
  akmods: {{repository: '{akmods_url}', revision: '{akmods_rev}'}}
  registry: {{host: '{registry_host}', namespace: {ORG}, credentialsSecretRef: {{name: push}}}}
"
    );
    serde_saphyr::from_str(&yaml).expect("test build YAML")
}

/// Resolved inputs with these kernels and akmods commit.
pub fn inputs(kernels: &[&str], akmods_ref: &str) -> ResolvedInputs {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    ResolvedInputs {
        use_input_lock: false,
        lock_file_path: String::new(),
        fedora_version: "43".into(),
        kernel_release: kernels.last().unwrap().to_string(),
        kernel_releases: kernels.iter().map(|k| k.to_string()).collect(),
        base_image_ref: "ghcr.io/ublue-os/kinoite-main:latest".into(),
        base_image_name: "ghcr.io/ublue-os/kinoite-main".into(),
        base_image_tag: "latest-20260420".into(),
        base_image_pinned: format!("ghcr.io/ublue-os/kinoite-main@{}", digest('a')),
        base_image_digest: digest('a'),
        build_container_ref: "ghcr.io/ublue-os/devcontainer:latest".into(),
        build_container_pinned: format!("ghcr.io/ublue-os/devcontainer@{BUILDER_DIGEST}"),
        build_container_digest: BUILDER_DIGEST.into(),
        zfs_minor_version: "2.4".into(),
        akmods_upstream_ref: akmods_ref.into(),
    }
}

/// The akmods Job of run `run`, rendered by the operator's renderer.
pub fn akmods_job_for(build: &ZfsImageBuild, inputs: &ResolvedInputs, run: i64) -> Job {
    let targets = run_targets(&build.spec, run, &inputs.fedora_version);
    akmods_job(&JobInputs {
        build,
        run,
        inputs,
        inputs_hash: "sha256:hash",
        targets: &targets,
        tools_image: TOOLS_IMAGE,
    })
    .expect("render the akmods Job")
}
