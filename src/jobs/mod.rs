//! Rendering of the builder Jobs (design §4): deterministic names, labels, owner references.

/// Which builder Job of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Akmods,
    Image,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Akmods => "akmods",
            JobKind::Image => "image",
        }
    }
}

/// Longest Job name that still fits the `job-name` label Kubernetes puts on its pods.
const MAX_JOB_NAME: usize = 63;

/// Deterministic Job name `<build>-<run>-<kind>`, so a create after a restart finds the existing
/// Job instead of starting a second build. Long build names are shortened and suffixed with a
/// hash of the full name so two builds never share a Job name.
pub fn job_name(build: &str, run: i64, kind: JobKind) -> String {
    let suffix = format!("-{run}-{}", kind.as_str());
    let full = format!("{build}{suffix}");
    if full.len() <= MAX_JOB_NAME {
        return full;
    }
    let hash = fnv1a(build.as_bytes());
    let tag = format!("-{:08x}", hash as u32);
    let keep = MAX_JOB_NAME - suffix.len() - tag.len();
    let prefix = build[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}{tag}{suffix}")
}

// A small stable hash for name shortening (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic() {
        assert_eq!(job_name("kinoite", 7, JobKind::Akmods), "kinoite-7-akmods");
        assert_eq!(job_name("kinoite", 7, JobKind::Image), "kinoite-7-image");
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = "a".repeat(80);
        let b = format!("{}b", "a".repeat(79));
        let (na, nb) = (job_name(&a, 12, JobKind::Image), job_name(&b, 12, JobKind::Image));
        assert!(na.len() <= MAX_JOB_NAME && nb.len() <= MAX_JOB_NAME);
        assert!(na.ends_with("-12-image"));
        assert_ne!(na, nb);
        assert_eq!(na, job_name(&a, 12, JobKind::Image));
    }
}
