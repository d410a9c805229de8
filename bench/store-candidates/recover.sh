#!/bin/sh
# Crash after the last receipt (the process exits without closing the store), tear the tail of
# the newest journal file (100 bytes of a record or batch that promises more; redb has
# no journal to tear), reopen, and count the live messages: each run should find 400.
set -eu
cd "$(dirname "$0")"
cargo build --release
B=target/release/store-candidates
N=${N:-100000}
for engine in journal redb fjall; do
    $B run --engine "$engine" --body 4096 --n "$N" --crash true > /dev/null
    $B recover --engine "$engine" --body 4096 --tear 100
    $B recover --engine "$engine" --body 4096
    rm -rf "target/bench-data/$engine-4096"
done
