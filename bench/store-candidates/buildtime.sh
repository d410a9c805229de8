#!/bin/sh
# Clean release build time of the bench with only the journal, journal + redb, journal + fjall
# (each in its own target dir, dependencies already downloaded).
set -eu
cd "$(dirname "$0")"
for features in none redb fjall; do
    dir=target/buildtime-$features
    rm -rf "$dir"
    if [ "$features" = none ]; then flags=""; else flags="--features $features"; fi
    start=$(date +%s.%N)
    CARGO_TARGET_DIR=$dir cargo build --release --no-default-features $flags --quiet
    end=$(date +%s.%N)
    size=$(stat -c %s "$dir/release/store-candidates")
    printf 'build\t%s\t%.1f s\tbinary %s bytes\n' "$features" "$(echo "$end - $start" | bc)" "$size"
    rm -rf "$dir"
done
