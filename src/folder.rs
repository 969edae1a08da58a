//! The output folder: one lock for every mode, hidden work folders beside it, and an atomic
//! switch from the old folder to the new one.
//!
//! Every run, whole or nightly, works the same way on its `--out` folder `DIR`:
//! 1. it takes the lock `.DIR.convbill.lock` beside `DIR` before it touches anything under or
//!    beside it (a second run on the same folder stops with exit code 4);
//! 2. it cleans up after a run that crashed: a staging, previous or spill folder left beside
//!    `DIR`, and an unfinished switch (see 4);
//! 3. it builds the complete new folder as `.DIR.convbill-staging` beside `DIR` (a nightly run
//!    links the files it keeps from the old folder into it);
//! 4. it exchanges the two folders in one atomic step (`renameat2` with `RENAME_EXCHANGE`), so
//!    that `DIR` is always either the old folder or the new one, and removes the old one.
//!    Where the file system cannot exchange, it renames `DIR` to `.DIR.convbill-previous` and
//!    the staging folder to `DIR`; a crash between the two renames is finished by step 2 of
//!    the next run.
//!
//! A run that fails or is interrupted before step 4 removes its staging folder and leaves `DIR`
//! as it was.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `--out`, with the names of the hidden files and folders convbill keeps beside it.
#[derive(Debug, Clone)]
pub struct OutFolder {
    /// The folder: as given, or where it leads if that is a symbolic link.
    pub out: PathBuf,
    /// The folder that holds it (`.` for a bare name).
    pub parent: PathBuf,
    /// Its last path component.
    pub name: String,
}

impl OutFolder {
    /// Checks that `out` can be an output folder: it names a folder (not `.` or `/`), is not
    /// a file, and is not a mount point (a mount point cannot be replaced). A symbolic link is
    /// followed: the folder it leads to is replaced, and its lock is the one beside that
    /// folder, whichever name a run uses.
    pub fn new(given: &Path) -> Result<Self> {
        let out = match fs::symlink_metadata(given) {
            Ok(m) if m.file_type().is_symlink() => link_target(given)?,
            _ => given.to_path_buf(),
        };
        let name = match out.file_name() {
            Some(name) => name.to_string_lossy().into_owned(),
            None => {
                return Err(Error::OutUnnamed {
                    path: given.to_path_buf(),
                })
            }
        };
        if out.exists() && !out.is_dir() {
            return Err(Error::OutIsFile {
                path: given.to_path_buf(),
            });
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if is_mount_point(&out, &parent) {
            return Err(Error::OutIsMountPoint {
                path: given.to_path_buf(),
            });
        }
        Ok(OutFolder { out, parent, name })
    }

    /// Refuses an output folder inside the input folder `input`: a run writes there (and beside
    /// it), and would read what it wrote as messages.
    pub fn check_apart_from(&self, input: &Path) -> Result<()> {
        let (Ok(input_dir), Ok(parent)) = (fs::canonicalize(input), fs::canonicalize(&self.parent))
        else {
            return Ok(());
        };
        if input_dir.is_dir() && parent.starts_with(&input_dir) {
            return Err(Error::OutInsideInput {
                out: self.out.clone(),
                input: input.to_path_buf(),
            });
        }
        Ok(())
    }

    fn beside(&self, suffix: &str) -> PathBuf {
        self.parent
            .join(format!(".{}.convbill-{suffix}", self.name))
    }

    /// `.DIR.convbill.lock`: held while a run works on `DIR`.
    pub fn lock_path(&self) -> PathBuf {
        self.parent.join(format!(".{}.convbill.lock", self.name))
    }

    /// `.DIR.convbill-staging`: the new folder while it is being written.
    pub fn staging_path(&self) -> PathBuf {
        self.beside("staging")
    }

    /// `.DIR.convbill-spill`: a whole run's spill files.
    pub fn spill_path(&self) -> PathBuf {
        self.beside("spill")
    }

    /// `.DIR.convbill-previous`: the old folder, between the two renames of a switch on a file
    /// system that cannot exchange folders.
    pub fn previous_path(&self) -> PathBuf {
        self.beside("previous")
    }

    /// Takes the lock (creating the parent folder if needed). Another run holding it is
    /// [`Error::Busy`].
    pub fn lock(&self) -> Result<Lock> {
        fs::create_dir_all(&self.parent).map_err(io_error(&self.parent))?;
        Lock::take(self.lock_path())
    }

    /// Cleans up after a run that crashed (see the module documentation). Call with the lock
    /// held. Returns what it did, if anything, for the log.
    pub fn recover(&self) -> Result<Option<&'static str>> {
        let (staging, previous) = (self.staging_path(), self.previous_path());
        let mut done = None;
        if !self.out.exists() && previous.is_dir() {
            // A switch stopped between its two renames: the staging folder is complete (it is
            // renamed only once written); without it, the old folder goes back.
            if staging.is_dir() {
                rename(&staging, &self.out)?;
                done = Some("finished switching to the output a crashed run had completed");
            } else {
                rename(&previous, &self.out)?;
                done = Some("restored the output folder a crashed run had moved aside");
            }
        }
        for leftover in [staging, previous, self.spill_path()] {
            if leftover.exists() {
                fs::remove_dir_all(&leftover).map_err(io_error(&leftover))?;
                done.get_or_insert("removed the work folders of a run that did not finish");
            }
        }
        Ok(done)
    }

    /// Creates an empty staging folder (see [`OutFolder::recover`] for an old one).
    pub fn create_staging(&self) -> Result<PathBuf> {
        let staging = self.staging_path();
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        fs::create_dir(&staging).map_err(io_error(&staging))?;
        Ok(staging)
    }

    /// Puts the complete staging folder in place of `DIR`, atomically, and removes the old
    /// folder. After this returns `Ok`, the new folder is in place.
    pub fn switch(&self, staging: &Path) -> Result<()> {
        injected_failure(&self.out)?;
        if !self.out.exists() {
            rename(staging, &self.out)?;
            sync_folder(&self.parent);
            return Ok(());
        }
        if exchange(staging, &self.out)? {
            sync_folder(&self.parent);
            // `staging` now holds the old folder; a crash here leaves it for the next run.
            let _ = fs::remove_dir_all(staging);
            return Ok(());
        }
        let previous = self.previous_path();
        if previous.exists() {
            fs::remove_dir_all(&previous).map_err(io_error(&previous))?;
        }
        rename(&self.out, &previous)?;
        if let Err(e) = rename(staging, &self.out) {
            let _ = rename(&previous, &self.out);
            return Err(e);
        }
        sync_folder(&self.parent);
        let _ = fs::remove_dir_all(&previous);
        Ok(())
    }
}

/// Takes the lock `.NAME.convbill.lock` beside the file `path` (creating its folder if
/// needed), as [`OutFolder::lock`] does beside a folder.
pub fn lock_file(path: &Path) -> Result<Lock> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    Lock::take(parent.join(format!(".{name}.convbill.lock")))
}

/// The output folder's lock, held for the life of the value and removed with it.
///
/// The lock is an OS file lock, so a run that dies releases it. Removing the file when done
/// is safe because a run that took the lock checks that the file it locked is still the one
/// at the path (and tries again otherwise).
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    file: File,
}

impl Lock {
    fn take(path: PathBuf) -> Result<Lock> {
        loop {
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_error(&path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Err(Error::Busy { path }),
                Err(fs::TryLockError::Error(source)) => return Err(Error::Output { path, source }),
            }
            if same_file(&file, &path) {
                return Ok(Lock { path, file });
            }
            // The run that held it removed the file meanwhile: lock the new one.
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where the symbolic link `link` leads, as a canonical path, whether or not the folder there
/// exists yet.
fn link_target(link: &Path) -> Result<PathBuf> {
    let failed = |source| Error::Output {
        path: link.to_path_buf(),
        source,
    };
    if let Ok(target) = fs::canonicalize(link) {
        return Ok(target);
    }
    // The link leads to a folder that does not exist (yet): resolve what does.
    let target = fs::read_link(link).map_err(failed)?;
    let target = match target.is_relative() {
        true => link.parent().unwrap_or(Path::new(".")).join(target),
        false => target,
    };
    match (target.parent(), target.file_name()) {
        (Some(parent), Some(name)) if parent.exists() => {
            Ok(fs::canonicalize(parent).map_err(failed)?.join(name))
        }
        _ => Ok(target),
    }
}

/// Whether `dir` exists and is a mount point: on another file system than `parent`, or (a bind
/// mount of the same file system) listed as one by the kernel.
#[cfg(unix)]
fn is_mount_point(dir: &Path, parent: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(dir), fs::metadata(parent)) {
        (Ok(a), Ok(b)) if a.is_dir() => a.dev() != b.dev() || listed_as_mount_point(dir),
        _ => false,
    }
}

/// Whether `/proc/self/mountinfo` lists `dir` as a mount point (Linux; elsewhere, never).
#[cfg(unix)]
fn listed_as_mount_point(dir: &Path) -> bool {
    let (Ok(dir), Ok(table)) = (
        fs::canonicalize(dir),
        fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return false;
    };
    // The fifth field is the mount point, with spaces and the like as octal escapes (`\040`).
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| {
            let mut unescaped = Vec::new();
            let bytes = point.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let octal = bytes.get(i + 1..i + 4).and_then(|d| {
                    std::str::from_utf8(d)
                        .ok()
                        .and_then(|d| u8::from_str_radix(d, 8).ok())
                });
                match (bytes[i], octal) {
                    (b'\\', Some(byte)) => {
                        unescaped.push(byte);
                        i += 4;
                    }
                    (byte, _) => {
                        unescaped.push(byte);
                        i += 1;
                    }
                }
            }
            use std::os::unix::ffi::OsStrExt;
            Path::new(std::ffi::OsStr::from_bytes(&unescaped)) == dir
        })
}

#[cfg(not(unix))]
fn is_mount_point(_dir: &Path, _parent: &Path) -> bool {
    false
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// A Parquet writer's error (a full disk, say) as a failure to write `path`.
pub(crate) fn write_error(path: &Path) -> impl Fn(polars::prelude::PolarsError) -> Error + '_ {
    move |e| {
        let source = match e {
            polars::prelude::PolarsError::IO { error, .. } => {
                std::io::Error::new(error.kind(), error.to_string())
            }
            e => std::io::Error::other(e.to_string()),
        };
        Error::Output {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(io_error(to))
}

/// Exchanges two folders atomically. `Ok(false)` where the OS or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    if std::env::var_os("CONVBILL_NO_EXCHANGE").is_some() {
        return Ok(false);
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL");
    let (ca, cb) = (c(a), c(b));
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if result == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(io_error(b)(error)),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> Result<bool> {
    Ok(false)
}

/// Flushes a folder's entries (the renames in it) to disk; best effort.
fn sync_folder(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Testing hook: with `CONVBILL_FAIL_AFTER_FILES=N`, the step after the first N fails, as a
/// full disk or a kill would. Steps are the files written and the final switch, so every
/// count from 0 up tests another point of a run.
pub(crate) fn injected_failure(path: &Path) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STEPS: AtomicU64 = AtomicU64::new(0);
    let limit = std::env::var("CONVBILL_FAIL_AFTER_FILES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match limit {
        Some(limit) if STEPS.fetch_add(1, Ordering::SeqCst) >= limit => Err(Error::Output {
            path: path.to_path_buf(),
            source: std::io::Error::other("injected failure (CONVBILL_FAIL_AFTER_FILES)"),
        }),
        _ => Ok(()),
    }
}

/// Copies the tree `from` into `to` as hard links (copies where a link cannot be made),
/// skipping every relative path in `skip` (and what lies under it) and every file that `to`
/// already has. This is how a nightly run keeps the files it does not rewrite: a few system
/// calls per file, no data copied.
pub fn link_tree(from: &Path, to: &Path, skip: &std::collections::BTreeSet<PathBuf>) -> Result<()> {
    fn walk(
        root: &Path,
        dir: &Path,
        to: &Path,
        skip: &std::collections::BTreeSet<PathBuf>,
    ) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("under the root");
            if skip.contains(relative) {
                continue;
            }
            let target = to.join(relative);
            let kind = entry.file_type().map_err(io_error(&path))?;
            if kind.is_dir() {
                // Its parent exists: it was made before this folder was walked.
                match fs::create_dir(&target) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(io_error(&target)(e))
                    }
                    _ => {}
                }
                walk(root, &path, to, skip)?;
            } else {
                match fs::hard_link(&path, &target) {
                    Ok(()) => {}
                    // Written by this run.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(_) => {
                        fs::copy(&path, &target).map_err(io_error(&target))?;
                    }
                }
            }
        }
        Ok(())
    }
    if !from.is_dir() {
        return Ok(());
    }
    walk(from, from, to, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_names_sit_beside_the_folder() {
        let folder = OutFolder::new(Path::new("data/billing")).unwrap();
        assert_eq!(folder.lock_path(), Path::new("data/.billing.convbill.lock"));
        assert_eq!(
            folder.staging_path(),
            Path::new("data/.billing.convbill-staging")
        );
        let bare = OutFolder::new(Path::new("out")).unwrap();
        assert_eq!(bare.spill_path(), Path::new("./.out.convbill-spill"));
        assert!(matches!(
            OutFolder::new(Path::new(".")),
            Err(Error::OutUnnamed { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_the_folder_is_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let through_link = OutFolder::new(&link).unwrap();
        let direct = OutFolder::new(&real).unwrap();
        assert_eq!(through_link.name, "real");
        let lock = direct.lock().unwrap();
        assert!(matches!(through_link.lock(), Err(Error::Busy { .. })));
        drop(lock);
        let staging = through_link.create_staging().unwrap();
        fs::write(staging.join("file"), "new").unwrap();
        through_link.switch(&staging).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(link.join("file")).unwrap(), "new");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_mount_point_is_refused() {
        // `/proc` is a file system of its own on every Linux machine.
        assert!(matches!(
            OutFolder::new(Path::new("/proc")),
            Err(Error::OutIsMountPoint { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(OutFolder::new(&dir.path().join("out")).is_ok());
        // A bind mount keeps the file system: the kernel's list of mount points tells it.
        assert!(listed_as_mount_point(Path::new("/proc")));
        assert!(!listed_as_mount_point(dir.path()));
    }

    #[test]
    fn a_write_error_names_the_file() {
        let error =
            write_error(Path::new("out/sessions.parquet"))(polars::prelude::PolarsError::IO {
                error: std::sync::Arc::new(std::io::Error::from_raw_os_error(28)),
                msg: None,
            });
        let text = format!("{:#}", anyhow::Error::from(error));
        assert!(
            text.starts_with("failed to write `out/sessions.parquet`"),
            "{text}"
        );
        assert!(text.contains("No space left on device"), "{text}");
    }

    #[test]
    fn a_second_lock_is_refused_and_the_file_goes_with_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let folder = OutFolder::new(&dir.path().join("out")).unwrap();
        let lock = folder.lock().unwrap();
        assert!(matches!(folder.lock(), Err(Error::Busy { .. })));
        drop(lock);
        assert!(!folder.lock_path().exists());
        drop(folder.lock().unwrap());
    }

    #[test]
    fn switching_replaces_the_folder_whole() {
        let dir = tempfile::tempdir().unwrap();
        let folder = OutFolder::new(&dir.path().join("out")).unwrap();
        for (round, text) in ["one", "two"].iter().enumerate() {
            let staging = folder.create_staging().unwrap();
            fs::write(staging.join("file"), text).unwrap();
            if round == 0 {
                fs::write(staging.join("only-in-one"), "x").unwrap();
            }
            folder.switch(&staging).unwrap();
            assert_eq!(
                fs::read_to_string(dir.path().join("out/file")).unwrap(),
                *text
            );
            assert!(!staging.exists());
        }
        assert!(!dir.path().join("out/only-in-one").exists());
    }

    #[test]
    fn a_switch_stopped_between_its_renames_is_finished_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let folder = OutFolder::new(&dir.path().join("out")).unwrap();
        fs::create_dir(folder.previous_path()).unwrap();
        fs::write(folder.previous_path().join("file"), "old").unwrap();
        let staging = folder.create_staging().unwrap();
        fs::write(staging.join("file"), "new").unwrap();
        assert!(folder.recover().unwrap().is_some());
        assert_eq!(fs::read_to_string(folder.out.join("file")).unwrap(), "new");
        assert!(!folder.previous_path().exists());

        // Without a complete staging folder, the old one comes back.
        fs::rename(&folder.out, folder.previous_path()).unwrap();
        folder.recover().unwrap();
        assert_eq!(fs::read_to_string(folder.out.join("file")).unwrap(), "new");
    }

    #[test]
    fn linking_keeps_what_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        for file in ["a/x", "a/y", "b/z", "c"] {
            let path = from.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, file).unwrap();
        }
        fs::create_dir_all(to.join("a")).unwrap();
        fs::write(to.join("a/x"), "new").unwrap();
        let skip = [PathBuf::from("b")].into_iter().collect();
        link_tree(&from, &to, &skip).unwrap();
        assert_eq!(fs::read_to_string(to.join("a/x")).unwrap(), "new");
        assert_eq!(fs::read_to_string(to.join("a/y")).unwrap(), "a/y");
        assert_eq!(fs::read_to_string(to.join("c")).unwrap(), "c");
        assert!(!to.join("b").exists());
    }
}
