//! Where a run reads and writes in the registry, per mode (R7.4, R15, R16, with the fixes for
//! H1 and H4): which akmods cache it checks, where a rebuilt cache goes, which image tags it
//! pushes. Builds never write a stable tag; only a Promotion does.

use crate::api::build::{BuildMode, ZfsImageBuildSpec};

/// Tag prefix of the shared akmods cache (`main-<fedora>`), as in the reference.
pub const CACHE_TAG_PREFIX: &str = "main";

/// Longest branch prefix before the `-<fedora>` suffix (R15.1).
const MAX_BRANCH_PREFIX: usize = 120;

/// The branch-safe tag prefix of R15.1: lowercase, runs of characters outside `[a-z0-9._-]`
/// become `-`, leading/trailing `-` stripped, empty becomes `branch`; `br-<safe>` truncated to
/// 120 characters, trailing `-` stripped again.
pub fn branch_prefix(branch: &str) -> String {
    let lower = branch.to_lowercase();
    let mut safe = String::with_capacity(lower.len());
    let mut in_run = false;
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
            safe.push(c);
            in_run = false;
        } else if !in_run {
            safe.push('-');
            in_run = true;
        }
    }
    let safe = safe.trim_matches('-');
    let safe = if safe.is_empty() { "branch" } else { safe };
    let prefixed: String = format!("br-{safe}").chars().take(MAX_BRANCH_PREFIX).collect();
    let trimmed = prefixed.trim_end_matches('-');
    if trimmed.is_empty() || trimmed == "br" { "br-branch".to_string() } else { trimmed.to_string() }
}

/// Registry locations of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTargets {
    /// Whether the run writes anything to the registry (false in `Validate` mode).
    pub pushes: bool,
    /// The akmods cache image the cache decision checks (by tag): the shared cache that `Main`
    /// runs maintain in the candidate akmods repository, `<candidateAkmods>:main-<fedora>`.
    pub cache_source: String,
    /// Repository a rebuilt cache is pushed to (`<host>/<ns>/<candidateAkmods>`); never the stable
    /// akmods repository (fixes H1).
    pub akmods_repository: String,
    /// Tags the akmods Job pushes: the shared `main-<fedora>` and the run-unique `<run>-<fedora>`
    /// (so the digest a run used keeps a tag after later rebuilds). Empty outside `Main`.
    pub akmods_tags: Vec<String>,
    /// `Branch` mode's akmods alias `<candidateAkmods>:br-<branch>-<fedora>` (R15.3).
    pub akmods_alias: Option<String>,
    /// Repository of the OS image the run builds: the candidate repository in `Main`, the image
    /// repository in `Branch` (only `br-*` tags) and `Validate` (nothing pushed).
    pub image_repository: String,
    /// The repository path below `<host>/<namespace>` (BlueBuild's `name:`).
    pub image_name: String,
    /// Tags the image Job pushes: `<run>-<fedora>` in `Main` (run-unique, fixes H4),
    /// `br-<branch>-<fedora>` in `Branch`, none in `Validate`.
    pub image_tags: Vec<String>,
}

impl RunTargets {
    /// Full references the akmods Job pushes.
    pub fn akmods_push_refs(&self) -> Vec<String> {
        self.akmods_tags.iter().map(|t| format!("{}:{t}", self.akmods_repository)).collect()
    }

    /// Full references the image Job pushes.
    pub fn image_push_refs(&self) -> Vec<String> {
        self.image_tags.iter().map(|t| format!("{}:{t}", self.image_repository)).collect()
    }

    /// Every tag reference the run would write, for `plan` output and docs.
    pub fn all_written_refs(&self, rebuilds_akmods: bool) -> Vec<String> {
        let mut refs = Vec::new();
        if rebuilds_akmods {
            refs.extend(self.akmods_push_refs());
        }
        refs.extend(self.akmods_alias.iter().cloned());
        refs.extend(self.image_push_refs());
        refs
    }
}

/// `<host>/<namespace>/<repository>`.
pub fn repository_ref(spec: &ZfsImageBuildSpec, repository: &str) -> String {
    format!("{}/{}/{}", spec.registry.host, spec.registry.namespace, repository)
}

/// The registry locations of run `run` for Fedora `fedora`.
pub fn run_targets(spec: &ZfsImageBuildSpec, run: i64, fedora: &str) -> RunTargets {
    let akmods_repository = repository_ref(spec, &spec.registry.candidate_akmods);
    let cache_source = format!("{akmods_repository}:{CACHE_TAG_PREFIX}-{fedora}");
    let run_tag = format!("{run}-{fedora}");
    match spec.mode {
        BuildMode::Main => RunTargets {
            pushes: true,
            cache_source,
            akmods_tags: vec![format!("{CACHE_TAG_PREFIX}-{fedora}"), run_tag.clone()],
            akmods_alias: None,
            akmods_repository,
            image_repository: repository_ref(spec, &spec.registry.candidate_image),
            image_name: spec.registry.candidate_image.clone(),
            image_tags: vec![run_tag],
        },
        BuildMode::Branch => {
            let prefix = branch_prefix(spec.branch.as_deref().unwrap_or_default());
            RunTargets {
                pushes: true,
                cache_source,
                akmods_tags: Vec::new(),
                akmods_alias: Some(format!("{akmods_repository}:{prefix}-{fedora}")),
                akmods_repository,
                image_repository: repository_ref(spec, &spec.registry.image),
                image_name: spec.registry.image.clone(),
                image_tags: vec![format!("{prefix}-{fedora}")],
            }
        }
        BuildMode::Validate => RunTargets {
            pushes: false,
            cache_source,
            akmods_tags: Vec::new(),
            akmods_alias: None,
            akmods_repository,
            image_repository: repository_ref(spec, &spec.registry.image),
            image_name: spec.registry.image.clone(),
            image_tags: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: &str, branch: Option<&str>) -> ZfsImageBuildSpec {
        let extra = branch.map(|b| format!("  branch: {b:?}\n")).unwrap_or_default();
        crate::test_support::build(mode, &extra).spec
    }

    #[test]
    fn branch_prefix_follows_r15_1() {
        assert_eq!(branch_prefix("feature/ZFS 2.4"), "br-feature-zfs-2.4");
        assert_eq!(branch_prefix("--Weird__Name--"), "br-weird__name");
        assert_eq!(branch_prefix("///"), "br-branch");
        assert_eq!(branch_prefix(""), "br-branch");
        assert_eq!(branch_prefix("ünï/cödé"), "br-n-c-d");
        let long = format!("{}-{}", "a".repeat(116), "b".repeat(10));
        let p = branch_prefix(&long);
        assert_eq!(p.len(), 119, "{p}");
        assert!(!p.ends_with('-'));
    }

    #[test]
    fn main_pushes_run_unique_candidates_and_candidate_akmods_only() {
        let t = run_targets(&spec("Main", None), 12, "43");
        assert!(t.pushes);
        assert_eq!(t.cache_source, "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:main-43");
        assert_eq!(
            t.akmods_push_refs(),
            [
                "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:main-43",
                "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:12-43"
            ]
        );
        assert_eq!(t.image_push_refs(), ["ghcr.io/danathar/kinoite-zfs-candidate:12-43"]);
        assert_eq!(t.image_name, "kinoite-zfs-candidate");
        // Nothing a build writes is in a stable repository's stable tags.
        for r in t.all_written_refs(true) {
            assert!(!r.starts_with("ghcr.io/danathar/kinoite-zfs:"), "{r}");
            assert!(!r.starts_with("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods:"), "{r}");
        }
    }

    #[test]
    fn branch_writes_only_br_tags() {
        let t = run_targets(&spec("Branch", Some("Feature/New")), 3, "43");
        assert_eq!(t.image_push_refs(), ["ghcr.io/danathar/kinoite-zfs:br-feature-new-43"]);
        assert_eq!(
            t.akmods_alias.as_deref(),
            Some("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:br-feature-new-43")
        );
        assert!(t.akmods_tags.is_empty());
        assert_eq!(t.all_written_refs(false).len(), 2);
    }

    #[test]
    fn validate_writes_nothing() {
        let t = run_targets(&spec("Validate", None), 3, "43");
        assert!(!t.pushes);
        assert!(t.all_written_refs(false).is_empty());
        assert!(t.all_written_refs(true).is_empty());
    }
}
