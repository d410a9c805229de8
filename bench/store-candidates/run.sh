#!/bin/sh
# Runs the comparison: ROUNDS rounds of (fsync probe, then every engine and body size once),
# interleaved so that slow phases of the shared disk hit every engine. Results go to
# target/results.tsv and target/fsync.tsv (or $OUT.tsv and $OUT-fsync.tsv); summarize.py prints
# the medians. ENGINES picks the engines (journal-prealloc is an experiment, see README).
set -eu
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-3}
N=${N:-100000}
ENGINES=${ENGINES:-journal redb fjall}
OUT=${OUT:-target/results}
cargo build --release
B=target/release/store-candidates
mkdir -p target
$B header > "$OUT.tsv"
: > "$OUT-fsync.tsv"
for round in $(seq 1 "$ROUNDS"); do
    $B fsync-probe --count 1000 | tee -a "$OUT-fsync.tsv"
    for body in 128 4096; do
        for engine in $ENGINES; do
            $B run --engine "$engine" --body "$body" --n "$N" | tee -a "$OUT.tsv"
        done
    done
done
python3 summarize.py "$OUT.tsv" "$OUT-fsync.tsv"
