//! File writes that never leave a half-written file behind, and the rule every command that
//! writes follows: an output that exists is never replaced unless the user passes `--force`, and
//! nothing is created before the inputs are validated.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync and rename
/// (then an fsync of the directory, so the rename itself survives a power cut), so a crash or a
/// full disk leaves the previous file intact. On failure the temporary file is removed and the
/// error names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| Ok(out.write_all(bytes)?))
}

/// [`write_atomic`] for output too large to hold in memory: `fill` streams it into a buffered
/// writer on the temporary file, which becomes `path` only when `fill` succeeds.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        fill(&mut out)?;
        let file = out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Best effort: not every file system lets a directory be opened and synced.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// An output file a command is about to write: refused when it exists, unless the user passed
/// `--force` (the one rule every command that writes follows: an output that exists is never
/// replaced unless the user says so), and always when it is a directory. Checked before the
/// command reads or computes anything, so a refusal leaves every file as it was.
pub fn refuse_existing_file(flag: &str, path: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        // Anything else (no such file, a parent that is not a directory) is the writer's to report.
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => bail!("{flag} {} is a directory, not a file", path.display()),
        Ok(_) if force => Ok(()),
        Ok(_) => bail!("{flag} {} already exists; pass --force to replace it, or choose a new path", path.display()),
    }
}

/// An output directory a command is about to write `names` into: refused when it is a file,
/// and when it already holds any of `names` (`what` says whose they are: "an earlier run", "a
/// dataset") unless the user passed `--force`. Other files in the directory are never touched.
pub fn refuse_existing_in_dir(flag: &str, dir: &Path, names: &[&str], what: &str, force: bool) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() && !dir.is_dir() {
        bail!("{flag} {} is a file, not a directory", dir.display());
    }
    let found: Vec<&str> = names.iter().copied().filter(|n| std::fs::symlink_metadata(dir.join(n)).is_ok()).collect();
    if force || found.is_empty() {
        return Ok(());
    }
    bail!(
        "{flag} {} already holds {what} ({}); pass --force to replace it, or choose a new directory",
        dir.display(),
        found.join(", ")
    )
}

/// A directory this invocation created (with its missing parents): until [`NewDir::keep`] is
/// called, dropping the guard removes what the invocation created, and only that, so a command
/// that fails before its first useful output leaves no empty directory behind.
#[derive(Debug)]
#[must_use = "the directory is removed when the guard is dropped without keep()"]
pub struct NewDir {
    created: Option<PathBuf>,
}

impl NewDir {
    /// Creates `dir` and its missing parents.
    pub fn create(dir: &Path) -> Result<NewDir> {
        let created = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
            .last()
            .map(Path::to_path_buf);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(NewDir { created })
    }

    /// The command succeeded this far: the directory stays whatever happens next.
    pub fn keep(mut self) {
        self.created = None;
    }
}

impl Drop for NewDir {
    fn drop(&mut self) {
        if let Some(top) = self.created.take() {
            let _ = std::fs::remove_dir_all(top);
        }
    }
}
