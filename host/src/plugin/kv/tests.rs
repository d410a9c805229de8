//! The registry and the per-call handle: scoping by plugin and vhost, atomic increments from
//! many threads, refusals counted, persistence through a real journal and back.

use std::sync::Arc;

use super::*;
use crate::budget::MemoryBudget;
use crate::config::FsyncPolicy;
use crate::store::StoreSettings;

fn settings(persist: bool) -> KvSettings {
    KvSpec {
        persist,
        ..KvSpec::default()
    }
    .settings()
    .unwrap()
}

fn handle(registry: &Registry, plugin: &str, persist: bool) -> CallKv {
    CallKv::new(registry.plugin(&Arc::from(plugin)), settings(persist))
}

fn set(kv: &mut CallKv, vhost: &Arc<str>, key: &str, value: &str) -> Result<(), KvError> {
    kv.run(vhost, |space, s, now, sink| {
        space.set(s, key, value.as_bytes().to_vec(), None, now, sink)
    })
}

fn get(kv: &mut CallKv, vhost: &Arc<str>, key: &str) -> Option<String> {
    kv.run(vhost, |space, s, now, sink| space.get(s, key, now, sink))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn plugins_and_vhosts_never_see_each_others_keys() {
    let registry = Registry::new();
    let (root, tenant): (Arc<str>, Arc<str>) = (Arc::from("/"), Arc::from("tenant"));
    let mut a = handle(&registry, "a", false);
    let mut b = handle(&registry, "b", false);
    set(&mut a, &root, "k", "a in /").unwrap();
    set(&mut a, &tenant, "k", "a in tenant").unwrap();
    assert_eq!(get(&mut b, &root, "k"), None, "another plugin");
    assert_eq!(get(&mut a, &root, "k").as_deref(), Some("a in /"));
    assert_eq!(get(&mut a, &tenant, "k").as_deref(), Some("a in tenant"));
    // A second instance of `a` shares its store.
    let mut a2 = handle(&registry, "a", false);
    assert_eq!(get(&mut a2, &tenant, "k").as_deref(), Some("a in tenant"));
    let stats = registry.stats("a").unwrap();
    assert_eq!(stats.entries, 2);
    assert!(stats.bytes > 0);
}

#[test]
fn increments_from_many_threads_are_atomic() {
    let registry = Registry::new();
    let vhost: Arc<str> = Arc::from("/");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut kv = handle(&registry, "counter", false);
            let vhost = vhost.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    kv.run(&vhost, |space, s, now, sink| {
                        space.increment(s, "n", 1, None, now, sink)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut kv = handle(&registry, "counter", false);
    assert_eq!(get(&mut kv, &vhost, "n").as_deref(), Some("8000"));
}

#[test]
fn refusals_are_errors_the_guest_sees_and_are_counted() {
    let registry = Registry::new();
    let vhost: Arc<str> = Arc::from("/");
    let mut kv = CallKv::new(
        registry.plugin(&Arc::from("p")),
        KvSpec {
            max_entries: Some(2),
            ..KvSpec::default()
        }
        .settings()
        .unwrap(),
    );
    set(&mut kv, &vhost, "a", "1").unwrap();
    set(&mut kv, &vhost, "b", "1").unwrap();
    assert_eq!(set(&mut kv, &vhost, "c", "1"), Err(KvError::TooManyEntries));
    assert_eq!(
        set(&mut kv, &vhost, &"k".repeat(257), "1"),
        Err(KvError::KeyTooLong)
    );
    assert_eq!(registry.stats("p").unwrap().refused, 2);
}

#[test]
fn settings_out_of_range_are_refused() {
    for spec in [
        KvSpec {
            max_entries: Some(0),
            ..KvSpec::default()
        },
        KvSpec {
            max_value_bytes: Some(2 << 20),
            ..KvSpec::default()
        },
        KvSpec {
            max_bytes: Some(usize::MAX),
            ..KvSpec::default()
        },
    ] {
        assert!(spec.settings().is_err(), "{spec:?}");
    }
    let toml = "max_entries = 5\npersist = true\n";
    let spec: KvSpec = toml::from_str(toml).unwrap();
    assert_eq!(spec.settings().unwrap().max_entries, 5);
    assert!(
        toml::from_str::<KvSpec>("max_entrys = 5").is_err(),
        "unknown keys"
    );
}

fn open_store(dir: &std::path::Path) -> (Arc<Store>, crate::store::Recovered) {
    Store::open(&StoreSettings {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Batch,
        fsync_interval: std::time::Duration::from_millis(10),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
    })
    .unwrap()
}

#[test]
fn persisted_entries_come_back_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (root, tenant): (Arc<str>, Arc<str>) = (Arc::from("/"), Arc::from("tenant"));
    {
        let (store, _) = open_store(&data);
        let registry = Registry::new();
        registry.attach(store.clone());
        let mut kept = handle(&registry, "kept", true);
        let mut memory = handle(&registry, "memory", false);
        set(&mut kept, &root, "a", "1").unwrap();
        set(&mut kept, &tenant, "a", "2").unwrap();
        set(&mut kept, &root, "gone", "x").unwrap();
        kept.run(&root, |space, s, now, sink| {
            space.delete(s, "gone", now, sink)
        })
        .unwrap();
        kept.run(&root, |space, s, now, sink| {
            space.set(s, "short", b"x".to_vec(), Some(1), now, sink)
        })
        .unwrap();
        set(&mut memory, &root, "m", "1").unwrap();
        store.close();
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (store, recovered) = open_store(&data);
    assert_eq!(
        recovered.kv.len(),
        3,
        "a in / and tenant, short: {:?}",
        recovered.kv
    );
    let registry = Registry::new();
    registry.attach(store.clone());
    let configured = [(Arc::from("kept"), settings(true))];
    assert_eq!(
        registry.restore(recovered.kv, &configured),
        2,
        "short expired"
    );
    let mut kept = handle(&registry, "kept", true);
    assert_eq!(get(&mut kept, &root, "a").as_deref(), Some("1"));
    assert_eq!(get(&mut kept, &tenant, "a").as_deref(), Some("2"));
    assert_eq!(get(&mut kept, &root, "gone"), None);
    let mut memory = handle(&registry, "memory", false);
    assert_eq!(get(&mut memory, &root, "m"), None, "not persisted");
    // No longer persisted: cleared from the journal.
    registry.retain(&[(Arc::from("kept"), Some(settings(false)))]);
    store.close();
    drop((store, registry, kept, memory));
    let (_, recovered) = open_store(&data);
    assert!(recovered.kv.is_empty(), "{:?}", recovered.kv);
}

#[test]
fn a_plugin_no_longer_configured_loses_its_store() {
    let registry = Registry::new();
    let root: Arc<str> = Arc::from("/");
    let mut a = handle(&registry, "a", false);
    set(&mut a, &root, "k", "v").unwrap();
    registry.retain(&[(Arc::from("a"), Some(settings(false)))]);
    assert_eq!(
        get(&mut handle(&registry, "a", false), &root, "k").as_deref(),
        Some("v")
    );
    registry.retain(&[]);
    assert!(registry.stats("a").is_none());
    assert_eq!(get(&mut handle(&registry, "a", false), &root, "k"), None);
}

#[test]
fn the_stores_bytes_are_charged_to_the_memory_budget_and_released_with_them() {
    let budget = MemoryBudget::unlimited();
    let registry = Registry::new();
    let root: Arc<str> = Arc::from("/");
    let mut early = handle(&registry, "early", false);
    set(&mut early, &root, "before", "attached").unwrap();
    registry.attach_budget(budget.clone());
    let held = registry.stats("early").unwrap().bytes;
    assert_eq!(
        budget.used(),
        held,
        "entries made before are charged at attach"
    );
    let mut kv = handle(&registry, "p", false);
    set(&mut kv, &root, "k", &"v".repeat(1000)).unwrap();
    let total = held + registry.stats("p").unwrap().bytes;
    assert_eq!(budget.used(), total);
    kv.run(&root, |space, s, now, sink| space.delete(s, "k", now, sink))
        .unwrap();
    assert_eq!(budget.used(), held, "released by the delete");
    set(&mut kv, &root, "k", "v").unwrap();
    registry.retain(&[(Arc::from("early"), Some(settings(false)))]);
    drop(kv);
    assert_eq!(
        budget.used(),
        held,
        "released with the removed plugin's store"
    );
}
