//! One writer per stable tag. Each Promotion claims the tags it moves (the build's stable image
//! repository with each of `spec.tags`) and, when it aligns akmods, the stable akmods channel
//! (`<akmods repository>:main-<fedora>`: one akmods tag per Fedora release, so two aligning
//! Promotions of one akmods repository would move it back and forth). When two Promotions
//! claim the same target, the older one (creation time, then namespace/name) owns it and the
//! other is `Stalled` with `ConflictingPromotion`. Pure.

use std::cmp::Ordering;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::Promotion;
use crate::api::build::{BuildMode, ZfsImageBuild};
use crate::pipeline::targets::{CACHE_TAG_PREFIX, repository_ref};

/// Something only one Promotion may move.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `repository:tag` of the stable image.
    Tag { repository: String, tag: String },
    /// The stable akmods tags `repository:main-*`.
    AkmodsChannel { repository: String },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tag { repository, tag } => write!(f, "{repository}:{tag}"),
            Target::AkmodsChannel { repository } => write!(f, "{repository}:{CACHE_TAG_PREFIX}-<fedora>"),
        }
    }
}

/// A Promotion and the targets it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub created: Option<Time>,
    pub targets: Vec<Target>,
}

impl Claim {
    /// The claim of `promotion` with its build. Nothing is claimed when the build does not
    /// exist or is not a Main build: such a Promotion can never write.
    pub fn of(promotion: &Promotion, build: Option<&ZfsImageBuild>) -> Claim {
        let mut targets = Vec::new();
        if let Some(build) = build.filter(|b| b.spec.mode == BuildMode::Main) {
            let repository = repository_ref(&build.spec, &build.spec.registry.image);
            for tag in &promotion.spec.tags {
                targets.push(Target::Tag { repository: repository.clone(), tag: tag.clone() });
            }
            if promotion.spec.align_akmods {
                targets.push(Target::AkmodsChannel {
                    repository: repository_ref(&build.spec, &build.spec.registry.akmods),
                });
            }
        }
        Claim {
            namespace: promotion.metadata.namespace.clone().unwrap_or_default(),
            name: promotion.metadata.name.clone().unwrap_or_default(),
            created: promotion.metadata.creation_timestamp.clone(),
            targets,
        }
    }

    /// Older first; equal (or unknown) creation times are ordered by namespace and name, so
    /// every reconcile of every Promotion picks the same owner.
    fn precedes(&self, other: &Claim) -> bool {
        let by_time = match (&self.created, &other.created) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_time.then_with(|| (&self.namespace, &self.name).cmp(&(&other.namespace, &other.name))) == Ordering::Less
    }
}

/// The older Promotion that owns a target `mine` also claims, and that target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub namespace: String,
    pub name: String,
    pub target: Target,
}

/// The first conflict of `mine` with an older claim among `others` (which may include `mine`).
pub fn conflict(mine: &Claim, others: &[Claim]) -> Option<Conflict> {
    let mut owners: Vec<&Claim> = others
        .iter()
        .filter(|o| !(o.namespace == mine.namespace && o.name == mine.name))
        .filter(|o| o.precedes(mine))
        .collect();
    owners.sort_by(|a, b| if a.precedes(b) { Ordering::Less } else { Ordering::Greater });
    owners.into_iter().find_map(|owner| {
        mine.targets.iter().find(|t| owner.targets.contains(t)).map(|target| Conflict {
            namespace: owner.namespace.clone(),
            name: owner.name.clone(),
            target: target.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::build;
    use k8s_openapi::jiff::Timestamp;

    fn promotion(name: &str, created: i64, tags: &[&str], akmods: bool) -> Promotion {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kinoite-zfs.io/v1alpha1", "kind": "Promotion",
            "metadata": {"name": name, "namespace": "builds",
                         "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"buildRef": {"name": "zib"}, "policy": "Auto", "tags": tags, "alignAkmods": akmods},
        }))
        .unwrap()
    }

    #[test]
    fn the_older_promotion_owns_a_shared_tag() {
        let b = build("Main", "");
        let old = Claim::of(&promotion("b-old", 100, &["latest"], false), Some(&b));
        let new = Claim::of(&promotion("a-new", 200, &["testing", "latest"], false), Some(&b));
        let all = vec![old.clone(), new.clone()];
        assert_eq!(conflict(&old, &all), None);
        let c = conflict(&new, &all).unwrap();
        assert_eq!((c.name.as_str(), c.target.to_string().as_str()), ("b-old", "ghcr.io/danathar/kinoite-zfs:latest"));
        // Same creation second: the name decides, the same way for both.
        let twin = Claim::of(&promotion("a-twin", 100, &["latest"], false), Some(&b));
        let all = vec![old.clone(), twin.clone()];
        assert_eq!(conflict(&twin, &all), None);
        assert_eq!(conflict(&old, &all).unwrap().name, "a-twin");
    }

    #[test]
    fn different_tags_coexist_unless_both_align_akmods() {
        let b = build("Main", "");
        let stable = Claim::of(&promotion("stable", 100, &["latest"], true), Some(&b));
        let testing = Claim::of(&promotion("testing", 200, &["testing"], false), Some(&b));
        assert_eq!(conflict(&testing, &[stable.clone(), testing.clone()]), None);
        let aligning = Claim::of(&promotion("testing", 200, &["testing"], true), Some(&b));
        let c = conflict(&aligning, &[stable, aligning.clone()]).unwrap();
        assert_eq!(c.target.to_string(), "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods:main-<fedora>");
    }

    #[test]
    fn a_promotion_without_a_main_build_claims_nothing() {
        let b = build("Main", "");
        let orphan = Claim::of(&promotion("orphan", 1, &["latest"], true), None);
        assert!(orphan.targets.is_empty());
        let branch = Claim::of(&promotion("branch", 1, &["latest"], true), Some(&build("Branch", "  branch: x\n")));
        assert!(branch.targets.is_empty());
        let mine = Claim::of(&promotion("mine", 2, &["latest"], true), Some(&b));
        assert_eq!(conflict(&mine, &[orphan]), None);
    }
}
