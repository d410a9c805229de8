//! Hot-reload tests (issue 4): each test starts the real `plugboard` binary on a temporary
//! config file (absolute plugin paths, `listen` and `admin_listen` on `127.0.0.1:0`), changes
//! the file or the plugin components while clients are connected, and watches the result over
//! STOMP and through the status endpoint (`GET /status`). Every wait is bounded; a reload is
//! awaited by polling `/status` until `plugins.generation` changes.
//!
//! Tests marked `BROKER-BUG:` in a comment fail because of a broker defect described there;
//! they are kept, not ignored, so the fix turns them green. `measure.rs` holds `#[ignore]`d
//! measurements (see docs/reload.md and bench/reload.sh).

mod support;

mod broken;
mod files;
mod load;
mod measure;
mod rapid;
mod selector;
mod settings;
mod signal;
mod startup;
