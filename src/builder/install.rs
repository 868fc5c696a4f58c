//! `builder install DIR`: the init container copies the running binary into the tools volume.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::Error;

/// File name of the installed binary (the Job's entrypoint is `<DIR>/<BINARY_NAME>`).
pub const BINARY_NAME: &str = "kinoite-zfs-operator";

/// Copies the running executable to `dir/kinoite-zfs-operator`, mode 0755. Written to a temp
/// file in `dir` and renamed, so the builder container never sees a half-written binary.
pub fn install(dir: &Path) -> Result<PathBuf, Error> {
    let err = |source| Error::Install { dir: dir.to_path_buf(), source };
    let source = std::env::current_exe().map_err(err)?;
    let bytes = std::fs::read(&source).map_err(err)?;
    let target = dir.join(BINARY_NAME);
    let mut temp = tempfile::Builder::new().prefix(".kzo-install-").tempfile_in(dir).map_err(err)?;
    temp.write_all(&bytes).map_err(err)?;
    temp.as_file().sync_all().map_err(err)?;
    temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    temp.persist(&target).map_err(|e| err(e.error))?;
    Ok(target)
}
