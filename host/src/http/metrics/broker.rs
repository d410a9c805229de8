//! Broker-wide families: connections and errors, the memory budget, the message store and the
//! plugins.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::DescriptorEncoder;

use super::{family, single, Counter, Gauge, Histogram};
use crate::broker::Broker;

/// Nanoseconds per second: histograms are kept in ns and shown in seconds.
const NS: f64 = 1e9;

/// Connections per listener, opened, closed by reason, refused; ERRORs by kind; bytes.
pub fn encode_connections(encoder: &mut DescriptorEncoder, broker: &Broker) -> fmt::Result {
    let stats = &broker.stats;
    let counters = &stats.connections;
    family(
        encoder,
        "plugboard_connections",
        "Client connections open, by listener.",
        counters
            .listeners()
            .into_iter()
            .map(|(listener, count)| ([("listener", listener)], Gauge(count.open))),
    )?;
    single(
        encoder,
        "plugboard_connections_opened",
        "Client connections accepted and served.",
        Counter(stats.connections_total.load(Relaxed)),
    )?;
    family(
        encoder,
        "plugboard_connections_closed",
        "Client connections ended, by reason.",
        counters
            .closes()
            .map(|(reason, n)| ([("reason", reason.as_str())], Counter(n))),
    )?;
    family(
        encoder,
        "plugboard_connections_refused",
        "Connections refused before any session, by reason.",
        [(
            [("reason", "address-limit")],
            Counter(stats.address_limit_refusals.load(Relaxed)),
        )],
    )?;
    single(
        encoder,
        "plugboard_auth_attempts_failed",
        "CONNECTs refused by authentication.",
        Counter(stats.failed_logins.load(Relaxed)),
    )?;
    single(
        encoder,
        "plugboard_auth_reauthentications",
        "Successful re-authentications (CONNECT with reauth:true on an open session).",
        Counter(stats.reauthentications.load(Relaxed)),
    )?;
    single(
        encoder,
        "plugboard_auth_expired",
        "Connections closed because their credentials expired.",
        Counter(stats.credential_expiries.load(Relaxed)),
    )?;
    family(
        encoder,
        "plugboard_errors",
        "ERROR frames sent to clients, by kind.",
        counters
            .errors()
            .map(|(kind, n)| ([("kind", kind.as_str())], Counter(n))),
    )?;
    family(
        encoder,
        "plugboard_error_codes",
        "ERROR frames sent to clients, by error-code (a plugin's own code counts as \
         plugin.rejected).",
        counters
            .error_codes()
            .map(|(code, n)| ([("code", code.as_str())], Counter(n))),
    )?;
    single(
        encoder,
        "plugboard_session_panics",
        "Session tasks that panicked (a broker bug; their connections were closed).",
        Counter(stats.session_panics.load(Relaxed)),
    )?;
    single(
        encoder,
        "plugboard_connection_incoming_bytes",
        "Bytes read from clients after their CONNECT (added in steps of 64 KiB per connection \
         and when it ends).",
        Counter(counters.bytes_in.load(Relaxed)),
    )?;
    single(
        encoder,
        "plugboard_connection_outgoing_bytes",
        "Bytes written to clients (added in steps of 64 KiB per connection and when it ends).",
        Counter(counters.bytes_out.load(Relaxed)),
    )
}

/// The memory budget and the producers it pauses.
pub fn encode_memory(encoder: &mut DescriptorEncoder, broker: &Broker) -> fmt::Result {
    let budget = broker.vhosts.budget();
    single(
        encoder,
        "plugboard_memory_used_bytes",
        "Bytes charged to the memory budget (messages, frames being read, retained headers).",
        Gauge(budget.used()),
    )?;
    single(
        encoder,
        "plugboard_memory_limit_bytes",
        "The memory budget: producers are paused at it.",
        Gauge(budget.limit()),
    )?;
    single(
        encoder,
        "plugboard_producers_paused",
        "Producers paused now by the memory budget.",
        Gauge(budget.paused.load(Relaxed)),
    )?;
    single(
        encoder,
        "plugboard_producer_pauses",
        "Times a producer was paused by the memory budget.",
        Counter(budget.pauses.load(Relaxed)),
    )
}

/// The message store (nothing when persistence is off).
pub fn encode_store(encoder: &mut DescriptorEncoder, broker: &Broker) -> fmt::Result {
    let Some(store) = broker.vhosts.store() else {
        return Ok(());
    };
    let s = store.stats();
    let gauges = [
        (
            "plugboard_store_journal_bytes",
            "Bytes of journal segment files on disk.",
            s.disk_bytes.load(Relaxed),
        ),
        (
            "plugboard_store_live_bytes",
            "Bytes of live records (what store.max_bytes bounds).",
            s.live_bytes.load(Relaxed),
        ),
        (
            "plugboard_store_max_bytes",
            "store.max_bytes: persistent messages are refused beyond it.",
            broker.config.store.max_bytes,
        ),
        (
            "plugboard_store_live_messages",
            "Unsettled persistent messages in the journal.",
            s.live_messages.load(Relaxed),
        ),
        (
            "plugboard_store_segments",
            "Journal segment files on disk.",
            s.segments.load(Relaxed),
        ),
        (
            "plugboard_store_failed",
            "1 while the store cannot write (persistent messages are refused), else 0.",
            u64::from(store.failure().is_some()),
        ),
    ];
    for (name, help, value) in gauges {
        single(encoder, name, help, Gauge(value))?;
    }
    let counters = [
        (
            "plugboard_store_fsyncs",
            "Syncs of the journal (by the writer and by compaction).",
            s.fsyncs.load(Relaxed),
        ),
        (
            "plugboard_store_records_written",
            "Records written to the journal.",
            s.records_written.load(Relaxed),
        ),
        (
            "plugboard_store_written_bytes",
            "Bytes written to the journal (compaction's moves not included).",
            s.bytes_written.load(Relaxed),
        ),
        (
            "plugboard_store_batches",
            "Batches written (one write each: group commit).",
            s.batches.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        single(encoder, name, help, Counter(value))?;
    }
    single(
        encoder,
        "plugboard_store_fsync_duration_seconds",
        "How long the writer's syncs of the journal took.",
        Histogram {
            snapshot: &s.fsync_ns.snapshot(),
            divisor: NS,
        },
    )?;
    single(
        encoder,
        "plugboard_store_records_per_fsync",
        "Records written between two syncs of the writer.",
        Histogram {
            snapshot: &s.records_per_fsync.snapshot(),
            divisor: 1.0,
        },
    )
}

/// Plugin calls, failures and latency per plugin and hook; instances; reloads.
pub fn encode_plugins(encoder: &mut DescriptorEncoder, broker: &Broker) -> fmt::Result {
    let set = broker.policy.current();
    let hooks = set.host.hook_stats();
    let labels = |plugin: &str, hook: crate::plugin::Hook| {
        [
            ("plugin", plugin.to_string()),
            ("hook", hook.as_str().to_string()),
        ]
    };
    family(
        encoder,
        "plugboard_plugin_calls",
        "Plugin calls made (failed ones included).",
        hooks
            .iter()
            .map(|h| (labels(&h.plugin, h.hook), Counter(h.calls))),
    )?;
    family(
        encoder,
        "plugboard_plugin_failures",
        "Failed plugin calls, by kind.",
        hooks.iter().flat_map(|h| {
            h.failures.iter().map(move |(kind, n)| {
                let [plugin, hook] = labels(&h.plugin, h.hook);
                (
                    [plugin, hook, ("kind", kind.as_str().to_string())],
                    Counter(*n),
                )
            })
        }),
    )?;
    let snapshots: Vec<_> = hooks.iter().map(|h| &h.latency_ns).collect();
    family(
        encoder,
        "plugboard_plugin_call_duration_seconds",
        "Duration of sampled plugin calls (one in 16 per instance), from taking an instance \
         to the answer.",
        hooks.iter().zip(snapshots).map(|(h, snapshot)| {
            (
                labels(&h.plugin, h.hook),
                Histogram {
                    snapshot,
                    divisor: NS,
                },
            )
        }),
    )?;
    family(
        encoder,
        "plugboard_plugin_instances",
        "Plugin instances that exist (idle or serving a call).",
        set.host
            .instances()
            .into_iter()
            .map(|(plugin, n)| ([("plugin", plugin)], Gauge(n))),
    )?;
    let kv = set.host.kv_stats();
    family(
        encoder,
        "plugboard_plugin_kv_entries",
        "Entries in a plugin's kv store, over every vhost (plugins with a store).",
        kv.iter()
            .map(|(plugin, s)| ([("plugin", plugin.clone())], Gauge(s.entries))),
    )?;
    family(
        encoder,
        "plugboard_plugin_kv_bytes",
        "Accounted bytes of a plugin's kv store (keys, values, per-entry overhead), over every \
         vhost.",
        kv.iter()
            .map(|(plugin, s)| ([("plugin", plugin.clone())], Gauge(s.bytes))),
    )?;
    family(
        encoder,
        "plugboard_plugin_kv_refused",
        "Writes to a plugin's kv store refused at a cap (key or value length, entries, bytes).",
        kv.iter()
            .map(|(plugin, s)| ([("plugin", plugin.clone())], Counter(s.refused))),
    )?;
    let reload = broker.policy.status();
    single(
        encoder,
        "plugboard_plugin_generation",
        "Generation of the plugin set in force (1 at start, +1 per reload that swapped it).",
        Gauge(set.generation),
    )?;
    family(
        encoder,
        "plugboard_plugin_reloads",
        "Reloads of the plugin set, by result (failed: the previous set kept serving).",
        [
            ([("result", "ok")], Counter(reload.reloads)),
            ([("result", "failed")], Counter(reload.failures)),
        ],
    )?;
    let last_failed = reload
        .last_error
        .as_ref()
        .is_some_and(|(at, _)| *at >= set.loaded_at);
    single(
        encoder,
        "plugboard_plugin_last_reload_success",
        "1 unless the last reload attempt failed (then 0 until one succeeds).",
        Gauge(u64::from(!last_failed)),
    )
}

/// The redeliver hook's verdicts applied, per vhost (a fixed set of labels).
pub fn encode_redelivery(encoder: &mut DescriptorEncoder, broker: &Broker) -> fmt::Result {
    let mut samples = Vec::new();
    for vhost in broker.vhosts.iter() {
        let stats = &vhost.router.redelivery().stats;
        for (verdict, n) in stats.labelled() {
            samples.push((
                [
                    ("vhost", vhost.name.to_string()),
                    ("verdict", verdict.to_string()),
                ],
                Counter(n),
            ));
        }
    }
    family(
        encoder,
        "plugboard_redelivery_verdicts",
        "Messages that came back (NACK, consumer gone, expired) to a queue a redeliver plugin \
         serves, by what became of them: redeliver, redeliver_after, dead_letter, drop, \
         fallback (the plugin failed: built-in [dead_letter] policy), overflow (too many \
         decisions pending: built-in policy).",
        samples,
    )
}
