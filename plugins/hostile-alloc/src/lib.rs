//! `hostile-alloc` (tests only): allocates without bound in every hook (the memory cap must stop it).

/// Allocates until the allocator fails.
fn hostile<T>() -> T {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
    }
}

hostile_common::hostile_plugin!(struct HostileAlloc, every_hook: hostile);
