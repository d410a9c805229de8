//! The `[[vhosts]]` section and `default_vhost`: which virtual hosts exist, which plugins apply
//! in each, and where a CONNECT whose `host` names none of them goes. Checked when the file is
//! read, with an error naming the entry.

use std::collections::HashSet;

use serde::Deserialize;

use crate::plugin::PluginSpec;

/// Most `[[vhosts]]` entries: each has its own name table, scheduler and plugin chains, and
/// the `/status` and `/metrics` output lists every one.
pub const MAX_VHOSTS: usize = 64;
/// Longest vhost name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// The name of the one vhost of a broker configured without `[[vhosts]]` (RabbitMQ's default).
pub const DEFAULT_NAME: &str = "/";

/// One `[[vhosts]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostConfig {
    /// The name a CONNECT's `host` header must carry exactly to enter it.
    pub name: String,
    /// The `[[plugins]]` entries (by `name`) whose hooks run for this vhost's connections, in
    /// the plugins' config order; absent: every plugin. An empty list: none (the built-in
    /// `[[users]]` or anonymous login, no interception).
    pub plugins: Option<Vec<String>>,
}

/// Checks `vhosts` and `default_vhost` against each other and against the plugin entries.
pub fn validate(
    vhosts: &[VhostConfig],
    default_vhost: Option<&str>,
    plugins: &[PluginSpec],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        vhosts.len() <= MAX_VHOSTS,
        "[[vhosts]]: {} entries, at most {MAX_VHOSTS} are allowed",
        vhosts.len()
    );
    let mut names = HashSet::new();
    for vhost in vhosts {
        let name = &vhost.name;
        anyhow::ensure!(
            !name.is_empty() && name.len() <= MAX_NAME_BYTES,
            "[[vhosts]] name {name:?}: must be 1 to {MAX_NAME_BYTES} bytes"
        );
        anyhow::ensure!(
            !name.chars().any(|c| c.is_control()),
            "[[vhosts]] name {name:?}: control characters are not allowed"
        );
        anyhow::ensure!(
            names.insert(name.as_str()),
            "[[vhosts]] name {name:?} is listed twice"
        );
        let mut listed = HashSet::new();
        for plugin in vhost.plugins.iter().flatten() {
            anyhow::ensure!(
                plugins.iter().any(|p| &p.name == plugin),
                "[[vhosts]] {name:?}: plugin {plugin:?} is not a [[plugins]] entry"
            );
            anyhow::ensure!(
                listed.insert(plugin.as_str()),
                "[[vhosts]] {name:?}: plugin {plugin:?} is listed twice"
            );
        }
    }
    if let Some(default) = default_vhost {
        anyhow::ensure!(
            !vhosts.is_empty(),
            "default_vhost = {default:?} needs [[vhosts]] entries (without them every host \
             enters the one vhost \"/\")"
        );
        anyhow::ensure!(
            names.contains(default),
            "default_vhost = {default:?} is not the name of a [[vhosts]] entry"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const PLUGINS: &str =
        "[[plugins]]\nname = \"redact\"\nfile = \"r.wasm\"\nhooks = [\"message\"]\n";

    fn error(toml: &str) -> String {
        format!("{:#}", Config::from_toml(toml).unwrap_err())
    }

    #[test]
    fn vhosts_parse_with_their_plugins_and_default() {
        let config = Config::from_toml(&format!(
            "default_vhost = \"b\"\n{PLUGINS}[[vhosts]]\nname = \"a\"\nplugins = [\"redact\"]\n\
             [[vhosts]]\nname = \"b\"\n"
        ))
        .unwrap();
        assert_eq!(config.vhosts.len(), 2);
        assert_eq!(config.vhosts[0].plugins, Some(vec!["redact".to_string()]));
        assert_eq!(config.vhosts[1].plugins, None);
        assert_eq!(config.default_vhost.as_deref(), Some("b"));
        assert!(Config::from_toml("").unwrap().vhosts.is_empty());
    }

    #[test]
    fn bad_vhost_sections_are_refused_with_a_reason() {
        let dup = error("[[vhosts]]\nname = \"a\"\n[[vhosts]]\nname = \"a\"\n");
        assert!(dup.contains("listed twice"), "{dup}");
        let unknown = error("[[vhosts]]\nname = \"a\"\nplugins = [\"nope\"]\n");
        assert!(
            unknown.contains("\"nope\" is not a [[plugins]] entry"),
            "{unknown}"
        );
        let twice = error(&format!(
            "{PLUGINS}[[vhosts]]\nname = \"a\"\nplugins = [\"redact\", \"redact\"]\n"
        ));
        assert!(twice.contains("listed twice"), "{twice}");
        let bad_default = error("default_vhost = \"c\"\n[[vhosts]]\nname = \"a\"\n");
        assert!(
            bad_default.contains("not the name of a [[vhosts]]"),
            "{bad_default}"
        );
        let lonely_default = error("default_vhost = \"/\"\n");
        assert!(
            lonely_default.contains("needs [[vhosts]]"),
            "{lonely_default}"
        );
        let empty = error("[[vhosts]]\nname = \"\"\n");
        assert!(empty.contains("1 to 255 bytes"), "{empty}");
        let control = error("[[vhosts]]\nname = \"a\\nb\"\n");
        assert!(control.contains("control characters"), "{control}");
        let many: String = (0..=super::MAX_VHOSTS)
            .map(|i| format!("[[vhosts]]\nname = \"v{i}\"\n"))
            .collect();
        assert!(error(&many).contains("at most 64"));
        let typo = error("[[vhosts]]\nname = \"a\"\nplugin = []\n");
        assert!(typo.contains("plugin"), "{typo}");
    }
}
