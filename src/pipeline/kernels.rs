//! Kernel release ordering and the Fedora version derived from it (R2.5, R2.7).

use std::cmp::Ordering;

/// Errors of kernel-release handling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("No kernel release found")]
    NoKernels,
    #[error("Failed to extract Fedora version from kernel release {0}")]
    NoFedoraVersion(String),
    #[error(
        "invalid kernel release {0:?}: expected a `uname -r` value such as 6.18.12-200.fc43.x86_64 (letters, digits, `.`, `_`, `+`, `~`, `-`)"
    )]
    InvalidRelease(String),
}

/// Compares two strings naturally: runs of digits compare by numeric value, so
/// `6.18.9 < 6.18.10 < 6.18.12`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (da, ra) = split_digits(a);
                let (db, rb) = split_digits(b);
                let ord = cmp_digit_runs(da, db);
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|c| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

// Compares digit runs of any length without overflowing: strip leading zeros, then the longer
// run is larger, then lexicographic order equals numeric order.
fn cmp_digit_runs(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |s: &[u8]| -> usize { s.iter().position(|&c| c != b'0').unwrap_or(s.len()) };
    let (a, b) = (&a[trim(a)..], &b[trim(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// De-duplicates (first occurrence kept) and natural-sorts kernel releases (R2.5).
pub fn sort_releases<I, S>(releases: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut out: Vec<String> = Vec::new();
    for release in releases {
        let release = release.into();
        if !out.contains(&release) {
            out.push(release);
        }
    }
    out.sort_by(|a, b| natural_cmp(a, b));
    out
}

/// Checks that `release` looks like a kernel release (`uname -r`): it becomes part of paths
/// (`lib/modules/<release>/...`) and file names, so `/`, whitespace and empty values are refused.
pub fn check_release(release: &str) -> Result<(), Error> {
    let ok = !release.is_empty()
        && release.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'~' | b'-'));
    if ok { Ok(()) } else { Err(Error::InvalidRelease(release.to_string())) }
}

/// The newest (primary) kernel of a natural-sorted list.
pub fn newest(sorted: &[String]) -> Result<&str, Error> {
    sorted.last().map(String::as_str).ok_or(Error::NoKernels)
}

/// Fedora major version from a kernel release: the last `fc<digits>` wins, as the reference's
/// greedy `.*fc([0-9]+).*` does (`6.18.12-200.fc43.x86_64` -> `43`).
pub fn fedora_version(kernel_release: &str) -> Result<String, Error> {
    let bytes = kernel_release.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i + 2 < bytes.len() + 1 {
        if bytes[i..].starts_with(b"fc") {
            let digits: String = kernel_release[i + 2..].chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                found = Some(digits);
            }
        }
        i += 1;
    }
    found.ok_or_else(|| Error::NoFedoraVersion(kernel_release.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_digit_runs_numerically() {
        let sorted = sort_releases(["6.18.12-200.fc43.x86_64", "6.18.9-200.fc43.x86_64", "6.18.10-200.fc43.x86_64"]);
        assert_eq!(sorted, ["6.18.9-200.fc43.x86_64", "6.18.10-200.fc43.x86_64", "6.18.12-200.fc43.x86_64"]);
        assert_eq!(natural_cmp("a007", "a7"), Ordering::Equal);
        assert_eq!(natural_cmp("6.9", "6.10"), Ordering::Less);
        assert_eq!(natural_cmp("x99999999999999999999999", "x100000000000000000000000"), Ordering::Less);
    }

    #[test]
    fn duplicates_are_dropped() {
        let sorted = sort_releases(["6.18.1-1.fc43.x86_64", "6.18.1-1.fc43.x86_64", "6.17.1-1.fc43.x86_64"]);
        assert_eq!(sorted, ["6.17.1-1.fc43.x86_64", "6.18.1-1.fc43.x86_64"]);
        assert_eq!(newest(&sorted), Ok("6.18.1-1.fc43.x86_64"));
        assert_eq!(newest(&[]), Err(Error::NoKernels));
    }

    #[test]
    fn releases_are_checked_before_they_become_paths() {
        assert_eq!(check_release("6.18.12-200.fc43.x86_64"), Ok(()));
        assert_eq!(check_release("6.1.0+rt~1_x"), Ok(()));
        for bad in ["", "6.18/../x", "6.18 6.19", "6.18\n"] {
            assert_eq!(check_release(bad), Err(Error::InvalidRelease(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn fedora_version_takes_the_last_fc_digits() {
        assert_eq!(fedora_version("6.18.12-200.fc43.x86_64").unwrap(), "43");
        assert_eq!(fedora_version("6.1.0-fc41.fc42.x86_64").unwrap(), "42");
        assert_eq!(fedora_version("6.1.0-fc42.fcx").unwrap(), "42");
        assert_eq!(fedora_version("6.8.0-31-generic"), Err(Error::NoFedoraVersion("6.8.0-31-generic".into())));
        // The reference's message (R2.7).
        assert_eq!(
            fedora_version("6.8.0-31-generic").unwrap_err().to_string(),
            "Failed to extract Fedora version from kernel release 6.8.0-31-generic"
        );
    }
}
