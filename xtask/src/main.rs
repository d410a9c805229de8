//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! `cargo xtask plugins` builds every plugin into `target/plugins/<name>.wasm`:
//! - each crate under `plugins/` for `wasm32-wasip2` in release mode (installing the target with
//!   rustup when it is missing), except library crates that say
//!   `[package.metadata.plugboard] plugin = false` (the SDK);
//! - each JavaScript plugin `plugins-js/<name>/` with componentize-js, and each Python plugin
//!   `plugins-python/<name>/` with componentize-py (see `lang.rs`; their tools are installed from
//!   npm and PyPI into `target/` when missing, and a build is skipped when its inputs are unchanged).
//!
//! The Rust plugins build in their own target directory (`target/plugin-build`) so that this never
//! waits on, or invalidates, the host's build, which matters because the host's tests run this
//! command from inside `cargo test`.

mod lang;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plugins") => build_plugins(&args[1..]),
        _ => Err(
            "usage: cargo xtask plugins [NAME...]\n\n  plugins  build plugins/* (Rust), \
                  plugins-js/* and plugins-python/* into target/plugins/<name>.wasm (all when no \
                  NAME is given)"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

/// Every plugin crate directory under `plugins/`, sorted (library crates skipped).
fn plugin_crates(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("plugins");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("Cargo.toml"))
                .is_ok_and(|manifest| !is_library(&manifest))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Whether a crate's manifest says `plugin = false` under `[package.metadata.plugboard]`.
fn is_library(manifest: &str) -> bool {
    let mut in_section = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[package.metadata.plugboard]";
        } else if in_section && line.replace(' ', "") == "plugin=false" {
            return true;
        }
    }
    false
}

fn ensure_target() -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("running rustup: {e}"))?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the {TARGET} target with rustup");
    run(Command::new("rustup").args(["target", "add", TARGET]))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn build_plugins(only: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let mut names = plugin_crates(&root)?;
    let mut others = lang::plugins(&root)?;
    if !only.is_empty() {
        let known = |n: &String| names.contains(n) || others.iter().any(|p| &p.name == n);
        if let Some(unknown) = only.iter().find(|n| !known(n)) {
            return Err(format!(
                "no plugin named `{unknown}` under plugins/, plugins-js/ or plugins-python/"
            ));
        }
        names.retain(|n| only.contains(n));
        others.retain(|p| only.contains(&p.name));
    }
    if !names.is_empty() {
        build_rust(&root, &names)?;
    }
    lang::build(&root, &others)
}

fn build_rust(root: &Path, names: &[String]) -> Result<(), String> {
    ensure_target()?;
    let build_dir = root.join("target").join("plugin-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for name in names {
        // The crates are rlibs (so that they test natively); ask for the component here.
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root)
            .args([
                "rustc",
                "--quiet",
                "--release",
                "--target",
                TARGET,
                "--crate-type",
                "cdylib",
            ])
            .args(["-p", name, "--target-dir"])
            .arg(&build_dir)
            // Small components that still name their functions in trap backtraces.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        run(&mut cmd)?;
    }

    let out_dir = root.join("target").join("plugins");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for name in names {
        let built = build_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        install(&built, &out_dir, name)?;
    }
    Ok(())
}

/// Copies a built component to `out_dir/<name>.wasm`: copy then rename, so a concurrent reader
/// never sees half a file.
fn install(built: &Path, out_dir: &Path, name: &str) -> Result<(), String> {
    let dest = out_dir.join(format!("{name}.wasm"));
    let tmp = out_dir.join(format!(".{name}.wasm.{}", std::process::id()));
    std::fs::copy(built, &tmp).map_err(|e| format!("{}: {e}", built.display()))?;
    std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    eprintln!("xtask: {}", dest.display());
    Ok(())
}
