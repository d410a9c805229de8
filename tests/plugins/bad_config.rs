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

/// A static-auth plugin `auth` (with the sample config's `memory_mb`) with one user, `carol`,
/// whose other keys are `fields`.
fn static_auth_user(fields: &str) -> TempConfig {
    static_auth_user_in(32, fields)
}

/// [`static_auth_user`] in an instance of `memory_mb`.
fn static_auth_user_in(memory_mb: u32, fields: &str) -> TempConfig {
    one_plugin(
        "auth",
        &plugin("static-auth"),
        "authenticate",
        &format!("memory_mb = {memory_mb}\n\n[[plugins.config.users]]\nname = \"carol\"\n{fields}"),
    )
}

#[test]
fn a_static_auth_user_without_a_password_hash_is_refused() {
    let config = static_auth_user("may_send = [\"*\"]\n");
    assert_refused(
        &config,
        "auth",
        &[
            "carol",
            "missing `password_hash`",
            "plugboard hash-password",
        ],
    );
}

#[test]
fn the_old_salted_sha256_scheme_is_refused_with_directions() {
    // alice's entry as the sample config had it, under carol's name: no silent fallback.
    let config = static_auth_user(
        "salt = \"7c1f3e2a9d\"\n\
         password_sha256 = \"1c31747a779a587aad2b33f2396bba30cf5caec49ac995d3798621d7de081e05\"\n",
    );
    assert_refused(
        &config,
        "auth",
        &[
            "carol",
            "password_sha256",
            "no longer accepted",
            "password_hash",
            "plugboard hash-password",
        ],
    );
}

#[test]
fn a_static_auth_plain_text_password_is_refused_without_echoing_it() {
    let config = static_auth_user("password_hash = \"carol-secret\"\n");
    assert_refused(
        &config,
        "auth",
        &["carol", "not a PHC string", "plugboard hash-password"],
    );
    let check = check_config(&config.path);
    assert!(
        !check.stderr.contains("carol-secret"),
        "the error must not repeat what was in password_hash: {:?}",
        check.stderr
    );
}

#[test]
fn static_auth_hashes_that_are_not_argon2id_or_too_cheap_are_refused() {
    // Well-formed PHC strings (init checks them without hashing anything).
    let tail = "c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g";
    for (hash, reason) in [
        (
            format!("$argon2i$v=19$m=19456,t=2,p=1${tail}"),
            "only argon2id",
        ),
        (
            format!("$argon2d$v=19$m=19456,t=2,p=1${tail}"),
            "only argon2id",
        ),
        (format!("$argon2id$v=16$m=19456,t=2,p=1${tail}"), "v=19"),
        (format!("$argon2id$v=19$m=4096,t=3,p=1${tail}"), "too cheap"),
        (
            format!("$argon2id$v=19$m=19456,t=2,p=1,q=5${tail}"),
            "bad parameters",
        ),
        (
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ".to_string(),
            "no salt or no hash",
        ),
    ] {
        let config = static_auth_user(&format!("password_hash = '{hash}'\n"));
        assert_refused(&config, "auth", &["carol", "password_hash", reason]);
    }
}

#[test]
fn a_memory_cap_too_small_for_the_hash_is_refused_at_start() {
    // The default cap (16 MiB) cannot hold m = 19 MiB: a start-up error, not failed logins.
    let phc = phc_of("carol-secret", &[]);
    let config = static_auth_user_in(16, &format!("password_hash = '{phc}'\n"));
    assert_refused(&config, "auth", &["carol", "19456 KiB", "memory_mb"]);
    // Nor does a hostile m make the plugin try to allocate it at the first login.
    let huge = "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let config = static_auth_user(&format!("password_hash = '{huge}'\n"));
    assert_refused(&config, "auth", &["carol", "memory_mb"]);
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
