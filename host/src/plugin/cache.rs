//! The on-disk cache of compiled components, and why its artifacts can be trusted.
//!
//! A compiled artifact is native code: wasmtime runs what it deserializes without checking it.
//! So the cache lives in a private directory (see [`crate::private_fs`]: ours, not writable by
//! group or others, not a symbolic link), and every artifact carries an HMAC-SHA256 tag made with
//! a 32-byte random key that only the broker's user can read (`key`, mode 0600, in the cache
//! directory). The tag covers the artifact's cache name (the sha256 of the component and the
//! engine's compatibility hash) and its bytes: an artifact that was altered, truncated, written
//! by someone without the key, or copied under another component's name fails verification,
//! is ignored (with a warning) and is replaced by a fresh compilation.
//!
//! An artifact file is `wasmtime serialization ‖ tag`. It is read into memory (never through a
//! symbolic link), verified in constant time, and the verified bytes themselves are what
//! [`super::engine`] deserializes: nothing is re-read from disk after the check.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::private_fs::{self, DirError, Kind, NotPrivate};

/// Bytes of the key and of a tag.
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// The key's file name in the cache directory.
const KEY_FILE: &str = "key";
/// Separates these tags from any other use of the key.
const DOMAIN: &[u8] = b"plugboard compiled component v1\0";

type HmacSha256 = Hmac<Sha256>;

/// An open cache: a private directory and its key.
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("compiled-plugin cache {}: {reason}", dir.display())]
    NotPrivate { dir: PathBuf, reason: NotPrivate },
    #[error("compiled-plugin cache {}: {source}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

/// Why a cached artifact was not loaded (it is then compiled and stored again).
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    NotPrivate(NotPrivate),
    #[error("shorter than its tag")]
    NoTag,
    #[error("its tag does not verify (altered, or not written by this cache for this component)")]
    BadTag,
}

/// Artifact bytes whose tag verified under the cache's key: written by a broker of this user
/// for exactly this cache name. Only [`ArtifactCache::read`] makes one.
pub struct Authenticated(Vec<u8>);

impl Authenticated {
    /// The wasmtime serialization (the tag removed).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl ArtifactCache {
    /// Opens the cache in `dir`: creates the directory (mode 0700) if it is missing, refuses it
    /// unless it is private, and reads its key (creating one if there is none, replacing one that
    /// is not a private 32-byte file of ours).
    pub fn open(dir: &Path) -> Result<ArtifactCache, CacheError> {
        let io_err = |source| CacheError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        match private_fs::private_dir(dir) {
            Ok(()) => {}
            Err(DirError::NotPrivate(reason)) => {
                return Err(CacheError::NotPrivate {
                    dir: dir.to_path_buf(),
                    reason,
                })
            }
            Err(DirError::Io(e)) => return Err(io_err(e)),
        }
        let key = load_key(dir).map_err(io_err)?;
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// [`ArtifactCache::open`], or `None` with the reason logged as an error: plugins are then
    /// compiled without the cache (it only saves time; it must never cost safety).
    pub fn open_or_log(dir: &Path) -> Option<ArtifactCache> {
        match ArtifactCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::error!("{e}; not using it: plugins are compiled at every load");
                None
            }
        }
    }

    /// The file of the artifact named `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The verified artifact `name`, `Ok(None)` if there is none.
    pub fn read(&self, name: &str) -> Result<Option<Authenticated>, Rejected> {
        let path = self.path(name);
        let mut bytes = match private_fs::read_no_follow(&path, |kind, _, _| match kind {
            Kind::File => Ok(()),
            _ => Err(NotPrivate::WrongKind("regular file")),
        }) {
            Ok(bytes) => bytes,
            Err(DirError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(DirError::Io(e)) => return Err(Rejected::Io(e)),
            Err(DirError::NotPrivate(e)) => return Err(Rejected::NotPrivate(e)),
        };
        let Some(split) = bytes.len().checked_sub(TAG_LEN) else {
            return Err(Rejected::NoTag);
        };
        let tag = bytes.split_off(split);
        self.mac(name, &bytes)
            .verify_slice(&tag)
            .map_err(|_| Rejected::BadTag)?;
        Ok(Some(Authenticated(bytes)))
    }

    /// Stores `artifact` as `name`: a new temporary file (mode 0600) written in full, then
    /// renamed over the name, so a concurrent reader sees the old file or the whole new one.
    /// Not synced: a torn file after a crash fails its tag and is recompiled.
    pub fn write(&self, name: &str, artifact: &[u8]) -> io::Result<()> {
        let tag = self.mac(name, artifact).finalize().into_bytes();
        let tmp = self.dir.join(format!(".{name}.{}.tmp", random_hex()?));
        let written = private_fs::create_new_private(&tmp).and_then(|mut file| {
            file.write_all(artifact)?;
            file.write_all(&tag)
        });
        let renamed = written.and_then(|()| std::fs::rename(&tmp, self.path(name)));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        renamed
    }

    fn mac(&self, name: &str, artifact: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac.update(artifact);
        mac
    }
}

/// 16 random hex digits, for temporary file names.
fn random_hex() -> io::Result<String> {
    let n = getrandom::u64().map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(format!("{n:016x}"))
}

/// Reads the key of the cache in `dir`. A missing key is created; one that is not a private
/// regular file of ours with exactly [`KEY_LEN`] bytes is replaced (the artifacts tagged with it
/// are then recompiled as they are loaded).
fn load_key(dir: &Path) -> io::Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    let euid = private_fs::euid();
    let read = private_fs::read_no_follow(&path, |kind, owner, mode| {
        private_fs::judge_secret(kind, owner, mode, euid)
    });
    let problem = match read {
        Ok(bytes) => match <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
            Ok(key) => return Ok(key),
            Err(_) => format!("has {} bytes, not {KEY_LEN}", bytes.len()),
        },
        Err(DirError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            return create_key(dir, &path, false)
        }
        // ELOOP: O_NOFOLLOW met a symbolic link.
        Err(DirError::Io(e))
            if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::LOOP) =>
        {
            "is a symbolic link".to_string()
        }
        Err(DirError::Io(e)) => return Err(e),
        Err(DirError::NotPrivate(reason)) => reason.to_string(),
    };
    tracing::warn!(
        path = %path.display(),
        "the plugin cache's key {problem}: replacing it (cached plugins are recompiled)"
    );
    create_key(dir, &path, true)
}

/// A new random key in a new file (mode 0600), then given its name: hard-linked when there is
/// no key (a link never replaces, so brokers starting at once agree on the first key), renamed
/// over a bad one.
fn create_key(dir: &Path, path: &Path, replace: bool) -> io::Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", random_hex()?));
    let written = private_fs::create_new_private(&tmp).and_then(|mut file| {
        file.write_all(&key)?;
        file.sync_all()
    });
    let named = written.and_then(|()| {
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path)
        }
    });
    let _ = std::fs::remove_file(&tmp);
    match named {
        Ok(()) => Ok(key),
        // Another broker made the key first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !replace => {
            let euid = private_fs::euid();
            let bytes = private_fs::read_no_follow(path, |kind, owner, mode| {
                private_fs::judge_secret(kind, owner, mode, euid)
            })
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
                io::Error::other(format!("{}: not a {KEY_LEN}-byte key", path.display()))
            })
        }
        Err(e) => Err(e),
    }
}

/// The cache name of a component: the sha256 of its bytes and the engine compatibility hash.
pub fn name(wasm_sha256: &[u8], engine_hash: u64) -> String {
    let mut name = String::with_capacity(wasm_sha256.len() * 2 + 17);
    for b in wasm_sha256 {
        let _ = write!(name, "{b:02x}");
    }
    let _ = write!(name, "-{engine_hash:016x}");
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    const A: &str = "aa-0000000000000001";
    const B: &str = "bb-0000000000000001";

    #[test]
    fn the_directory_is_0700_and_the_key_a_0600_file_of_32_random_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = ArtifactCache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let key = dir.join(KEY_FILE);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), cache.key);
        assert_ne!(cache.key, [0; KEY_LEN]);
        assert_eq!(ArtifactCache::open(&dir).unwrap().key, cache.key, "kept");
        let other = ArtifactCache::open(&tmp.path().join("other")).unwrap();
        assert_ne!(other.key, cache.key, "one key per cache");
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left: {entries:?}");
    }

    #[test]
    fn brokers_opening_a_new_cache_at_once_agree_on_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let keys: Vec<[u8; KEY_LEN]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| ArtifactCache::open(&dir).unwrap().key))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
    }

    #[test]
    fn an_artifact_reads_back_only_under_its_own_name_and_unaltered() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        assert!(cache.read(A).unwrap().is_none());
        cache.write(A, b"compiled code").unwrap();
        let path = cache.path(A);
        assert_eq!(mode(&path), 0o600);
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len(), b"compiled code".len() + TAG_LEN);
        assert_eq!(&file[..13], b"compiled code");
        assert_eq!(cache.read(A).unwrap().unwrap().bytes(), b"compiled code");

        // Copied under another component's name.
        std::fs::write(cache.path(B), &file).unwrap();
        assert!(matches!(cache.read(B), Err(Rejected::BadTag)));
        // One bit of the code changed, or of the tag.
        for at in [0, file.len() - 1] {
            let mut altered = file.clone();
            altered[at] ^= 1;
            std::fs::write(&path, &altered).unwrap();
            assert!(matches!(cache.read(A), Err(Rejected::BadTag)), "{at}");
        }
        // Torn, or written without a tag (as before tags existed).
        std::fs::write(&path, &file[..file.len() - 1]).unwrap();
        assert!(matches!(cache.read(A), Err(Rejected::BadTag)));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(cache.read(A), Err(Rejected::NoTag)));
        // Written again: good again.
        cache.write(A, b"compiled code").unwrap();
        assert!(cache.read(A).unwrap().is_some());
    }

    #[test]
    fn artifacts_tagged_with_another_key_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        cache.write(A, b"code").unwrap();
        std::fs::remove_file(tmp.path().join(KEY_FILE)).unwrap();
        let renewed = ArtifactCache::open(tmp.path()).unwrap();
        assert_ne!(renewed.key, cache.key);
        assert!(matches!(renewed.read(A), Err(Rejected::BadTag)));
    }

    #[test]
    fn a_key_others_could_read_or_a_linked_key_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = ArtifactCache::open(&dir).unwrap();
        cache.write(A, b"code").unwrap();
        let key = dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let renewed = ArtifactCache::open(&dir).unwrap();
        assert_ne!(renewed.key, cache.key);
        assert_eq!(mode(&key), 0o600);
        assert!(matches!(renewed.read(A), Err(Rejected::BadTag)));

        // A key file that is a symbolic link to someone's known key is not followed.
        let planted = tmp.path().join("planted");
        std::fs::write(&planted, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&planted, &key).unwrap();
        let relinked = ArtifactCache::open(&dir).unwrap();
        assert_ne!(relinked.key, [7u8; KEY_LEN]);
        assert!(!std::fs::symlink_metadata(&key).unwrap().is_symlink());
        assert_eq!(std::fs::read(&planted).unwrap(), [7u8; KEY_LEN]);

        // Wrong length.
        std::fs::remove_file(&key).unwrap();
        std::fs::write(&key, b"short").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"short");
        let rekeyed = ArtifactCache::open(&dir).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), rekeyed.key);
    }

    /// Owned by another user, for real: possible when the tests run as root.
    #[test]
    fn a_directory_or_key_of_another_user_is_not_trusted() {
        if private_fs::euid() != 0 {
            return; // private_fs's judge tests cover the rule
        }
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let err = ArtifactCache::open(&theirs).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");

        let dir = tmp.path().join("cache");
        let cache = ArtifactCache::open(&dir).unwrap();
        std::os::unix::fs::chown(dir.join(KEY_FILE), Some(65534), None).unwrap();
        let renewed = ArtifactCache::open(&dir).unwrap();
        assert_ne!(renewed.key, cache.key);
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join(KEY_FILE)).unwrap()),
            0
        );
    }

    #[test]
    fn artifact_files_are_never_followed_through_a_symbolic_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = ArtifactCache::open(&dir).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"not yours").unwrap();
        std::os::unix::fs::symlink(&outside, cache.path(A)).unwrap();
        assert!(matches!(cache.read(A), Err(Rejected::Io(_))));
        cache.write(A, b"code").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
        assert!(!std::fs::symlink_metadata(cache.path(A))
            .unwrap()
            .is_symlink());
        assert!(cache.read(A).unwrap().is_some());
    }

    #[test]
    fn an_open_or_linked_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ArtifactCache::open(&open).unwrap_err();
        assert!(matches!(err, CacheError::NotPrivate { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&open.display().to_string()) && text.contains("0777"),
            "{text}"
        );
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ArtifactCache::open(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(ArtifactCache::open_or_log(&link).is_none());
        for d in [&open, &real] {
            assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing written");
        }
    }
}
