//! Broker configuration: every key, its default and what it is for, in one place.
//!
//! The TOML file is read with `deny_unknown_fields` so a typo is an error, not a silent default.
//! `examples/plugboard.toml` shows every key. `Config::default()` is the embedded configuration
//! that `plugboard` runs with when no `--config` is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::codec::Limits;
use crate::plugin::PluginSpec;

/// Defaults that are not a literal in one of the `Default` impls below: those of the optional
/// keys of a `[[plugins]]` entry, and the shares from which memory limits are computed.
pub mod defaults {
    use std::time::Duration;

    /// `deadline_ms` of an authenticate hook: one call per CONNECT, which is rare, and a
    /// password hash may be deliberately slow.
    pub const PLUGIN_AUTH_DEADLINE: Duration = Duration::from_millis(100);
    /// `deadline_ms` of a send hook (one call per SEND, or per batch of them).
    pub const PLUGIN_SEND_DEADLINE: Duration = Duration::from_millis(10);
    /// `deadline_ms` of a message hook (one `filter` call per delivery, or per batch, and
    /// `prepare-subscription`).
    pub const PLUGIN_MESSAGE_DEADLINE: Duration = Duration::from_millis(5);
    /// `deadline_ms` of a redeliver hook (one call per message NACKed, left by its consumer or
    /// expired: rare, off the delivery path).
    pub const PLUGIN_REDELIVER_DEADLINE: Duration = Duration::from_millis(50);
    /// `memory_mb` of a plugin instance.
    pub const PLUGIN_MEMORY_MB: u64 = 16;
    /// `max_instances` of a plugin (and so its concurrent calls).
    pub const PLUGIN_MAX_INSTANCES: usize = 16;
    /// `limits.max_memory_bytes` when 0: this share of the machine's memory (or of the cgroup's
    /// limit when lower); RabbitMQ's default high watermark has been 0.4 and 0.6 of RAM.
    pub const MEMORY_PERCENT: u64 = 40;
    /// `limits.max_memory_bytes_per_principal` when 0: this share of the memory budget.
    pub const PRINCIPAL_MEMORY_PERCENT: u64 = 50;
    /// `dead_letter.max_filter_failures`.
    pub const MAX_FILTER_FAILURES: u32 = 5;
    /// `flow.max_groups_per_queue` (ActiveMQ's message group cache holds as many).
    pub const MAX_GROUPS_PER_QUEUE: usize = 1024;
}

/// The whole broker configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the plain STOMP (TCP) listener binds, or `"off"` for none (a TLS-only broker;
    /// `--no-tcp` does the same). `--listen` overrides it.
    #[serde(deserialize_with = "address_or_off")]
    pub listen: Option<SocketAddr>,
    /// STOMP over TLS (`[tls]`): off unless `tls.listen` is set.
    pub tls: TlsConfig,
    /// Address of the status endpoint (HTTP `GET /status`, JSON), off when absent. Loopback
    /// only, unless `admin_token` is set.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the status endpoint requires (`Authorization: Bearer TOKEN`) when set; at
    /// least 16 characters. Required for a non-loopback `admin_listen`.
    pub admin_token: Option<String>,
    /// Name reported in CONNECTED's `server` header (`name/version`).
    pub server_name: String,
    /// Frame-size and connection limits.
    pub limits: LimitsConfig,
    /// Heart-beat negotiation.
    pub heartbeat: HeartbeatConfig,
    /// Flow control and slow consumers.
    pub flow: FlowConfig,
    /// Dead-letter queues for messages delivered too often or expired.
    pub dead_letter: DeadLetterConfig,
    /// Durable topic subscriptions: how many, how full, how long unused.
    pub durable: DurableConfig,
    /// The message store behind `persistent:true`.
    pub store: StoreConfig,
    /// Scheduled delivery (`AMQ_SCHEDULED_DELAY`, `x-delay`, ...): caps and bounds.
    pub schedule: ScheduleConfig,
    /// Queue arguments by destination pattern (`[[queues]]`): the first entry whose pattern
    /// matches a new `/queue/` gives its limits, overflow policy and message TTL.
    pub queues: Vec<QueuePolicy>,
    /// Users allowed to connect. When empty (the default), any login is accepted (anonymous).
    /// An authenticate plugin takes this over when one is configured.
    pub users: Vec<UserConfig>,
    /// Wasm plugins, in chain order.
    pub plugins: Vec<PluginSpec>,
    /// Virtual hosts (`[[vhosts]]`): a CONNECT's `host` header names one, and each has its own
    /// destinations and plugin chains. None (the default): one vhost `/` that any `host`
    /// enters. Fixed while the broker runs (a change needs a restart). See
    /// docs/protocol.md#virtual-hosts.
    pub vhosts: Vec<crate::vhost::VhostConfig>,
    /// The `[[vhosts]]` entry a CONNECT enters when its `host` names none (or it has no
    /// `host`); absent: such a CONNECT gets an ERROR.
    pub default_vhost: Option<String>,
    /// Live reload of the plugin set.
    pub reload: ReloadConfig,
    /// Directory for compiled-plugin artifacts (relative paths are relative to the config file).
    /// Default: `plugin-cache` in the data directory. It must be private (owned by the broker's
    /// user, not writable by group or others, not a symlink); one that is not is logged and not
    /// used (plugins are then compiled at every load).
    pub plugin_cache_dir: Option<PathBuf>,
    /// Graceful shutdown: how long open connections get to flush after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Log lines: `text` (for people) or `json` (one JSON object per line, for log
    /// collectors). `--log-format` overrides it.
    pub log_format: LogFormat,
    /// The admin listener's `GET /metrics`.
    pub metrics: MetricsConfig,
    /// STOMP over WebSocket (browsers): off unless `listen` is set. See docs/websocket.md.
    pub websocket: WebSocketConfig,
    /// Cluster mode (`[cluster]`): queues and topics shared with other Plugboard edges through
    /// a NATS JetStream cluster. Absent (the default): single-node. See docs/cluster.md.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Directory that relative paths in this config resolve against (set by the loader).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 61613))),
            tls: TlsConfig::default(),
            admin_listen: None,
            admin_token: None,
            server_name: "plugboard".to_string(),
            limits: LimitsConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            flow: FlowConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            durable: DurableConfig::default(),
            store: StoreConfig::default(),
            schedule: ScheduleConfig::default(),
            queues: Vec::new(),
            users: Vec::new(),
            plugins: Vec::new(),
            vhosts: Vec::new(),
            default_vhost: None,
            reload: ReloadConfig::default(),
            plugin_cache_dir: None,
            shutdown_grace_ms: 5_000,
            log_format: LogFormat::Text,
            metrics: MetricsConfig::default(),
            websocket: WebSocketConfig::default(),
            cluster: None,
            base_dir: PathBuf::from("."),
        }
    }
}

/// Protocol and resource limits. Each one hit gives the client an ERROR and a close.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The broker-wide memory budget, in bytes: messages (in queues, outboxes, transactions,
    /// dead-letter queues), frames being read and retained SUBSCRIBE headers are charged to it;
    /// producers are paused (TCP backpressure, nothing dropped) when it is reached and resume
    /// below 95 % of it. 0: 40 % of the machine's memory (or of its cgroup limit).
    pub max_memory_bytes: u64,
    /// What one principal's messages and frames may hold of that budget, in bytes; its
    /// producers are paused beyond it, others carry on. 0: half of `max_memory_bytes`.
    pub max_memory_bytes_per_principal: u64,
    /// Maximum simultaneous client connections; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// Most simultaneous connections from one source address; more get an ERROR and a close.
    pub max_connections_per_address: usize,
    /// Largest frame a client may send before it is authenticated (the CONNECT frame), bytes:
    /// an anonymous connection holds little until it proved who it is.
    pub max_connect_frame_bytes: usize,
    /// After failed logins from an address, its next attempts wait before they are checked:
    /// 100 ms, doubling per failure, up to this many ms (0: no waiting).
    pub failed_login_delay_max_ms: u64,
    /// Most re-authentications (CONNECT with `reauth:true`) one connection may make in a
    /// minute; one more gets an ERROR and a close (0: re-authentication is refused).
    pub max_reauth_per_minute: u32,
    /// A connection that holds no subscription and has sent nothing (not even a heart-beat)
    /// for this long gets an ERROR and is closed, in ms (0: never).
    pub idle_timeout_ms: u64,
    /// A new connection must send CONNECT/STOMP within this many milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest whole frame (command + headers + body), in bytes.
    pub max_frame_bytes: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header line (or command line), in bytes.
    pub max_header_line_bytes: usize,
    /// Largest body, in bytes.
    pub max_body_bytes: usize,
    /// Most subscriptions one connection may hold at once.
    pub max_subscriptions_per_connection: usize,
    /// Most bytes of headers in one SUBSCRIBE (they are kept for the message plugins as long
    /// as the subscription lives).
    pub max_subscribe_header_bytes: usize,
    /// Most temporary queues one connection may hold (`/temp-queue/...`, `reply-to`).
    pub max_temp_queues_per_connection: usize,
    /// Most `.`-separated segments in a wildcard topic pattern (`/topic/a.*.c` has three).
    pub max_pattern_segments: usize,
    /// Most destinations in one composite destination (`/queue/a,/topic/b` has two).
    pub max_composite_parts: usize,
    /// Most queues and topics in the broker; a SEND or SUBSCRIBE that would create one more
    /// gets an ERROR. Empty destinations nobody uses are removed within a few seconds.
    pub max_destinations: usize,
    /// New destinations one connection may create per second (bursts of ten times as many).
    pub destinations_created_per_second: u32,
    /// Most open transactions one connection may hold at once.
    pub max_transactions_per_connection: usize,
    /// Most SEND/ACK/NACK frames one transaction may hold before COMMIT.
    pub max_transaction_frames: usize,
    /// Most bytes of messages the open transactions of one connection may hold (they are
    /// charged to the memory budget too; this keeps one connection from taking all of it).
    pub max_transaction_bytes_per_connection: u64,
    /// A connection whose socket accepts no bytes for this long while output is pending is
    /// closed (a peer that stopped reading).
    pub write_timeout_ms: u64,
    /// Most messages one queue browse (`browser:true`) shows, the oldest first, before its
    /// `browser:end` (ActiveMQ's `maxBrowsePageSize` is 400 too).
    pub max_browse_messages: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let codec = Limits::default();
        LimitsConfig {
            max_memory_bytes: 0,
            max_memory_bytes_per_principal: 0,
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_connect_frame_bytes: 64 * 1024,
            idle_timeout_ms: 600_000,
            failed_login_delay_max_ms: 5_000,
            max_reauth_per_minute: 10,
            connect_timeout_ms: 10_000,
            // Room for the headers of a maximum-size body.
            max_frame_bytes: codec.max_body_bytes + 256 * 1024,
            max_headers: codec.max_headers,
            max_header_line_bytes: codec.max_header_line_bytes,
            max_body_bytes: codec.max_body_bytes,
            max_subscriptions_per_connection: 1_024,
            max_subscribe_header_bytes: 16 * 1024,
            max_temp_queues_per_connection: 256,
            max_pattern_segments: 32,
            max_composite_parts: 16,
            max_destinations: 100_000,
            destinations_created_per_second: 100,
            max_transactions_per_connection: 64,
            max_transaction_frames: 10_000,
            max_transaction_bytes_per_connection: 64 * 1024 * 1024,
            write_timeout_ms: 30_000,
            max_browse_messages: 400,
        }
    }
}

impl LimitsConfig {
    /// The codec's limits before CONNECT succeeded: the CONNECT frame is small.
    pub fn connect_codec_limits(&self) -> Limits {
        let frame = self.max_connect_frame_bytes.min(self.max_frame_bytes);
        Limits {
            max_frame_bytes: frame,
            max_headers: self.max_headers.min(64),
            max_header_line_bytes: self.max_header_line_bytes.min(frame),
            max_body_bytes: 0,
        }
    }

    /// The codec's view of these limits.
    pub fn codec_limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_headers: self.max_headers,
            max_header_line_bytes: self.max_header_line_bytes,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// Heart-beat negotiation (STOMP 1.1+). The broker offers, in CONNECTED, to send at
/// `max(client wish, send_min_ms)` and to expect at `max(client offer, receive_min_ms)`; a side
/// that says 0 gets no beats / is not watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Shortest interval at which the broker agrees to send heart-beats, in ms.
    pub send_min_ms: u64,
    /// Shortest interval at which the broker agrees to receive heart-beats, in ms.
    pub receive_min_ms: u64,
    /// A client silent for `interval * grace_factor` is considered dead.
    pub grace_factor: f64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            send_min_ms: 1_000,
            receive_min_ms: 1_000,
            grace_factor: 2.0,
        }
    }
}

/// What to do with a subscriber whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Send the subscriber an ERROR ("slow consumer") and close its connection; its unacked
    /// queue messages are redelivered to others.
    Disconnect,
    /// Drop the topic message for that subscriber only (counted), and keep the connection.
    Drop,
}

/// Flow control: prefetch windows and bounded buffers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Prefetch window (unacked messages in flight) of a client/client-individual subscription
    /// that does not ask for one with `prefetch-count` / `activemq.prefetchSize`.
    pub default_prefetch: u32,
    /// Largest prefetch a subscription may ask for.
    pub max_prefetch: u32,
    /// Messages in flight to an `auto`-ack queue subscriber (written to its socket only when
    /// the previous ones are out).
    pub auto_ack_window: u32,
    /// Most live message groups (`JMSXGroupID`) one queue pins to consumers; a new group in a
    /// full table takes the place of the least recently used one (whose next message may then
    /// go to another consumer). A group ends when its consumer leaves or with
    /// `JMSXGroupSeq:-1`.
    pub max_groups_per_queue: usize,
    /// Most frames waiting in one connection's outbound queue before the slow-consumer policy
    /// applies to topic deliveries and the connection's own reads pause.
    pub outbound_queue_frames: usize,
    /// Most messages one queue holds (waiting, and delivered but not yet acknowledged);
    /// producers to a full queue are paused (TCP backpressure) until consumers make room.
    pub queue_max_messages: usize,
    /// Most bytes one queue holds, counted the same way.
    pub queue_max_bytes: u64,
    /// Policy for topic subscribers that cannot keep up.
    pub slow_consumer_policy: SlowConsumerPolicy,
    /// How long (ms) a topic publisher waits for a subscriber whose outbound queue is full
    /// before that subscriber meets the policy. Waiting pauses the publisher's connection (TCP
    /// backpressure), so a subscriber that is slower but keeps up loses nothing.
    pub slow_consumer_patience_ms: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            default_prefetch: 1_000,
            max_prefetch: 65_536,
            auto_ack_window: 1_000,
            max_groups_per_queue: defaults::MAX_GROUPS_PER_QUEUE,
            outbound_queue_frames: 4_096,
            queue_max_messages: 100_000,
            queue_max_bytes: 512 * 1024 * 1024,
            slow_consumer_policy: SlowConsumerPolicy::Disconnect,
            slow_consumer_patience_ms: 1_000,
        }
    }
}

/// Dead-lettering: a `/queue/NAME` message handed back (NACK, UNSUBSCRIBE, a consumer's
/// connection ending) after `max_deliveries` deliveries goes to `<prefix>NAME` instead, with
/// headers `dlq-reason`, `dlq-original-destination` and `dlq-delivery-count`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Deliveries after which a handed-back message is dead-lettered; 0 redelivers forever.
    pub max_deliveries: u32,
    /// Dead-letter expired messages (`expires`, `ttl`, `expiration`) instead of dropping them.
    pub expired: bool,
    /// Prefix of the dead-letter queue names.
    pub prefix: String,
    /// A message filter that fails on a message (a trap, a timeout; not a decline) this many
    /// times dead-letters it with `dlq-reason:filter-failed` (dropped when dead-lettering is
    /// off, as without a dead-letter queue).
    pub max_filter_failures: u32,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            max_deliveries: 0,
            expired: false,
            prefix: "/queue/DLQ.".to_string(),
            max_filter_failures: defaults::MAX_FILTER_FAILURES,
        }
    }
}

impl DeadLetterConfig {
    /// Whether any queue gets a dead-letter queue.
    pub fn enabled(&self) -> bool {
        self.max_deliveries > 0 || self.expired
    }
}

/// Durable topic subscriptions. Each one's queue holds at most `flow.queue_max_messages` and
/// `flow.queue_max_bytes`, like any queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurableConfig {
    /// What a full durable subscription does with one more message: `drop-oldest` (default),
    /// `drop-new`, or `block` (the topic's publishers wait, as for a full queue). An offline
    /// subscriber must not hold live publishers hostage, hence not `block` by default.
    pub overflow: crate::router::queue::Overflow,
    /// Most durable subscriptions one principal may have.
    pub max_per_principal: usize,
    /// A durable subscription without a subscriber for this long is removed with its
    /// messages, in ms (0: never).
    pub expire_after_ms: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            overflow: crate::router::queue::Overflow::DropOldest,
            max_per_principal: 100,
            expire_after_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// When the journal is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every batch is synced before its RECEIPTs go out (one sync covers every frame that
    /// arrived while the previous one ran). Survives power loss.
    Batch,
    /// Written at once, synced every `fsync_interval_ms`: a RECEIPT means "handed to the
    /// operating system", which survives the broker's crash but not the machine's.
    Interval,
    /// Written at once, never synced by the broker (the kernel flushes when it likes).
    Never,
}

/// The message store. Persistent messages (`persistent:true`) sent to queues, and messages for
/// durable topic subscriptions, are journaled in `data_dir`; everything else stays in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Journal persistent messages. When false, `persistent:true` is accepted and ignored.
    pub enabled: bool,
    /// Directory of the journal (relative to this file). `--data-dir` overrides it. Default:
    /// `plugboard-data` in the working directory. Created 0700; refused at start if another user
    /// owns it, group or others can write it, or it is a symlink.
    pub data_dir: Option<PathBuf>,
    /// `batch` (default), `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// Sync period for `fsync = "interval"`, in ms.
    pub fsync_interval_ms: u64,
    /// Most bytes of live (unconsumed) persistent messages; beyond it persistent SENDs get an
    /// ERROR. The journal on disk stays within about twice this plus two segments.
    pub max_bytes: u64,
    /// Size at which the journal starts a new segment file, in bytes.
    pub segment_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            data_dir: None,
            fsync: FsyncPolicy::Batch,
            fsync_interval_ms: 100,
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
        }
    }
}

/// Scheduled delivery: messages sent with a delay, an absolute time or a period wait in the
/// broker's scheduler (outside their queue) until due. Each cap hit gives the SEND an ERROR.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Most messages waiting in the scheduler, broker-wide.
    pub max_messages: usize,
    /// Most messages one principal may have waiting in the scheduler.
    pub max_per_principal: usize,
    /// Longest delay accepted, in ms (an absolute time further ahead, or a longer repeat
    /// period, is refused too).
    pub max_delay_ms: u64,
    /// Shortest `AMQ_SCHEDULED_PERIOD` accepted for a repeating message, in ms.
    pub min_period_ms: u64,
    /// Largest `AMQ_SCHEDULED_REPEAT` accepted (repeat N means N + 1 deliveries).
    pub max_repeat: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            max_messages: 2_000_000,
            max_per_principal: 1_000_000,
            max_delay_ms: 90 * 24 * 3600 * 1000,
            min_period_ms: 100,
            max_repeat: 10_000,
        }
    }
}

/// Queue arguments for the `/queue/` destinations matching `pattern` (`*` matches any run of
/// characters), as the `x-` headers of a creating SEND or SUBSCRIBE give them (those override
/// these key by key). Every queue stays within `flow.queue_max_messages` and
/// `flow.queue_max_bytes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicy {
    /// The queue names it applies to, e.g. `/queue/orders.*`.
    pub pattern: String,
    /// Most messages held (`x-max-length`).
    pub max_length: Option<u64>,
    /// Most bytes of messages held (`x-max-length-bytes`).
    pub max_length_bytes: Option<u64>,
    /// When full: `drop-head` (default with a length limit), `reject-publish` or
    /// `reject-publish-dlx` (`x-overflow`).
    pub overflow: Option<crate::router::queue_args::ArgOverflow>,
    /// Messages expire this many ms after they were sent, at the latest (`x-message-ttl`).
    pub message_ttl_ms: Option<u64>,
}

/// Live reload of the plugin set (see `reload`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Let this reload weaken the policy in force: drop the authenticate hook, remove a plugin
    /// or one of its hooks, or make a plugin fail open. Off by default, so that a truncated or
    /// half-edited file is refused instead of switching authentication off. Read from the new
    /// file: set it in the same edit that removes the plugin.
    pub allow_weaker_policy: bool,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// and the connection's `span` (`n`, `peer`, `via`) where there is one.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

/// `GET /metrics` on the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Most queues with series of their own, and most topics (each counted apart); the others
    /// are summed into one series labelled `queue="other"` (`topic="other"`). Bounds what a
    /// flood of destination names costs Prometheus. Queues and topics are taken in name order.
    pub max_labelled_destinations: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_labelled_destinations: 1000,
        }
    }
}

/// STOMP over TLS (`[tls]`, see docs/tls.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address the TLS listener binds (61614 is the usual port); absent or `"off"`: no TLS
    /// listener. `--tls-listen` overrides it.
    #[serde(deserialize_with = "address_or_off")]
    pub listen: Option<SocketAddr>,
    /// The server's certificate chain, PEM (leaf first). Required with `listen`. Re-read on
    /// reload (a renewed certificate applies to new connections; open ones keep theirs).
    pub cert: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1). Required with `listen`.
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against: mutual TLS. Absent:
    /// clients are not asked for a certificate.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `"required"` (default; a client without a valid certificate fails the
    /// handshake) or `"optional"` (one without a certificate connects and authenticates as
    /// usual; a certificate it does present must still verify).
    pub client_auth: ClientAuth,
    /// A TLS handshake must complete within this many milliseconds, else the connection is
    /// closed (it holds a connection slot meanwhile).
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: None,
            cert: None,
            key: None,
            client_ca: None,
            client_auth: ClientAuth::Required,
            handshake_timeout_ms: 5_000,
        }
    }
}

/// Whether a TLS client must present a certificate (with `tls.client_ca`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The handshake fails without a valid client certificate.
    Required,
    /// A client may present none; one it presents must verify.
    Optional,
}

/// A socket address, or `"off"` for none.
fn address_or_off<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim() == "off" {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (an address or \"off\")")))
}

/// A user of the built-in authenticator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The CONNECT `login`; also the principal's name once authenticated.
    pub login: String,
    /// The CONNECT `passcode`, in plain text, compared byte for byte (the static-auth plugin
    /// takes password hashes instead).
    pub passcode: String,
}

/// The port examples and docs use for the WebSocket listener (RabbitMQ Web-STOMP's).
pub const WEBSOCKET_PORT: u16 = 15674;

/// STOMP over WebSocket (`[websocket]`): one STOMP frame per WebSocket message out, a byte
/// stream across messages in. What a browser may do is decided here (its `Origin`); what a
/// principal may do is the authenticate hook's, as on every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Address the WebSocket listener binds (`--ws-listen` overrides it); off when absent.
    /// The usual port is 15674 (RabbitMQ Web-STOMP's).
    pub listen: Option<SocketAddr>,
    /// The HTTP path the upgrade must ask for (RabbitMQ's default, `/ws`); any other path
    /// gets 404.
    pub path: String,
    /// Origins a browser page may connect from: exact `scheme://host[:port]` values, `null`
    /// (pages opened from disk, sandboxed frames) or `*` (any). Empty (the default): on a
    /// loopback `listen` address, pages from loopback origins (`localhost`, `127.0.0.0/8`,
    /// `[::1]`); a listener on any other address must name its origins (the broker refuses
    /// to start otherwise). A request without `Origin` (not a browser) is always accepted.
    pub allowed_origins: Vec<String>,
    /// Address of the WSS listener (STOMP over WebSocket over TLS, with `[tls]`'s `cert`, `key`
    /// and `client_ca`); `--wss-listen` overrides it. Off when absent; usual port 15673.
    pub tls_listen: Option<SocketAddr>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (IP addresses). A connection from
    /// one of them is counted, logged and authenticated as the nearest address in that header
    /// that is not itself a trusted proxy; from anyone else the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How STOMP frames go out: `auto` (a text message when the frame is valid UTF-8, binary
    /// otherwise, as RabbitMQ does) or `binary` (always binary).
    pub message_type: WebSocketMessageType,
    /// The HTTP upgrade must arrive (and be answered) within this many milliseconds.
    pub handshake_timeout_ms: u64,
    /// Largest HTTP upgrade request (request line and headers), bytes; larger gets 431.
    pub max_request_bytes: usize,
}

/// How STOMP frames are sent as WebSocket messages (`[websocket] message_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebSocketMessageType {
    /// Text when the frame is valid UTF-8, binary otherwise.
    Auto,
    /// Always binary.
    Binary,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            listen: None,
            tls_listen: None,
            path: "/ws".to_string(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            message_type: WebSocketMessageType::Auto,
            handshake_timeout_ms: 10_000,
            max_request_bytes: 8 * 1024,
        }
    }
}

impl WebSocketConfig {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.path.starts_with('/') && !self.path.contains(['?', '#', ' ']),
            "websocket.path must start with / and hold no query, fragment or space"
        );
        anyhow::ensure!(
            self.max_request_bytes >= 1024,
            "websocket.max_request_bytes must be at least 1024"
        );
        for origin in &self.allowed_origins {
            crate::listen::ws::origin::check_pattern(origin)
                .map_err(|why| anyhow::anyhow!("websocket.allowed_origins: {why}"))?;
        }
        for address in self.listen.iter().chain(&self.tls_listen) {
            anyhow::ensure!(
                address.ip().is_loopback() || !self.allowed_origins.is_empty(),
                "websocket.listen {address} is reachable from other machines: set \
                 websocket.allowed_origins to the origins of the pages that may connect \
                 (or [\"*\"] to allow any, knowingly)"
            );
        }
        Ok(())
    }
}

impl Config {
    /// The memory budget in bytes (`limits.max_memory_bytes`, or its default).
    pub fn memory_budget(&self) -> u64 {
        match self.limits.max_memory_bytes {
            0 => crate::budget::default_limit(),
            bytes => bytes,
        }
    }

    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut config = Config::from_toml(&text)
            .with_context(|| format!("in config file {}", path.display()))?;
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.heartbeat.grace_factor >= 1.0,
            "heartbeat.grace_factor must be at least 1.0"
        );
        anyhow::ensure!(
            self.flow.default_prefetch >= 1,
            "flow.default_prefetch must be >= 1"
        );
        anyhow::ensure!(
            self.flow.auto_ack_window >= 1,
            "flow.auto_ack_window must be >= 1"
        );
        anyhow::ensure!(
            self.flow.outbound_queue_frames >= 16,
            "flow.outbound_queue_frames must be >= 16"
        );
        anyhow::ensure!(
            self.limits.max_connections >= 1,
            "limits.max_connections must be >= 1"
        );
        anyhow::ensure!(
            self.limits.max_connections_per_address >= 1,
            "limits.max_connections_per_address must be >= 1"
        );
        anyhow::ensure!(
            self.limits.max_connect_frame_bytes >= 1024,
            "limits.max_connect_frame_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.dead_letter.prefix.starts_with("/queue/")
                && self.dead_letter.prefix.len() > "/queue/".len(),
            "dead_letter.prefix must start with /queue/ and name something after it"
        );
        anyhow::ensure!(
            self.store.segment_bytes >= 4096,
            "store.segment_bytes must be at least 4096"
        );
        anyhow::ensure!(
            self.store.fsync_interval_ms >= 1,
            "store.fsync_interval_ms must be at least 1"
        );
        self.websocket.validate()?;
        crate::vhost::config::validate(&self.vhosts, self.default_vhost.as_deref(), &self.plugins)?;
        anyhow::ensure!(
            self.tls.handshake_timeout_ms >= 1,
            "tls.handshake_timeout_ms must be at least 1"
        );
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }

    /// At least one STOMP listener (plain, TLS, WebSocket or WSS), and a TLS or WSS listener
    /// has its certificate and key. Checked once the command line's settings are in
    /// (`--no-tcp`, `--tls-cert`, ... complete or change the file's), not when a file is parsed.
    pub fn check_listeners(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.listen.is_some()
                || self.tls.listen.is_some()
                || self.websocket.listen.is_some()
                || self.websocket.tls_listen.is_some(),
            "no STOMP listener: `listen` is off and neither [tls] nor [websocket] has a `listen`"
        );
        if self.tls.listen.is_some() || self.websocket.tls_listen.is_some() {
            anyhow::ensure!(
                self.tls.cert.is_some() && self.tls.key.is_some(),
                "[tls] listen and [websocket] tls_listen need [tls] `cert` and `key` (PEM files)"
            );
        }
        Ok(())
    }

    /// The store's data directory: `store.data_dir` against the config file's directory, or
    /// `plugboard-data` in the working directory.
    pub fn data_dir(&self) -> PathBuf {
        match &self.store.data_dir {
            Some(dir) => self.base_dir.join(dir),
            None => PathBuf::from("plugboard-data"),
        }
    }

    /// Where compiled plugins are cached: `plugin_cache_dir` against the config file's
    /// directory, or `plugin-cache` in the data directory (private to the broker's user, never
    /// a shared directory such as /tmp that another user could create first).
    pub fn plugin_cache_dir(&self) -> PathBuf {
        match &self.plugin_cache_dir {
            Some(dir) => self.base_dir.join(dir),
            None => self.data_dir().join("plugin-cache"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_is_the_default() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(config.tls, TlsConfig::default());
        assert_eq!(config.heartbeat.grace_factor, 2.0);
    }

    #[test]
    fn the_plugin_cache_defaults_to_the_data_directory() {
        let mut config = Config::default();
        assert_eq!(
            config.plugin_cache_dir(),
            Path::new("plugboard-data").join("plugin-cache")
        );
        config.base_dir = PathBuf::from("/etc/plugboard");
        config.store.data_dir = Some(PathBuf::from("data"));
        assert_eq!(
            config.plugin_cache_dir(),
            Path::new("/etc/plugboard/data/plugin-cache")
        );
        config.plugin_cache_dir = Some(PathBuf::from("cache"));
        assert_eq!(config.plugin_cache_dir(), Path::new("/etc/plugboard/cache"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(format!("{err:#}").contains("listne"), "{err:#}");
        assert!(Config::from_toml("[limits]\nmax_frames = 3").is_err());
    }

    #[test]
    fn sections_override_defaults() {
        let config = Config::from_toml(
            "listen = \"127.0.0.1:0\"\n[flow]\nslow_consumer_policy = \"drop\"\n[[users]]\nlogin = \"a\"\npasscode = \"b\"\n",
        )
        .unwrap();
        assert_eq!(config.flow.slow_consumer_policy, SlowConsumerPolicy::Drop);
        assert_eq!(config.users.len(), 1);
        assert_eq!(
            config.flow.default_prefetch,
            FlowConfig::default().default_prefetch
        );
    }

    #[test]
    fn the_example_configs_parse() {
        let broker = Config::from_toml(include_str!("../../examples/broker.toml")).unwrap();
        assert!(broker.plugins.is_empty());
        assert_eq!(
            broker.limits.max_frame_bytes,
            LimitsConfig::default().max_frame_bytes
        );
        assert_eq!(
            broker.flow.queue_max_messages,
            FlowConfig::default().queue_max_messages
        );
        let demo = Config::from_toml(include_str!("../../examples/plugboard.toml")).unwrap();
        assert_eq!(demo.plugins.len(), 4);
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_validated_when_on() {
        assert!(Config::default().cluster.is_none());
        assert!(Config::from_toml("").unwrap().cluster.is_none());
        let on = Config::from_toml(
            "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nname = \"eu-1\"\nreplicas = 3\nstorage = \"memory\"\n",
        )
        .unwrap();
        let cluster = on.cluster.expect("[cluster] turns cluster mode on");
        assert_eq!(cluster.name, "eu-1");
        assert_eq!(cluster.replicas, 3);
        assert_eq!(cluster.storage, crate::cluster::Storage::Memory);
        assert_eq!(cluster.publish_timeout_ms, 5_000);
        let err = Config::from_toml("[cluster]\n").unwrap_err().to_string();
        assert!(err.contains("nats"), "{err}");
        assert!(Config::from_toml("[cluster]\nnats = [\"x:1\"]\nreplicas = 9\n").is_err());
        assert!(Config::from_toml("[cluster]\nnats = [\"x:1\"]\nstorage = \"tape\"\n").is_err());
        assert!(Config::from_toml("[cluster]\nnats = [\"x:1\"]\nbogus = 1\n").is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::from_toml("[heartbeat]\ngrace_factor = 0.5").is_err());
    }

    #[test]
    fn listeners_can_be_off_and_tls_needs_its_files() {
        let config = Config::from_toml("listen = \"off\"\n").unwrap();
        assert_eq!(config.listen, None);
        assert!(config.check_listeners().is_err(), "no listener at all");
        let tls = "listen = \"off\"\n[tls]\nlisten = \"127.0.0.1:61614\"\n";
        let config = Config::from_toml(tls).unwrap();
        let err = config.check_listeners().unwrap_err().to_string();
        assert!(err.contains("cert"), "{err}");
        let config =
            Config::from_toml(&format!("{tls}cert = \"c.pem\"\nkey = \"k.pem\"\n")).unwrap();
        config.check_listeners().unwrap();
        assert_eq!(config.tls.client_auth, ClientAuth::Required);
        assert_eq!(config.tls.handshake_timeout_ms, 5_000);
        let off =
            Config::from_toml("[tls]\nlisten = \"off\"\nclient_auth = \"optional\"\n").unwrap();
        assert_eq!(off.tls.listen, None);
        assert_eq!(off.tls.client_auth, ClientAuth::Optional);
        assert!(Config::from_toml("listen = \"nowhere\"\n").is_err());
        assert!(Config::from_toml("[tls]\nclient_auth = \"sometimes\"\n").is_err());
    }
}
