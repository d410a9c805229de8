//! JavaScript and Python plugins: `plugins-js/<name>/` and `plugins-python/<name>/`, each with a
//! `plugboard.toml` naming its WIT world (`world = "router"`) and its entry point (`main =
//! "plugin.js"` for JavaScript, the module `app` (`app.py`) for Python unless `main` says another).
//!
//! The tools are pinned and installed into the build tree when missing:
//! - componentize-js from npm into `target/js-tools` (`npm install --prefix`), driven by
//!   `xtask/js/componentize.mjs` (the `jco componentize` command line failed on this machine;
//!   the library works). Every WASI feature is disabled: the component imports only `log`.
//! - componentize-py from PyPI into a venv `target/py-tools`, run with `--stub-wasi` so the
//!   component imports no WASI at all.
//!
//! The JavaScript and Python templates of `plugboard plugin new` (`examples/templates/`) are
//! built too, as `template-js` and `template-python`.
//!
//! A build takes 10–25 s, so each is skipped when a stamp of its inputs (sources, the WIT, the
//! tool version) matches the last build's.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{install, run};

/// The pinned componentize-js (npm).
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The pinned componentize-py (PyPI).
pub const COMPONENTIZE_PY: &str = "0.25.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Js,
    Python,
}

/// One non-Rust plugin.
#[derive(Debug)]
pub struct Plugin {
    pub name: String,
    pub lang: Lang,
    pub dir: PathBuf,
    pub world: String,
    pub main: String,
}

/// Every JavaScript and Python plugin, sorted by name.
pub fn plugins(root: &Path) -> Result<Vec<Plugin>, String> {
    let mut found = Vec::new();
    for (lang, sub, default_main) in [
        (Lang::Js, "plugins-js", "plugin.js"),
        (Lang::Python, "plugins-python", "app"),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let dir = entry.path();
            let Ok(text) = std::fs::read_to_string(dir.join("plugboard.toml")) else {
                continue;
            };
            let world = value(&text, "world")
                .ok_or_else(|| format!("{}: `world = \"...\"` is missing", dir.display()))?;
            let main = value(&text, "main").unwrap_or_else(|| default_main.to_string());
            found.push(Plugin {
                name: entry.file_name().to_string_lossy().into_owned(),
                lang,
                dir,
                world,
                main,
            });
        }
    }
    // The `plugboard plugin new` templates, built so that the tests check what users start from.
    for (lang, sub, name) in [
        (Lang::Js, "js", "template-js"),
        (Lang::Python, "python", "template-python"),
    ] {
        let dir = root.join("examples/templates").join(sub);
        let text = std::fs::read_to_string(dir.join("plugboard.toml"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        found.push(Plugin {
            name: name.into(),
            lang,
            world: value(&text, "world").unwrap_or_default(),
            main: value(&text, "main").unwrap_or_default(),
            dir,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// `key = "value"` in a flat TOML file.
fn value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

pub fn build(root: &Path, plugins: &[Plugin]) -> Result<(), String> {
    let out_dir = root.join("target").join("plugins");
    let stamps = root.join("target").join("plugin-build").join("stamps");
    for dir in [&stamps, &out_dir] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for plugin in plugins {
        let stamp = stamp_of(root, plugin)?;
        let stamp_file = stamps.join(&plugin.name);
        let dest = out_dir.join(format!("{}.wasm", plugin.name));
        if dest.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
            eprintln!("xtask: {} (up to date)", dest.display());
            continue;
        }
        let built = root
            .join("target")
            .join("plugin-build")
            // Per process: two concurrent `cargo xtask plugins` (test binaries of several
            // sessions) must not write the same file.
            .join(format!("{}.{}.wasm", plugin.name, std::process::id()));
        let wit = root.join("wit");
        match plugin.lang {
            Lang::Js => {
                let tools = js_tools(root)?;
                run(Command::new("node")
                    .arg(root.join("xtask/js/componentize.mjs"))
                    .arg(&tools)
                    .arg(plugin.dir.join(&plugin.main))
                    .arg(&wit)
                    .arg(&plugin.world)
                    .arg(&built))?;
            }
            Lang::Python => {
                let tool = py_tool(root)?;
                run(Command::new(tool)
                    .current_dir(&plugin.dir)
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", &plugin.world, "componentize", &plugin.main, "-o"])
                    .arg(&built)
                    .arg("--stub-wasi"))?;
            }
        }
        install(&built, &out_dir, &plugin.name)?;
        let _ = std::fs::remove_file(&built);
        std::fs::write(&stamp_file, stamp).map_err(|e| format!("{}: {e}", stamp_file.display()))?;
    }
    Ok(())
}

/// A hash of what a build depends on: the plugin's files, the WIT and the tool versions.
fn stamp_of(root: &Path, plugin: &Plugin) -> Result<String, String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(COMPONENTIZE_JS.as_bytes());
    hasher.write(COMPONENTIZE_PY.as_bytes());
    hasher.write(plugin.world.as_bytes());
    let mut files = vec![
        root.join("wit/plugin.wit"),
        root.join("xtask/js/componentize.mjs"),
    ];
    let mut dirs = vec![plugin.dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || name == "node_modules" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        hasher.write(file.to_string_lossy().as_bytes());
        hasher.write(&std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    Ok(format!("{:016x}\n", hasher.finish()))
}

/// `target/js-tools` with componentize-js installed (from npm, when missing).
pub fn js_tools(root: &Path) -> Result<PathBuf, String> {
    let tools = root.join("target").join("js-tools");
    let package = tools.join("node_modules/@bytecodealliance/componentize-js/package.json");
    let installed = std::fs::read_to_string(&package)
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{COMPONENTIZE_JS}\"")));
    if !installed {
        eprintln!(
            "xtask: installing componentize-js {COMPONENTIZE_JS} from npm into {}",
            tools.display()
        );
        std::fs::create_dir_all(&tools).map_err(|e| format!("{}: {e}", tools.display()))?;
        run(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&tools)
            .arg(format!(
                "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
            )))
        .map_err(|e| format!("{e} (JavaScript plugins need node and npm)"))?;
    }
    Ok(tools)
}

/// `target/py-tools/bin/componentize-py` (installed from PyPI into a venv, when missing).
pub fn py_tool(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join("target").join("py-tools");
    let tool = venv.join("bin").join("componentize-py");
    let version = Command::new(&tool).arg("--version").output();
    let installed =
        version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY));
    if !installed {
        eprintln!(
            "xtask: installing componentize-py {COMPONENTIZE_PY} from PyPI into {}",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .map_err(|e| format!("{e} (Python plugins need python3 with venv)"))?;
        run(Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}")))?;
    }
    Ok(tool)
}
