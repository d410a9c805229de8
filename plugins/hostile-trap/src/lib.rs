//! `hostile-trap` (tests only): panics in every hook (a trap).

/// Panics: the guest traps.
fn hostile<T>() -> T {
    panic!("hostile-trap: this plugin always panics")
}

hostile_common::hostile_plugin!(struct HostileTrap, every_hook: hostile);
