# shellcheck shell=bash
# Sourced by bench/ab.sh and bench/instructions.sh (after bench/peers.sh): release builds of
# HEAD (in the workspace's target/) and of BASE_REV (in a worktree under $WORK with a target of
# its own), then BIN/CONF_SRC per build and BENCH.
# Needs ROOT, WORK, BASE_SRC and BASE_REV; BASE_BIN and BASE_CONF (the revision's
# examples/broker.toml) use a base binary built before instead, and HEAD_BIN a head binary built
# before (e.g. with other build settings; plugboard-bench must be built).

if [[ -n ${HEAD_BIN:-} ]]; then
  [[ -x $HEAD_BIN && -x $ROOT/target/release/plugboard-bench ]] \
    || die "HEAD_BIN needs an executable and a release build of plugboard-bench"
  log "head: $HEAD_BIN"
else
  log "building HEAD (release)"
  (cd "$ROOT" && cargo build --release -p plugboard -p plugboard-bench) >"$WORK/build-head.log" 2>&1 \
    || die "HEAD build failed: $(tail -n 20 "$WORK/build-head.log")"
fi
if [[ -n ${BASE_BIN:-} ]]; then
  # A base built before (BASE_BIN, with the examples/broker.toml of its revision as BASE_CONF).
  [[ -x $BASE_BIN && -f ${BASE_CONF:-} ]] || die "BASE_BIN needs BASE_CONF, its broker.toml"
  log "base: $BASE_BIN as $BASE_REV"
else
  if [[ ! -d $BASE_SRC ]]; then
    git -C "$ROOT" worktree add --detach "$BASE_SRC" "$BASE_REV" >/dev/null
  fi
  git -C "$BASE_SRC" checkout -q --detach "$BASE_REV"
  log "building $BASE_REV (release, log: $WORK/build-base.log)"
  (cd "$BASE_SRC" && CARGO_TARGET_DIR=$WORK/base-target cargo build --release -p plugboard) \
    >"$WORK/build-base.log" 2>&1 || die "base build failed: $(tail -n 20 "$WORK/build-base.log")"
  BASE_BIN=$WORK/base-target/release/plugboard
  BASE_CONF=$BASE_SRC/examples/broker.toml
fi
# shellcheck disable=SC2034 # used by the scripts that source this one
BENCH=$ROOT/target/release/plugboard-bench
# shellcheck disable=SC2034
declare -A BIN=([base]=$BASE_BIN [head]=${HEAD_BIN:-$ROOT/target/release/plugboard})
# shellcheck disable=SC2034
declare -A CONF_SRC=([base]=$BASE_CONF [head]=$ROOT/examples/broker.toml)
