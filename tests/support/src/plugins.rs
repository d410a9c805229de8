//! The plugin components: built once per test binary by `cargo xtask plugins` into
//! `target/plugins`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (this crate is `tests/support/` in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support/ is in the workspace")
        .to_path_buf()
}

/// What a test binary does when `cargo xtask plugins` fails.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IfBuildFails {
    /// Fail: the tests need freshly built components.
    Panic,
    /// Go on with the components already in `target/plugins` (a failure elsewhere in the
    /// plugin workspace, say someone's plugin under construction, must not hide other bugs);
    /// [`component`] still fails when one is missing.
    UsePrebuilt,
}

/// Runs `cargo xtask plugins` once per test binary; whether it succeeded.
fn build() -> bool {
    static BUILT: OnceLock<bool> = OnceLock::new();
    *BUILT.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // xtask in its own target dir: the outer `cargo test` may still hold target/'s lock.
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["run", "--quiet", "-p", "xtask", "--target-dir"])
            .arg(root.join("target").join("xtask"))
            .args(["--", "plugins"])
            .status()
            .expect("running cargo xtask plugins");
        if !status.success() {
            eprintln!("warning: `cargo xtask plugins` failed ({status})");
        }
        status.success()
    })
}

/// Builds every plugin component (once per test binary) and returns `target/plugins`.
pub fn plugins_dir(if_fails: IfBuildFails) -> PathBuf {
    let built = build();
    assert!(
        built || if_fails == IfBuildFails::UsePrebuilt,
        "`cargo xtask plugins` failed: the plugin tests need the components"
    );
    workspace_root().join("target").join("plugins")
}

/// Absolute path of a compiled plugin component (`NAME.wasm`), building them first.
pub fn component(name: &str, if_fails: IfBuildFails) -> PathBuf {
    let path = plugins_dir(if_fails).join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}
