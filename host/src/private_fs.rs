//! Private directories and files: what the compiled-plugin cache and the message store require
//! of the places they keep their files.
//!
//! A directory is private when it is a real directory (not a symbolic link), owned by the
//! broker's effective uid, and not writable by its group or by others. Directories the broker
//! creates are made with mode 0700. [`judge_dir`] and [`judge_secret`] decide on plain metadata
//! values, so the rules are testable without a second user.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a directory or file is not private.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPrivate {
    /// The path is a symbolic link (never followed).
    #[error("it is a symbolic link (name the directory it points to instead)")]
    Symlink,
    /// The path is not what was expected: the expected kind, as the message names it
    /// (`directory`, `regular file`).
    #[error("it is not a {0}")]
    WrongKind(&'static str),
    /// Another user owns it.
    #[error("it is owned by uid {owner}, not by this process's uid {euid}")]
    Owner {
        /// The uid that owns the path.
        owner: u32,
        /// This process's effective uid.
        euid: u32,
    },
    /// A directory its group or others may write to.
    #[error("its mode {mode:04o} lets group or others write to it (`chmod go-w` it)")]
    Writable {
        /// The permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// A secret file its group or others may read or write.
    #[error("its mode {mode:04o} lets group or others read or write it")]
    Shared {
        /// The permission bits (`mode & 0o7777`).
        mode: u32,
    },
}

/// Why [`private_dir`] refused a directory.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Looking at, creating, opening or reading the path failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The path exists but is not private.
    #[error("{0}")]
    NotPrivate(#[from] NotPrivate),
}

/// What a path is, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else: a socket, a FIFO, a device.
    Other,
}

impl Kind {
    fn of(file_type: std::fs::FileType) -> Kind {
        if file_type.is_symlink() {
            Kind::Symlink
        } else if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File
        } else {
            // Sockets, FIFOs, devices.
            Kind::Other
        }
    }
}

/// The effective uid of this process: the owner every private path must have.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// May a directory with these `lstat` values hold the broker's files?
pub fn judge_dir(kind: Kind, owner: u32, mode: u32, euid: u32) -> Result<(), NotPrivate> {
    match kind {
        Kind::Dir => {}
        Kind::Symlink => return Err(NotPrivate::Symlink),
        Kind::File | Kind::Other => return Err(NotPrivate::WrongKind("directory")),
    }
    if owner != euid {
        return Err(NotPrivate::Owner { owner, euid });
    }
    if mode & 0o022 != 0 {
        return Err(NotPrivate::Writable {
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// May a file with these (`fstat`) values hold a secret: a regular file of ours, mode 0600 or
/// stricter?
pub fn judge_secret(kind: Kind, owner: u32, mode: u32, euid: u32) -> Result<(), NotPrivate> {
    if kind != Kind::File {
        return Err(NotPrivate::WrongKind("regular file"));
    }
    if owner != euid {
        return Err(NotPrivate::Owner { owner, euid });
    }
    if mode & 0o077 != 0 {
        return Err(NotPrivate::Shared {
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Checks that `dir` is private, creating it (and any missing parents) with mode 0700 first if
/// it does not exist. A symbolic link at `dir` is refused, not followed.
pub fn private_dir(dir: &Path) -> Result<(), DirError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // Judged again: someone may have created it first.
            std::fs::symlink_metadata(dir)?
        }
        Err(e) => return Err(e.into()),
    };
    judge_dir(Kind::of(meta.file_type()), meta.uid(), meta.mode(), euid())?;
    Ok(())
}

/// Like [`private_dir`], but only judges: a missing directory is fine (it is created later).
pub fn check_existing_dir(dir: &Path) -> Result<(), DirError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => Ok(judge_dir(
            Kind::of(meta.file_type()),
            meta.uid(),
            meta.mode(),
            euid(),
        )?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Open options that refuse a symbolic link in the last component (`ELOOP`) and do not block
/// opening a FIFO someone left in its place.
pub fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    options.custom_flags(flags.bits() as i32)
}

/// Reads a whole regular file without following a symbolic link; `judge` sees its `fstat`
/// values (the file actually opened) before it is read.
pub fn read_no_follow(
    path: &Path,
    judge: impl FnOnce(Kind, u32, u32) -> Result<(), NotPrivate>,
) -> Result<Vec<u8>, DirError> {
    use std::io::Read;
    let mut file: File = no_follow(OpenOptions::new().read(true)).open(path)?;
    let meta = file.metadata()?;
    judge(Kind::of(meta.file_type()), meta.uid(), meta.mode())?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates a new file at `path` (never an existing path, never through a symbolic link) with
/// mode 0600, for writing.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    no_follow(OpenOptions::new().write(true).create_new(true).mode(0o600)).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ME: u32 = 1000;

    #[test]
    fn a_directory_is_private_only_when_ours_and_not_writable_by_others() {
        assert_eq!(judge_dir(Kind::Dir, ME, 0o40700, ME), Ok(()));
        assert_eq!(judge_dir(Kind::Dir, ME, 0o40755, ME), Ok(()));
        assert_eq!(
            judge_dir(Kind::Dir, 1001, 0o40700, ME),
            Err(NotPrivate::Owner {
                owner: 1001,
                euid: ME
            })
        );
        // Even root's: only the broker's own user decides what goes in.
        assert!(judge_dir(Kind::Dir, 0, 0o40700, ME).is_err());
        assert_eq!(
            judge_dir(Kind::Dir, ME, 0o40775, ME),
            Err(NotPrivate::Writable { mode: 0o775 })
        );
        assert!(judge_dir(Kind::Dir, ME, 0o40777, ME).is_err());
        assert!(
            judge_dir(Kind::Dir, ME, 0o41777, ME).is_err(),
            "sticky /tmp"
        );
        assert!(judge_dir(Kind::Dir, ME, 0o40702, ME).is_err());
        assert_eq!(
            judge_dir(Kind::Symlink, ME, 0o120777, ME),
            Err(NotPrivate::Symlink)
        );
        assert!(judge_dir(Kind::File, ME, 0o100700, ME).is_err());
    }

    #[test]
    fn a_secret_is_a_regular_file_of_ours_that_only_we_can_read() {
        assert_eq!(judge_secret(Kind::File, ME, 0o100600, ME), Ok(()));
        assert_eq!(judge_secret(Kind::File, ME, 0o100400, ME), Ok(()));
        assert!(judge_secret(Kind::File, ME, 0o100640, ME).is_err());
        assert!(judge_secret(Kind::File, ME, 0o100604, ME).is_err());
        assert!(judge_secret(Kind::File, 1001, 0o100600, ME).is_err());
        assert!(judge_secret(Kind::Other, ME, 0o010600, ME).is_err());
        assert!(judge_secret(Kind::Dir, ME, 0o040600, ME).is_err());
    }

    #[test]
    fn a_missing_directory_is_created_0700_with_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        private_dir(&dir).unwrap();
        for d in [tmp.path().join("a"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
        }
        private_dir(&dir).unwrap();
    }

    #[test]
    fn symlinks_and_open_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            private_dir(&open),
            Err(DirError::NotPrivate(NotPrivate::Writable { mode: 0o777 }))
        ));
        assert!(check_existing_dir(&open).is_err());
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            private_dir(&link),
            Err(DirError::NotPrivate(NotPrivate::Symlink))
        ));
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            private_dir(&dangling),
            Err(DirError::NotPrivate(NotPrivate::Symlink))
        ));
        assert!(!tmp.path().join("nowhere").exists(), "not followed");
        assert!(check_existing_dir(&tmp.path().join("missing")).is_ok());
    }

    /// Ownership by another user, for real: possible when the tests run as root.
    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        if euid() != 0 {
            return; // judge_dir's table above covers the rule
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        assert!(matches!(
            private_dir(&dir),
            Err(DirError::NotPrivate(NotPrivate::Owner { owner: 65534, .. }))
        ));
    }

    #[test]
    fn new_private_files_never_reuse_a_path_or_follow_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        drop(create_new_private(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            create_new_private(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("target"), &link).unwrap();
        assert!(create_new_private(&link).is_err());
        assert!(!tmp.path().join("target").exists());
        std::os::unix::fs::symlink(&path, tmp.path().join("link2")).unwrap();
        assert!(read_no_follow(&tmp.path().join("link2"), |_, _, _| Ok(())).is_err());
        assert!(read_no_follow(&path, |_, _, _| Ok(())).unwrap().is_empty());
    }
}
