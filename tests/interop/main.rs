//! Interop: the broker driven by stomp.py, a STOMP client nobody on this project wrote, over
//! STOMP 1.0, 1.1 and 1.2 (`stomp_py_check.py` holds the checks).
//!
//! The test setup creates a virtualenv at `target/interop-venv` (once, guarded against
//! parallel tests) and installs a pinned stomp.py into it. A missing python3, venv module or
//! pip is a test failure with the reason, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod tls;

plugboard_test_support::broker_binary!();

mod console;
mod reauth;
mod websocket;

use harness::Broker;
use plugboard_test_support::venv::DirLock;

/// The stomp.py release the checks are written against (the newest on PyPI when pinned).
const STOMP_PY: &str = "stomp.py==9.0.0";

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

/// The venv's python, with stomp.py installed; created on first use.
fn venv_python() -> PathBuf {
    venv("interop-venv", &[STOMP_PY])
}

/// `target/NAME/bin/python` of a virtualenv with `requirements` (pinned pip specs) installed;
/// created on first use, and again when the requirements change. A missing python3, venv
/// module, pip or PyPI is a test failure with the reason.
fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    plugboard_test_support::venv::venv(&target_dir(), name, requirements).unwrap_or_else(|e| {
        panic!(
            "the interop tests need Python 3 with venv and pip (apt-get install python3 \
             python3-venv python3-pip, or set PLUGBOARD_PYTHON) and access to PyPI: {e}"
        )
    })
}

/// Holds the cross-process lock at `path` (see `DirLock`), or fails the test.
fn lock(path: PathBuf) -> DirLock {
    DirLock::acquire(path).unwrap_or_else(|e| panic!("{e}"))
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
    // The script's own waits are short: 120 s means it hung.
    run_stomp_py(
        "stomp_py_check.py",
        "check",
        CONFIG,
        version,
        Duration::from_secs(120),
    );
}

/// Runs the stomp.py script `script` (in tests/interop) against a broker with `config`, for
/// STOMP `version`, failing the test when it fails or takes longer than `within`.
fn run_stomp_py(script: &str, what: &str, config: &str, version: &str, within: Duration) {
    let python = venv_python();
    let broker = Broker::with_config(config);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/interop")
        .join(script);
    let args = [
        "--host".to_string(),
        broker.addr.ip().to_string(),
        "--port".to_string(),
        broker.addr.port().to_string(),
        "--version".to_string(),
        version.to_string(),
    ];
    let stdout = run_script(
        &format!("stomp.py {what} for STOMP {version}"),
        &python,
        &script,
        &args,
        within,
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
