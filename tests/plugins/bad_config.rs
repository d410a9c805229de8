//! Plugin configs the broker must refuse, with `--check-config` and at start-up, and the demo
//! config that it must accept.

use crate::support::*;

/// A temporary config with one `[[plugins]]` entry: `name` running `file` on `hook`, then
/// `rest` (more keys of the entry, and its config tables).
fn one_plugin(name: &str, file: &str, hook: &str, rest: &str) -> TempConfig {
    temp_config(&format!(
        "\n[[plugins]]\nname = \"{name}\"\nfile = \"{file}\"\nhooks = [\"{hook}\"]\n{rest}"
    ))
}

/// `what`'s stderr names the plugin and gives every part of the reason.
fn assert_names(what: &str, stderr: &str, plugin_name: &str, reason: &[&str]) {
    assert!(
        stderr.contains(&format!("`{plugin_name}`")),
        "{what} must name the plugin `{plugin_name}`: {stderr:?}"
    );
    for needle in reason {
        assert!(
            stderr.contains(needle),
            "{what} must give the reason ({needle:?}): {stderr:?}"
        );
    }
}

/// `--check-config` fails naming the plugin and the reason, and the broker refuses to start.
fn assert_refused(config: &TempConfig, plugin_name: &str, reason: &[&str]) {
    let check = check_config(&config.path);
    assert!(
        !check.status.success(),
        "--check-config must fail; stdout: {:?}; stderr: {:?}",
        check.stdout,
        check.stderr
    );
    assert_names("--check-config", &check.stderr, plugin_name, reason);
    assert!(
        !check.stdout.contains("configuration OK"),
        "stdout: {:?}",
        check.stdout
    );

    let start = start_must_fail(&config.path);
    assert!(
        !start.status.success(),
        "the broker must not start; stdout: {:?}",
        start.stdout
    );
    assert!(
        !start.stdout.contains("listening on"),
        "the broker must not listen with a bad plugin: {:?}",
        start.stdout
    );
    assert_names("the start-up error", &start.stderr, plugin_name, reason);
}

#[test]
fn check_config_accepts_the_demo() {
    let check = check_config(&demo_config());
    assert!(
        check.status.success(),
        "--check-config examples/plugboard.toml: {}\nstdout: {}\nstderr: {}",
        check.status,
        check.stdout,
        check.stderr
    );
    assert!(
        check.stdout.contains("4 plugin(s)"),
        "stdout: {:?}",
        check.stdout
    );
}

#[test]
fn a_header_router_rule_with_a_relative_target_is_refused() {
    let config = one_plugin(
        "bad-router",
        &plugin("header-router"),
        "send",
        r#"destinations = ["/queue/orders"]

[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "eu"
to = ["queue/orders.eu"]
"#,
    );
    assert_refused(
        &config,
        "bad-router",
        &["queue/orders.eu", "must start with `/`"],
    );
}

#[test]
fn a_header_router_rule_missing_its_targets_is_refused() {
    let config = one_plugin(
        "incomplete-router",
        &plugin("header-router"),
        "send",
        r#"
[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "eu"
"#,
    );
    assert_refused(&config, "incomplete-router", &["to"]);
}

/// A static-auth plugin `auth` with one user, `carol`, whose other keys are `fields`.
fn static_auth_user(fields: &str) -> TempConfig {
    one_plugin(
        "auth",
        &plugin("static-auth"),
        "authenticate",
        &format!("\n[[plugins.config.users]]\nname = \"carol\"\n{fields}"),
    )
}

#[test]
fn a_static_auth_user_without_a_password_hash_is_refused() {
    let config = static_auth_user("salt = \"abc\"\nmay_send = [\"*\"]\n");
    assert_refused(&config, "auth", &["password_sha256"]);
}

#[test]
fn a_static_auth_plain_text_password_is_refused() {
    let config = static_auth_user("salt = \"abc\"\npassword_sha256 = \"carol-secret\"\n");
    assert_refused(&config, "auth", &["carol", "64 hex"]);
}

#[test]
fn a_missing_wasm_file_is_a_clear_error() {
    let missing = plugins_dir().join("no-such-plugin.wasm");
    let config = one_plugin("ghost", &missing.display().to_string(), "send", "");
    assert_refused(&config, "ghost", &["no-such-plugin.wasm"]);
}

#[test]
fn a_relative_wasm_path_is_resolved_against_the_config_directory() {
    // The temp config's directory has no target/plugins: the error must show where it looked.
    let config = one_plugin("router", "../target/plugins/header-router.wasm", "send", "");
    let dir = config.path.parent().expect("config dir").to_path_buf();
    let check = check_config(&config.path);
    assert!(!check.status.success(), "stderr: {:?}", check.stderr);
    assert!(
        check.stderr.contains("`router`") && check.stderr.contains("header-router.wasm"),
        "stderr must name the plugin and the file: {:?}",
        check.stderr
    );
    // Either spelling of the resolved path will do: DIR/../target/... or PARENT/target/...
    let raw = dir.join("../target/plugins").display().to_string();
    let normalized = dir
        .parent()
        .expect("tmp")
        .join("target/plugins")
        .display()
        .to_string();
    assert!(
        check.stderr.contains(&raw) || check.stderr.contains(&normalized),
        "stderr should show the resolved path ({raw} or {normalized}): {:?}",
        check.stderr
    );
}
