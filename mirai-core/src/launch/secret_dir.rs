//! One-use secret files for batch jobs. Schedulers store a job's exported environment with the
//! job, so the secret goes instead into files only the user can read (0600, in a 0700
//! directory under `$HOME`, which compute nodes usually share). Each job reads its own file and
//! deletes it before the daemon starts; the directory goes when the jobs are cancelled.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A private directory holding files `1` to `n`, each the secret (hex) on one line; removed
/// with everything left in it when dropped.
#[derive(Debug)]
pub(crate) struct SecretDir {
    path: PathBuf,
}

impl SecretDir {
    /// Creates `$HOME/.mirai/jobs-<random>` with `n` files holding `secret_hex`.
    pub(crate) fn create(secret_hex: &str, n: usize) -> Result<SecretDir, Error> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or_else(|| {
            Error::Launch("HOME is not set: there is no private place for the jobs' secret file".into())
        })?;
        let parent = Path::new(&home).join(".mirai");
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        let mut name = [0u8; 8];
        getrandom::getrandom(&mut name).map_err(|e| Error::Launch(format!("no random name: {e}")))?;
        let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let path = parent.join(format!("jobs-{name}"));
        // `create`, not `recursive`: an existing directory of that name is not ours.
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        let dir = SecretDir { path };
        for i in 1..=n {
            let file = dir.file(i);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .and_then(|mut f| f.write_all(format!("{secret_hex}\n").as_bytes()))
                .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        }
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, i: usize) -> PathBuf {
        self.path.join(i.to_string())
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_removed_with_the_directory() {
        let dir = SecretDir::create("00ff", 3).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        for i in 1..=3 {
            assert_eq!(mode(&dir.file(i)), 0o600);
            assert_eq!(std::fs::read_to_string(dir.file(i)).unwrap(), "00ff\n");
        }
        assert!(!dir.file(4).exists());
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
