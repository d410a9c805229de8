//! Plugin configs the broker must refuse, with `--check-config` and at start-up, and the demo
//! config that it must accept.

use crate::support::*;

/// `--check-config` fails naming the plugin and the reason, and the broker refuses to start.
fn assert_refused(config: &TempConfig, plugin_name: &str, reason: &[&str]) {
    let check = check_config(&config.path);
    assert!(
        !check.status.success(),
        "--check-config must fail; stdout: {:?}; stderr: {:?}",
        check.stdout,
        check.stderr
    );
    assert!(
        check.stderr.contains(&format!("`{plugin_name}`")),
        "stderr must name the plugin `{plugin_name}`: {:?}",
        check.stderr
    );
    for needle in reason {
        assert!(
            check.stderr.contains(needle),
            "stderr must give the reason ({needle:?}): {:?}",
            check.stderr
        );
    }
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
    assert!(
        start.stderr.contains(&format!("`{plugin_name}`")),
        "start-up error must name the plugin: {:?}",
        start.stderr
    );
    for needle in reason {
        assert!(
            start.stderr.contains(needle),
            "start-up error must give the reason ({needle:?}): {:?}",
            start.stderr
        );
    }
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
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "bad-router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/orders"]

[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "eu"
to = ["queue/orders.eu"]
"#,
        plugin("header-router")
    ));
    assert_refused(
        &config,
        "bad-router",
        &["queue/orders.eu", "must start with `/`"],
    );
}

#[test]
fn a_header_router_rule_missing_its_targets_is_refused() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "incomplete-router"
file = "{}"
hooks = ["send"]

[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "eu"
"#,
        plugin("header-router")
    ));
    assert_refused(&config, "incomplete-router", &["to"]);
}

#[test]
fn a_static_auth_user_without_a_password_hash_is_refused() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "auth"
file = "{}"
hooks = ["authenticate"]

[[plugins.config.users]]
name = "carol"
salt = "abc"
may_send = ["*"]
"#,
        plugin("static-auth")
    ));
    assert_refused(&config, "auth", &["password_sha256"]);
}

#[test]
fn a_static_auth_plain_text_password_is_refused() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "auth"
file = "{}"
hooks = ["authenticate"]

[[plugins.config.users]]
name = "carol"
salt = "abc"
password_sha256 = "carol-secret"
"#,
        plugin("static-auth")
    ));
    assert_refused(&config, "auth", &["carol", "64 hex"]);
}

#[test]
fn a_missing_wasm_file_is_a_clear_error() {
    let missing = plugins_dir().join("no-such-plugin.wasm");
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "ghost"
file = "{}"
hooks = ["send"]
"#,
        missing.display()
    ));
    assert_refused(&config, "ghost", &["no-such-plugin.wasm"]);
}

#[test]
fn a_relative_wasm_path_is_resolved_against_the_config_directory() {
    // The temp config's directory has no target/plugins: the error must show where it looked.
    let config = temp_config(
        r#"
[[plugins]]
name = "router"
file = "../target/plugins/header-router.wasm"
hooks = ["send"]
"#,
    );
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
