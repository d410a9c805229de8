//! `hostile-loop` (tests only): spins forever in every hook (the deadline must stop it).

/// Never returns.
fn hostile<T>() -> T {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

hostile_common::hostile_plugin!(struct HostileLoop, every_hook: hostile);
