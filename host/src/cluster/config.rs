//! `[cluster]`: where the NATS servers are, how the edge logs in, the cluster's name (the
//! prefix of every subject and stream) and the settings of the streams and consumers it makes.
//! Absent (the default), the broker runs single-node and none of this is read.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where JetStream keeps the queues' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk on every replica: survives a NATS restart (the default).
    #[default]
    File,
    /// In memory on every replica: faster, lost when the NATS servers holding it all stop.
    Memory,
}

/// What a limit of the queues' stream does when it is reached (`[cluster] queue_overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOverflow {
    /// The oldest messages make room (JetStream's discard policy `old`), as `x-overflow:
    /// drop-head` on one node. The default.
    #[default]
    DropHead,
    /// The new message is refused and its SEND gets ERROR `flow.queue-full` (discard policy
    /// `new`, per queue for `queue_max_length`), as `x-overflow: reject-publish`.
    RejectPublish,
}

/// The longest cluster name: it starts every subject, stream and consumer name.
pub const MAX_NAME_LEN: usize = 32;

/// `[cluster]`: cluster mode, the NATS JetStream backend. See docs/cluster.md.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://HOST:PORT`, `tls://HOST:PORT`, or `HOST:PORT`); the client
    /// connects to one and fails over to the others (and to those the cluster announces).
    /// `--cluster-nats URL[,URL...]` replaces them.
    pub nats: Vec<String>,
    /// The cluster's name: the first token of every subject and the start of every stream name,
    /// so several Plugboard clusters can share one NATS system. Letters, digits, `-` and `_`, at
    /// most 32 characters. Every edge of one cluster must use the same name.
    pub name: String,
    /// Replicas of each stream (1, or 3 / 5 on a NATS cluster of that many JetStream servers):
    /// a publish is acknowledged once a majority of them stored it.
    pub replicas: usize,
    /// Where the streams keep messages: `file` (default) or `memory`.
    pub storage: Storage,
    /// NATS user name, with `password`.
    pub user: Option<String>,
    /// NATS password, with `user`. Never logged or shown.
    pub password: Option<String>,
    /// NATS authentication token (instead of `user`/`password`). Never logged or shown.
    pub token: Option<String>,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed, as `nsc` writes them)
    /// for decentralized (operator/account) authentication. Relative to the config file.
    pub creds: Option<PathBuf>,
    /// A file holding the edge's nkey seed (`SU...`), for servers that list users by nkey.
    /// Relative to the config file.
    pub nkey: Option<PathBuf>,
    /// `[cluster.tls]`: TLS to the NATS servers. Present: every connection is TLS (also to
    /// `nats://` URLs); absent: TLS only to `tls://` URLs (or servers that require it), against
    /// the system's root certificates.
    pub tls: Option<NatsTls>,
    /// How long a SEND to a `/queue/` waits for JetStream's publish acknowledgement; after it
    /// the SEND gets an ERROR (`cluster.unavailable`). 1 ms to 60 s; default 5 s.
    pub publish_timeout_ms: u64,
    /// How many `/queue/` SENDs one connection may have published and not yet acknowledged by
    /// JetStream: up to this many go out without waiting for each acknowledgement, in order;
    /// a RECEIPT, COMMIT or DISCONNECT waits for all before it (see docs/cluster.md,
    /// "Throughput"). 0: every SEND waits for its acknowledgement. 0 to 10,000; default 256.
    pub publish_window: u32,
    /// The bytes of messages one connection may have in that window (the one message that
    /// exceeds it alone goes out on its own). 1 KiB to 1 GiB; default 4 MiB.
    pub publish_window_bytes: u64,
    /// How long the edge waits at start for its first connection to NATS (and for each
    /// stream to be made); it refuses to start without one. Default 10 s.
    pub connect_timeout_ms: u64,
    /// JetStream's `ack_wait` for the queues' consumers: a message delivered to an edge that
    /// neither acknowledges nor refuses it in this time (the edge died) is delivered again,
    /// possibly on another edge. Default 30 s; at least 100 ms.
    pub ack_wait_ms: u64,
    /// JetStream's `max_ack_pending` for each queue's consumer: how many messages of one queue
    /// may be out with consumers on all edges together, unacknowledged. Default 10,000.
    pub max_ack_pending: u32,
    /// Most messages each queue holds in JetStream (the queue stream's
    /// `max_msgs_per_subject`: every queue is one subject of it). 0 (the default): no limit.
    pub queue_max_length: u64,
    /// Most messages a vhost's queues hold together (the stream's `max_msgs`). 0 (the
    /// default): no limit but the NATS servers' own JetStream limits.
    pub queue_max_messages: u64,
    /// Most bytes of messages a vhost's queues hold together (the stream's `max_bytes`). 0
    /// (the default): no limit but the NATS servers' own.
    pub queue_max_bytes: u64,
    /// What those limits do when reached: `drop-head` (the default) or `reject-publish`.
    pub queue_overflow: QueueOverflow,
    /// Queues whose message priorities (`priority` on SEND) apply across edges, as patterns
    /// of `[[queues]]` (`/queue/jobs.*`): each keeps three bands (5 to 9, 4, 0 to 3), each a
    /// subject with a consumer of its own, and its subscriptions take from the highest band
    /// first (see docs/cluster.md, "Message priority"). Every edge must list the same. At
    /// most 256 patterns. Default: none (a queue delivers in the order JetStream stored its
    /// messages).
    pub priority_queues: Vec<String>,
    /// Queues whose message groups (`JMSXGroupID` on SEND) apply across edges, as patterns of
    /// `[[queues]]`: a group's messages go to one subscription at a time, on whichever edge
    /// (see docs/cluster.md, "Message groups"). Every edge must list the same. At most 256
    /// patterns. Default: none (a group's messages go to whichever subscription pulls).
    pub group_queues: Vec<String>,
    /// Partitions of each such queue (1 to 64; each a durable consumer): groups are spread
    /// over them, and each is pulled by one subscription at a time. Default 8.
    pub group_partitions: u32,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            nats: Vec::new(),
            name: "plugboard".to_string(),
            replicas: 1,
            storage: Storage::File,
            user: None,
            password: None,
            token: None,
            creds: None,
            nkey: None,
            tls: None,
            publish_timeout_ms: 5_000,
            publish_window: 256,
            publish_window_bytes: 4 << 20,
            connect_timeout_ms: 10_000,
            ack_wait_ms: 30_000,
            max_ack_pending: 10_000,
            queue_max_length: 0,
            queue_max_messages: 0,
            queue_max_bytes: 0,
            queue_overflow: QueueOverflow::DropHead,
            priority_queues: Vec::new(),
            group_queues: Vec::new(),
            group_partitions: super::groups::DEFAULT_PARTITIONS,
        }
    }
}

// Written by hand so that the password and token never reach a log line or a status page
// (the reload compares settings through their `Debug` text).
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<set>");
        f.debug_struct("ClusterConfig")
            .field("nats", &self.nats)
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("storage", &self.storage)
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("tls", &self.tls)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("publish_window", &self.publish_window)
            .field("publish_window_bytes", &self.publish_window_bytes)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("ack_wait_ms", &self.ack_wait_ms)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("queue_max_length", &self.queue_max_length)
            .field("queue_max_messages", &self.queue_max_messages)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("queue_overflow", &self.queue_overflow)
            .field("priority_queues", &self.priority_queues)
            .field("group_queues", &self.group_queues)
            .field("group_partitions", &self.group_partitions)
            .finish()
    }
}

impl ClusterConfig {
    /// Checks every setting; the error says which and why.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.nats.is_empty(),
            "[cluster] nats must list at least one NATS server URL (or pass --cluster-nats URL)"
        );
        for url in &self.nats {
            check_url(url)?;
        }
        anyhow::ensure!(
            !self.name.is_empty()
                && self.name.len() <= MAX_NAME_LEN
                && self
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "[cluster] name '{}' must be 1 to {MAX_NAME_LEN} letters, digits, '-' or '_' (it starts every NATS subject and stream name)",
            crate::text::shown(self.name.as_bytes())
        );
        anyhow::ensure!(
            (1..=5).contains(&self.replicas),
            "[cluster] replicas must be 1 to 5 (JetStream's limit), not {}",
            self.replicas
        );
        anyhow::ensure!(
            self.password.is_none() || self.user.is_some(),
            "[cluster] password needs a user"
        );
        anyhow::ensure!(
            self.user.is_none() || self.password.is_some(),
            "[cluster] user needs a password"
        );
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds.is_some(),
            self.nkey.is_some(),
        ];
        anyhow::ensure!(
            ways.iter().filter(|&&set| set).count() <= 1,
            "[cluster] takes one way to log in to NATS: user and password, token, creds or nkey, not several"
        );
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        anyhow::ensure!(
            (1..=60_000).contains(&self.publish_timeout_ms),
            "[cluster] publish_timeout_ms must be 1 to 60000, not {}",
            self.publish_timeout_ms
        );
        anyhow::ensure!(
            self.publish_window <= 10_000,
            "[cluster] publish_window must be 0 to 10000, not {}",
            self.publish_window
        );
        anyhow::ensure!(
            (1024..=1 << 30).contains(&self.publish_window_bytes),
            "[cluster] publish_window_bytes must be 1024 to 1073741824, not {}",
            self.publish_window_bytes
        );
        anyhow::ensure!(
            (1..=600_000).contains(&self.connect_timeout_ms),
            "[cluster] connect_timeout_ms must be 1 to 600000, not {}",
            self.connect_timeout_ms
        );
        anyhow::ensure!(
            (100..=86_400_000).contains(&self.ack_wait_ms),
            "[cluster] ack_wait_ms must be 100 to 86400000, not {}",
            self.ack_wait_ms
        );
        anyhow::ensure!(
            self.max_ack_pending >= 1,
            "[cluster] max_ack_pending must be at least 1"
        );
        for (key, value) in [
            ("queue_max_length", self.queue_max_length),
            ("queue_max_messages", self.queue_max_messages),
            ("queue_max_bytes", self.queue_max_bytes),
        ] {
            anyhow::ensure!(
                i64::try_from(value).is_ok(),
                "[cluster] {key} must be 0 (no limit) to {}, not {value}",
                i64::MAX
            );
        }
        super::bands::validate(&self.priority_queues)?;
        super::groups::validate(&self.group_queues, self.group_partitions)?;
        Ok(())
    }

    /// `publish_timeout_ms` as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The queue stream's limits as JetStream takes them: `max_msgs_per_subject`, `max_msgs`,
    /// `max_bytes` (-1: none), the discard policy and whether it applies per subject.
    pub fn queue_limits(&self) -> QueueStreamLimits {
        let limit = |value: u64| match value {
            0 => -1,
            n => i64::try_from(n).unwrap_or(i64::MAX),
        };
        let reject = self.queue_overflow == QueueOverflow::RejectPublish;
        QueueStreamLimits {
            max_messages_per_subject: limit(self.queue_max_length),
            max_messages: limit(self.queue_max_messages),
            max_bytes: limit(self.queue_max_bytes),
            discard_new: reject,
            discard_new_per_subject: reject && self.queue_max_length > 0,
        }
    }

    /// `ack_wait_ms` as a duration.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
}

/// The limits of a vhost's queue stream (see [`ClusterConfig::queue_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStreamLimits {
    /// JetStream's `max_msgs_per_subject` (-1: none).
    pub max_messages_per_subject: i64,
    /// `max_msgs` (-1: none).
    pub max_messages: i64,
    /// `max_bytes` (-1: none).
    pub max_bytes: i64,
    /// Discard policy `new` (else `old`).
    pub discard_new: bool,
    /// `discard_new_per_subject`.
    pub discard_new_per_subject: bool,
}

impl QueueStreamLimits {
    /// Sets these limits in `config`.
    pub fn apply(&self, config: &mut async_nats::jetstream::stream::Config) {
        use async_nats::jetstream::stream::DiscardPolicy;
        config.max_messages_per_subject = self.max_messages_per_subject;
        config.max_messages = self.max_messages;
        config.max_bytes = self.max_bytes;
        config.discard = if self.discard_new {
            DiscardPolicy::New
        } else {
            DiscardPolicy::Old
        };
        config.discard_new_per_subject = self.discard_new_per_subject;
    }

    /// Whether `config` has these limits already.
    pub fn are_in(&self, config: &async_nats::jetstream::stream::Config) -> bool {
        let mut wanted = config.clone();
        self.apply(&mut wanted);
        wanted.max_messages_per_subject == config.max_messages_per_subject
            && wanted.max_messages == config.max_messages
            && wanted.max_bytes == config.max_bytes
            && wanted.discard == config.discard
            && wanted.discard_new_per_subject == config.discard_new_per_subject
    }
}

/// `[cluster.tls]`: TLS to the NATS servers, through async-nats' rustls (the `ring` provider the
/// broker's own TLS uses). The files are read and checked at start, and read again by the
/// client at each reconnect (a renewed certificate is picked up then).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTls {
    /// CA certificates (PEM) the NATS servers' certificates are verified against. Absent: the
    /// system's root certificates.
    pub ca: Option<PathBuf>,
    /// The edge's client certificate chain (PEM), for NATS servers that verify clients
    /// (`verify: true`): mutual TLS. With `key`.
    pub cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: Option<PathBuf>,
    /// Start TLS before NATS's INFO (`handshake_first` on the server, nats-server 2.10.4+);
    /// default false: the usual upgrade after INFO.
    pub handshake_first: bool,
}

impl NatsTls {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.cert.is_some() == self.key.is_some(),
            "[cluster.tls] cert and key go together (a client certificate needs its key)"
        );
        Ok(())
    }
}

/// A NATS server URL the client can use: `nats://`, `tls://` or no scheme, a host, a port.
fn check_url(url: &str) -> anyhow::Result<()> {
    let shown = crate::text::shown(url.as_bytes());
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .unwrap_or(url);
    anyhow::ensure!(
        !rest.contains("://"),
        "[cluster] nats URL '{shown}': the scheme must be nats:// or tls://"
    );
    // Credentials belong in `user`/`password`/`token`, where they are kept out of logs.
    anyhow::ensure!(
        !rest.contains('@'),
        "[cluster] nats URL '{shown}': put credentials in [cluster] user/password or token, not in the URL"
    );
    let host_port = rest.trim_end_matches('/');
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "4222"));
    anyhow::ensure!(
        !host.is_empty() && !host.contains(['/', ' ']),
        "[cluster] nats URL '{shown}' has no host"
    );
    anyhow::ensure!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "[cluster] nats URL '{shown}' has an invalid port"
    );
    url.parse::<async_nats::ServerAddr>()
        .map_err(|err| anyhow::anyhow!("[cluster] nats URL '{shown}': {err}"))?;
    Ok(())
}

/// Most patterns in `[cluster] priority_queues` or `group_queues`.
pub const MAX_QUEUE_PATTERNS: usize = 256;
/// Longest such pattern, in bytes.
pub const MAX_QUEUE_PATTERN_LEN: usize = 1024;

/// Checks the queue patterns of `[cluster] key` (`priority_queues`, `group_queues`): at most
/// [`MAX_QUEUE_PATTERNS`], each at most [`MAX_QUEUE_PATTERN_LEN`] bytes and naming queues.
pub fn check_queue_patterns(key: &str, patterns: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        patterns.len() <= MAX_QUEUE_PATTERNS,
        "[cluster] {key} lists {} patterns; at most {MAX_QUEUE_PATTERNS}",
        patterns.len()
    );
    for pattern in patterns {
        anyhow::ensure!(
            pattern.len() <= MAX_QUEUE_PATTERN_LEN,
            "[cluster] {key}: a pattern of {} bytes; at most {MAX_QUEUE_PATTERN_LEN}",
            pattern.len()
        );
        anyhow::ensure!(
            pattern.starts_with("/queue/") && pattern.len() > "/queue/".len(),
            "[cluster] {key}: '{}' must name queues (`/queue/NAME`, `*` allowed)",
            crate::text::shown(pattern.as_bytes())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut ClusterConfig)) -> anyhow::Result<()> {
        let mut config = ClusterConfig {
            nats: vec!["nats://127.0.0.1:4222".to_string()],
            ..ClusterConfig::default()
        };
        edit(&mut config);
        config.validate()
    }

    #[test]
    fn defaults_with_one_url_are_valid() {
        with(|_| {}).unwrap();
        with(|c| c.nats = vec!["127.0.0.1:4222".into(), "tls://nats.example:4443".into()]).unwrap();
    }

    type Edit = Box<dyn FnOnce(&mut ClusterConfig)>;

    #[test]
    fn each_bad_setting_is_named() {
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|c| c.nats.clear()), "at least one"),
            (Box::new(|c| c.nats = vec!["http://x:1".into()]), "scheme"),
            (
                Box::new(|c| c.nats = vec!["nats://u:p@x:1".into()]),
                "credentials",
            ),
            (Box::new(|c| c.nats = vec!["nats://x:99999".into()]), "port"),
            (
                Box::new(|c| c.nats = vec!["nats://:4222".into()]),
                "no host",
            ),
            (Box::new(|c| c.name = "a.b".into()), "name"),
            (Box::new(|c| c.name = String::new()), "name"),
            (Box::new(|c| c.name = "x".repeat(33)), "name"),
            (Box::new(|c| c.replicas = 0), "replicas"),
            (Box::new(|c| c.replicas = 7), "replicas"),
            (Box::new(|c| c.password = Some("p".into())), "needs a user"),
            (Box::new(|c| c.user = Some("u".into())), "needs a password"),
            (
                Box::new(|c| {
                    c.user = Some("u".into());
                    c.password = Some("p".into());
                    c.token = Some("t".into());
                }),
                "one way to log in",
            ),
            (
                Box::new(|c| {
                    c.token = Some("t".into());
                    c.creds = Some("edge.creds".into());
                }),
                "one way to log in",
            ),
            (
                Box::new(|c| {
                    c.user = Some("u".into());
                    c.password = Some("p".into());
                    c.nkey = Some("edge.nk".into());
                }),
                "one way to log in",
            ),
            (
                Box::new(|c| {
                    c.tls = Some(NatsTls {
                        cert: Some("edge.pem".into()),
                        ..NatsTls::default()
                    })
                }),
                "cert and key",
            ),
            (Box::new(|c| c.publish_timeout_ms = 0), "publish_timeout_ms"),
            (Box::new(|c| c.publish_window = 10_001), "publish_window"),
            (
                Box::new(|c| c.publish_window_bytes = 1023),
                "publish_window_bytes",
            ),
            (
                Box::new(|c| c.publish_window_bytes = (1 << 30) + 1),
                "publish_window_bytes",
            ),
            (Box::new(|c| c.ack_wait_ms = 10), "ack_wait_ms"),
            (Box::new(|c| c.max_ack_pending = 0), "max_ack_pending"),
            (
                Box::new(|c| c.queue_max_length = u64::MAX),
                "queue_max_length",
            ),
            (
                Box::new(|c| c.queue_max_messages = 1 << 63),
                "queue_max_messages",
            ),
            (
                Box::new(|c| c.queue_max_bytes = u64::MAX),
                "queue_max_bytes",
            ),
        ];
        for (edit, expected) in cases {
            let err = with(edit).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn queue_limits_map_onto_the_stream() {
        use async_nats::jetstream::stream::{Config, DiscardPolicy};
        // None: no limits, old messages discarded (JetStream's defaults).
        let none = ClusterConfig::default().queue_limits();
        let mut stream = Config::default();
        none.apply(&mut stream);
        assert_eq!(
            (
                stream.max_messages_per_subject,
                stream.max_messages,
                stream.max_bytes
            ),
            (-1, -1, -1)
        );
        assert_eq!(stream.discard, DiscardPolicy::Old);
        assert!(none.are_in(&stream));

        let config: ClusterConfig = toml::from_str(
            "queue_max_length = 3\nqueue_max_bytes = 1000\nqueue_overflow = \"reject-publish\"",
        )
        .unwrap();
        let reject = config.queue_limits();
        assert!(!reject.are_in(&stream), "a change is seen");
        reject.apply(&mut stream);
        assert_eq!(
            (
                stream.max_messages_per_subject,
                stream.max_messages,
                stream.max_bytes
            ),
            (3, -1, 1000)
        );
        assert_eq!(stream.discard, DiscardPolicy::New);
        assert!(stream.discard_new_per_subject);
        assert!(reject.are_in(&stream));

        // Without a per-queue limit, reject-publish does not ask for the per-subject discard
        // (JetStream refuses it without max_msgs_per_subject).
        let config: ClusterConfig =
            toml::from_str("queue_max_messages = 10\nqueue_overflow = \"reject-publish\"").unwrap();
        assert!(!config.queue_limits().discard_new_per_subject);
        assert!(toml::from_str::<ClusterConfig>("queue_overflow = \"drop-tail\"").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_text() {
        let config = ClusterConfig {
            user: Some("edge".into()),
            password: Some("hunter2-secret".into()),
            token: Some("tok-secret".into()),
            ..ClusterConfig::default()
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("tok-secret"),
            "{text}"
        );
        assert!(text.contains("edge"));
    }
}
