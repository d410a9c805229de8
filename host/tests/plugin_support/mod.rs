//! Shared setup of the plugin-host tests: builds the real components once (`cargo xtask
//! plugins`, never skipped), loads plugin sets, and makes messages.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use plugboard::plugin::{PluginHost, PluginMessage, PluginSpec, Principal};

use plugboard_test_support::plugins as components;

pub use components::workspace_root;

/// Builds every plugin component (once per test binary, never skipped) and returns
/// `target/plugins`.
pub fn plugins_dir() -> PathBuf {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("plugboard=debug")
        .try_init();
    components::plugins_dir(components::IfBuildFails::Panic)
}

pub fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("plugin-test-cache")
}

/// Parses `[[plugins]]` entries.
pub fn specs(toml_text: &str) -> Vec<PluginSpec> {
    #[derive(serde::Deserialize)]
    struct Doc {
        plugins: Vec<PluginSpec>,
    }
    toml::from_str::<Doc>(toml_text)
        .expect("valid plugin config")
        .plugins
}

/// Loads `[[plugins]]` entries whose `file`s are relative to `target/plugins`.
pub async fn load(toml_text: &str) -> Arc<PluginHost> {
    try_load(toml_text)
        .await
        .unwrap_or_else(|e| panic!("loading plugins: {e}"))
}

pub async fn try_load(toml_text: &str) -> Result<Arc<PluginHost>, plugboard::plugin::PluginError> {
    let dir = plugins_dir();
    PluginHost::load(&specs(toml_text), &dir, &cache_dir()).await
}

pub fn msg(destination: &str, headers: &[(&str, &str)], body: &str) -> PluginMessage {
    PluginMessage {
        destination: Bytes::copy_from_slice(destination.as_bytes()),
        headers: header_list(headers),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// Headers as the plugin host takes them.
pub fn header_list(headers: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                Bytes::copy_from_slice(n.as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect()
}

#[allow(dead_code)] // plugin_hostile reads no headers
pub fn header<'a>(m: &'a PluginMessage, name: &str) -> Option<&'a [u8]> {
    m.headers
        .iter()
        .find(|(n, _)| &n[..] == name.as_bytes())
        .map(|(_, v)| &v[..])
}

pub fn alice() -> Principal {
    Principal::named("alice")
}
