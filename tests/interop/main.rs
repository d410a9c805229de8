//! Interop: the broker driven by stomp.py, a STOMP client nobody on this project wrote, over
//! STOMP 1.0, 1.1 and 1.2 (`stomp_py_check.py` holds the checks).
//!
//! The test setup creates a virtualenv at `target/interop-venv` (once, guarded against
//! parallel tests) and installs a pinned stomp.py into it. A missing python3, venv module or
//! pip is a test failure with the reason, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod tls;

plugboard_test_support::broker_binary!();

mod console;
mod reauth;
mod websocket;

use harness::Broker;

/// The stomp.py release the checks are written against (the newest on PyPI when pinned).
const STOMP_PY: &str = "stomp.py==9.0.0";

static VENV_LOCK: Mutex<()> = Mutex::new(());

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A cross-process lock (a directory that only one process can create), so two test
/// processes never build the venv at once. A stale lock (older than 10 minutes) is broken.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: PathBuf) -> DirLock {
        let start = Instant::now();
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return DirLock(path),
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
                    assert!(
                        start.elapsed() < Duration::from_secs(600),
                        "waited 10 minutes for {} (remove it if no test is running)",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create lock {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The venv's python, with stomp.py installed; created on first use.
fn venv_python() -> PathBuf {
    venv("interop-venv", &[STOMP_PY])
}

/// `target/NAME/bin/python` of a virtualenv with `requirements` (pinned pip specs) installed;
/// created on first use, and again when the requirements change.
fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let _guard = VENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = target_dir();
    std::fs::create_dir_all(&target).expect("create target dir");
    let venv = target.join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join(".plugboard-ready");
    let wanted = requirements.join("\n");
    let ready =
        || std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == wanted) && python.exists();
    if ready() {
        return python;
    }
    let _lock = DirLock::acquire(target.join(format!("{name}.lock")));
    if ready() {
        return python;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove incomplete venv");
    }
    let base = std::env::var("PLUGBOARD_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let version = Command::new(&base).arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{base} --version` failed: {}{}; the interop test needs Python 3 (apt-get install python3 python3-venv)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run `{base}`: {e}; the interop test needs Python 3 with venv and pip \
             (apt-get install python3 python3-venv python3-pip, or set PLUGBOARD_PYTHON)"
        ),
    }
    run(
        "creating a test virtualenv (needs the python3 venv module: apt-get install python3-venv)",
        Command::new(&base).arg("-m").arg("venv").arg(&venv),
    );
    run(
        &format!(
            "installing {} into {name} (needs pip and access to PyPI)",
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
    );
    std::fs::write(&marker, wanted).expect("write venv marker");
    python
}

/// How a bounded script run ended: its exit status (`None`: it hung and was killed) and output.
struct ScriptRun {
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `python script ARGS`, killed after `within`; both pipes are drained while waiting, so
/// a chatty script never blocks on a full pipe.
fn run_bounded(
    python: &Path,
    script: &Path,
    args: &[std::ffi::OsString],
    within: Duration,
) -> ScriptRun {
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ScriptRun {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `python script ARGS`, bounded by `within`; its stdout, or a panic with its output
/// when it fails or hangs.
fn run_script(
    what: &str,
    python: &Path,
    script: &Path,
    args: &[String],
    within: Duration,
) -> String {
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let ScriptRun {
        status,
        stdout,
        stderr,
    } = run_bounded(python, script, &args, within);
    match status {
        Some(s) if s.success() => stdout,
        Some(s) => panic!("{what} failed ({s})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"),
        None => panic!("{what} hung (killed after {within:?})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"),
    }
}

const CONFIG: &str = "[heartbeat]\nsend_min_ms = 100\nreceive_min_ms = 100\n";

fn stomp_py_check(version: &str) {
    let python = venv_python();
    let broker = Broker::with_config(CONFIG);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/stomp_py_check.py");
    let args = [
        "--host".to_string(),
        broker.addr.ip().to_string(),
        "--port".to_string(),
        broker.addr.port().to_string(),
        "--version".to_string(),
        version.to_string(),
    ];
    // The script's own waits are short: 120 s means it hung.
    let stdout = run_script(
        &format!("stomp.py check for STOMP {version}"),
        &python,
        &script,
        &args,
        Duration::from_secs(120),
    );
    eprintln!("{}", stdout.trim());
}

#[test]
fn stomp_py_1_0() {
    stomp_py_check("1.0");
}

#[test]
fn stomp_py_1_1() {
    stomp_py_check("1.1");
}

#[test]
fn stomp_py_1_2() {
    stomp_py_check("1.2");
}
