//! The compiled-plugin cache through the real binary: a cache directory others can write is
//! reported and not used (the broker still serves), and an artifact swapped into the default
//! cache (`plugin-cache` in the data directory) is not run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use plugboard_test_support::broker::Launch;

/// The `*.cwasm` files in `dir`.
fn artifacts(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

/// `eve` (unknown to static-auth, admitted by the probe) gets an ERROR.
async fn eve_is_refused(broker: &plugboard_test_support::broker::Broker) {
    let (_c, reply) = try_login(broker.addr, Some("eve"), Some("x")).await;
    assert!(
        error_message(&reply).contains("access refused"),
        "{reply:?}\n{}",
        broker.log_tail()
    );
}

#[tokio::test]
async fn a_cache_directory_others_can_write_is_reported_and_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open-cache");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.path().join("plugboard.toml");
    let text = format!(
        "plugin_cache_dir = {:?}\n\n{}",
        open.to_str().unwrap(),
        demo_auth()
    );
    std::fs::write(&config, text).unwrap();

    let broker = Launch::config_file(broker_bin(), &config)
        .own_plugin_cache()
        .start();
    alice(broker.addr).await.disconnect().await;
    eve_is_refused(&broker).await;
    let record = broker.wait_log_line(
        &[
            "ERROR",
            &format!("compiled-plugin cache {}", open.display()),
            "0777",
            "not using it",
        ],
        Duration::from_secs(5),
    );
    assert!(record.contains("write"), "{record}");
    assert_eq!(
        std::fs::read_dir(&open).unwrap().count(),
        0,
        "nothing cached there"
    );
}

/// The attack the security review confirmed, on the default cache: the probe's compiled
/// artifact (it admits every login) copied over static-auth's. The broker recompiles
/// static-auth instead of running it.
#[tokio::test]
async fn another_plugins_artifact_in_the_default_cache_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let auth_config = dir.path().join("auth.toml");
    std::fs::write(&auth_config, demo_auth()).unwrap();
    let probe_config = dir.path().join("probe.toml");
    let probe = format!(
        "[[plugins]]\nname = \"auth\"\nfile = {:?}\nhooks = [\"authenticate\"]\n",
        plugin("probe")
    );
    std::fs::write(&probe_config, probe).unwrap();
    let (data, probe_data) = (dir.path().join("data"), dir.path().join("probe-data"));
    let start = |config: &Path, data: &Path| {
        Launch::config_file(broker_bin(), config)
            .own_plugin_cache()
            .args(&["--data-dir".as_ref(), data.as_os_str()])
            .start()
    };

    let broker = start(&auth_config, &data);
    alice(broker.addr).await.disconnect().await;
    drop(broker);
    let cache = data.join("plugin-cache");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the default cache is private");
    let [auth_artifact] = artifacts(&cache).try_into().expect("one artifact");

    let broker = start(&probe_config, &probe_data);
    let (c, reply) = try_login(broker.addr, Some("eve"), Some("x")).await;
    assert!(reply.is("CONNECTED"), "the probe admits anyone: {reply:?}");
    c.disconnect().await;
    drop(broker);
    let [probe_artifact] = artifacts(&probe_data.join("plugin-cache"))
        .try_into()
        .expect("one artifact");
    let probe_bytes = std::fs::read(&probe_artifact).unwrap();
    std::fs::write(&auth_artifact, &probe_bytes).unwrap();

    let broker = start(&auth_config, &data);
    eve_is_refused(&broker).await;
    alice(broker.addr).await.disconnect().await;
    broker.wait_log_line(
        &["WARN", "ignoring cached plugin", "tag does not verify"],
        Duration::from_secs(5),
    );
    assert_ne!(
        std::fs::read(&auth_artifact).unwrap(),
        probe_bytes,
        "replaced by static-auth's own"
    );
}
