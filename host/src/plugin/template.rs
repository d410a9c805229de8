//! `plugboard plugin new NAME --lang L`: writes a plugin project (Rust, JavaScript or Python)
//! from the templates in `examples/templates/`, embedded in the binary, with the samples file
//! that `plugboard plugin check` runs (see `check.rs`).

use std::path::{Path, PathBuf};

/// A plugin language `plugin new` can start a project in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A cargo project for `wasm32-wasip2` using the plugin SDK.
    Rust,
    /// A JavaScript module componentized with componentize-js.
    Js,
    /// A Python module componentized with componentize-py.
    Python,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Lang, String> {
        match s {
            "rust" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::Js),
            "python" | "py" => Ok(Lang::Python),
            other => Err(format!("unknown language `{other}`: rust, js or python")),
        }
    }
}

const WIT: &str = include_str!("../../../wit/plugin.wit");
const RUST_CARGO: &str = include_str!("../../../examples/templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../../../examples/templates/rust/src/lib.rs");
const JS_PLUGIN: &str = include_str!("../../../examples/templates/js/plugin.js");
const JS_MANIFEST: &str = include_str!("../../../examples/templates/js/plugboard.toml");
const PY_APP: &str = include_str!("../../../examples/templates/python/app.py");
const PY_MANIFEST: &str = include_str!("../../../examples/templates/python/plugboard.toml");
const SAMPLES: &str = include_str!("../../../examples/templates/samples.toml");
const README: &str = include_str!("../../../examples/templates/README.md.tmpl");

/// Writes a new plugin project `dir/name` (which must not exist) and returns its path and the
/// files written. `sdk` is the path of the `plugboard-sdk` crate for Rust projects.
pub fn new_project(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: &Path,
) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(format!(
            "`{name}`: a plugin name is lowercase letters, digits and `-`, starting with a letter"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
            .replace(
                "{{lang}}",
                match lang {
                    Lang::Rust => "rust",
                    Lang::Js => "js",
                    Lang::Python => "python",
                },
            )
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (PathBuf::from("samples.toml"), fill(SAMPLES)),
        (PathBuf::from("README.md"), fill(README)),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(RUST_CARGO)));
            files.push(("src/lib.rs".into(), fill(RUST_LIB)));
        }
        Lang::Js => {
            files.push(("plugin.js".into(), fill(JS_PLUGIN)));
            files.push(("plugboard.toml".into(), JS_MANIFEST.to_string()));
            files.push(("wit/plugin.wit".into(), WIT.to_string()));
        }
        Lang::Python => {
            files.push(("app.py".into(), fill(PY_APP)));
            files.push(("plugboard.toml".into(), PY_MANIFEST.to_string()));
            files.push(("wit/plugin.wit".into(), WIT.to_string()));
        }
    }
    let mut written = Vec::new();
    for (path, text) in files {
        let full = root.join(&path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&full, text).map_err(|e| format!("{}: {e}", full.display()))?;
        written.push(full);
    }
    Ok((root, written))
}

/// Where the SDK crate is: next to the running binary's source tree when it was built from this
/// repository, else `plugins/sdk` under the current directory.
pub fn default_sdk_path() -> PathBuf {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    match built_from.canonicalize() {
        Ok(path) => path,
        Err(_) => PathBuf::from("plugins/sdk"),
    }
}
