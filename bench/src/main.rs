//! `plugboard-bench`: a small STOMP 1.2 load generator and delivery checker.
//!
//! It speaks raw STOMP over TCP with its own codec and does not link the broker, so it works
//! against any STOMP 1.2 broker and builds in seconds.
//!
//! ```text
//! plugboard-bench queue --addr 127.0.0.1:61613 --producers 4 --consumers 4 \
//!     --messages 100000 --size 128 [--ack auto|client|client-individual] [--window 1000] \
//!     [--login L --passcode P] [--destination /queue/bench] [--broker-pid PID] [--timeout 120]
//! plugboard-bench topic --subscribers 4 --messages 50000 [--idle-patterns 10000] [same options]
//! plugboard-bench latency --rate 1000 --seconds 10 [--size 128] [same options]
//! plugboard-bench idle --connections 1000 --broker-pid PID [--addr, --login, --passcode]
//! plugboard-bench relay --listen 127.0.0.1:61626    # the floor to compare brokers with
//! plugboard-bench schedule --background 1000000 --due 100000 --broker-pid PID
//! ```
//!
//! * `queue`: N producers → one queue → M competing consumers; together the consumers must
//!   receive every message exactly once.
//! * `topic`: N producers (default 1) → one topic → M subscribers; *each* subscriber must
//!   receive every message exactly once.
//! * `latency`: 1 producer → one queue → 1 consumer at a fixed rate; every message carries its
//!   send time (`t`, ns since the run's start, same process) and the consumer reports the
//!   end-to-end p50/p99/p99.9/max in µs. Loss and duplicates are checked as for `queue`.
//! * `idle`: opens `--connections` idle connected sessions and reports the broker's VmRSS
//!   growth per connection.
//! * `schedule`: scheduled delivery at scale (see `schedule.rs`): memory per scheduled
//!   message, idle CPU while holding them, broker CPU per delivered scheduled message.
//!
//! Every SUBSCRIBE carries both flow-window aliases, `prefetch-count` (RabbitMQ) and
//! `activemq.prefetchSize` (ActiveMQ), set to `--prefetch` (Plugboard understands both), so the
//! same command line means the same thing against all three brokers.
//!
//! Consumers subscribe (with a receipt) before the producers start. Every message carries
//! `p:<producer>`, `s:<sequence>` and a per-run `run` tag; each producer asks for a receipt
//! every 100 messages (and on its last) and keeps at most `--window` messages unconfirmed.
//! Counted: *lost* messages (covered by a RECEIPT, yet not received once the producers have
//! finished and 10 s passed without progress), *undelivered* ones (sent without a receipt
//! covering them, because their producer failed, or still in flight at `--timeout`),
//! duplicates, per-consumer per-producer reordering, and *stale* messages (from an earlier run,
//! recognised by the `run` header; ignored). With `--broker-pid`, the broker's CPU time
//! (`/proc/PID/stat`) over the run gives CPU µs per delivered message, and its VmHWM and its
//! VmRSS before the run, right after it and `--rss-settle` seconds after the connections closed
//! are reported. Throughput is measured from the producers' start to the last first delivery;
//! MB/s counts body bytes only (1 MB = 10^6 bytes).
//!
//! Output: one human-readable line, then one JSON line (`{"scenario":"queue",...}`); with
//! `--json` the JSON line alone. On a terminal, `queue`, `topic` and `latency` show live
//! progress on stderr while they run (see `progress.rs`); never with `--json` or when stderr is
//! not a terminal.
//! Exit status: 0 success, 1 any message lost or duplicated, 2 any other failure (errors,
//! stall, `--timeout` reached).

mod codec;
mod conn;
mod idle;
mod patterns;
mod progress;
mod relay;
mod report;
mod run;
mod schedule;
mod stats;
mod tracker;
mod ws;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use conn::Endpoint;
use run::Plan;

/// Shown after `--help`.
const AFTER_HELP: &str = "\
Examples:
  plugboard-bench queue --addr 127.0.0.1:61613 --producers 4 --consumers 4 --messages 100000 \\
      --size 128 --ack client-individual --broker-pid $(pgrep -n plugboard)
  plugboard-bench topic --addr 127.0.0.1:61613 --subscribers 4 --messages 50000
  plugboard-bench latency --addr 127.0.0.1:61613 --rate 1000 --seconds 10
  plugboard-bench idle --addr 127.0.0.1:61613 --connections 1000 --broker-pid $(pgrep -n plugboard)

Prints one summary line, then one JSON line ({\"scenario\":...}); --json: the JSON line only.
On a terminal, live progress (sent, received, rate, elapsed) is shown on stderr meanwhile,
unless --json. Throughput runs from the producers' start to the last first delivery; MB/s
counts body bytes (1 MB = 10^6 B).
Exit status: 0 success, 1 a message lost (receipted but never delivered) or duplicated,
2 any other failure (errors, stall, --timeout).";

/// STOMP 1.2 load generator: throughput, broker CPU per message, and loss/duplicate checks.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Producers → one queue → competing consumers (each message delivered once overall).
    Queue {
        /// Producer connections.
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// Consumer connections (one subscription each).
        #[arg(long, default_value_t = 4)]
        consumers: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Producers → one topic → subscribers (each message delivered to every subscriber).
    Topic {
        /// Producer connections.
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// Subscriber connections (one subscription each).
        #[arg(long, default_value_t = 4)]
        subscribers: usize,
        #[command(flatten)]
        common: Common,
    },
    /// 1 producer at a fixed rate → one queue → 1 consumer: end-to-end latency percentiles.
    /// `--messages` is ignored (rate × seconds are sent).
    Latency {
        /// Messages per second.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rate: u64,
        /// Duration of the sending, in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Opens N idle connected sessions: broker VmRSS growth per connection.
    Idle {
        /// Connections to open (the bench needs that many file descriptors).
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold them open before reading the broker's memory.
        #[arg(long, default_value_t = 2)]
        hold: u64,
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:61613")]
        addr: String,
        /// CONNECT login.
        #[arg(long)]
        login: Option<String>,
        /// CONNECT passcode.
        #[arg(long)]
        passcode: Option<String>,
        /// Broker process id (required: the point is its memory).
        #[arg(long)]
        broker_pid: u32,
    },
    /// Scheduled delivery at scale: memory per scheduled message, the scheduler's idle CPU
    /// while holding them, broker CPU per delivered scheduled message.
    Schedule {
        /// Messages scheduled far ahead (never due during the run).
        #[arg(long, default_value_t = 1_000_000)]
        background: u64,
        /// Messages scheduled for one instant and consumed.
        #[arg(long, default_value_t = 100_000)]
        due: u64,
        /// Producer connections.
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// Body size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds of idle CPU reading with the background scheduled.
        #[arg(long, default_value_t = 10)]
        idle: u64,
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:61613")]
        addr: String,
        /// CONNECT login.
        #[arg(long)]
        login: Option<String>,
        /// CONNECT passcode.
        #[arg(long)]
        passcode: Option<String>,
        /// Broker process id (required: the point is its memory and CPU).
        #[arg(long)]
        broker_pid: u32,
    },
    /// Not a scenario: serves as the floor to measure brokers against (see `relay.rs`), a
    /// relay that writes each SEND straight to a subscriber's socket. Runs until killed.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:61626")]
        listen: String,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Broker address: HOST:PORT, or ws://HOST:PORT/PATH for STOMP over WebSocket.
    #[arg(long, default_value = "127.0.0.1:61613")]
    addr: String,
    /// Messages in total (split evenly over the producers).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Subscription ack mode.
    #[arg(long, default_value = "auto", value_parser = ["auto", "client", "client-individual"])]
    ack: String,
    /// Most unconfirmed (no receipt yet) messages per producer.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// CONNECT login.
    #[arg(long)]
    login: Option<String>,
    /// CONNECT passcode.
    #[arg(long)]
    passcode: Option<String>,
    /// Destination [default: /queue/bench or /topic/bench].
    #[arg(long)]
    destination: Option<String>,
    /// Subscription window sent as both `prefetch-count` and `activemq.prefetchSize`
    /// (0: send neither, the broker's default applies).
    #[arg(long, default_value_t = 1000)]
    prefetch: u64,
    /// Extra SEND header NAME:VALUE (repeatable), e.g. for a routing plugin's rule.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Extra SUBSCRIBE header NAME:VALUE (repeatable), e.g. `selector:p IS NOT NULL`.
    #[arg(long = "subscribe-header", value_name = "NAME:VALUE", value_parser = parse_header)]
    subscribe_headers: Vec<(String, String)>,
    /// Where the consumers subscribe [default: the destination the producers send to], for
    /// runs where a routing plugin moves the messages.
    #[arg(long)]
    consume_from: Option<String>,
    /// Where the consumers connect, HOST:PORT [default: --addr]: another broker of a cluster
    /// than the producers' (bench/cluster.sh: produce on one edge, consume on the next).
    #[arg(long)]
    consume_addr: Option<String>,
    /// Wildcard topic subscriptions that match nothing of the run, held open on connections
    /// of their own during it (see `patterns.rs`): the cost of unmatched patterns.
    #[arg(long, default_value_t = 0)]
    idle_patterns: usize,
    /// Message groups: each SEND carries `JMSXGroupID` `pP-gN`, N its sequence modulo this,
    /// P its producer (0: no groups).
    #[arg(long, default_value_t = 0)]
    groups: u64,
    /// Message priorities: each SEND carries `priority` its sequence modulo 10 (a cluster
    /// priority queue's three bands: 0-3, 4, 5-9).
    #[arg(long)]
    priorities: bool,
    /// STOMP over TLS: the CA certificate(s) (PEM) the broker's certificate chains to; the
    /// server name is the host part of --addr.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Broker process id, for CPU time and memory readings from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// With --broker-pid: seconds to wait after the connections closed before the last
    /// VmRSS reading ("RSS after a burst").
    #[arg(long, default_value_t = 2.0)]
    rss_settle: f64,
    /// Overall time limit in seconds; reaching it fails the run.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print only the JSON line on stdout (no summary line) and no live progress on stderr.
    #[arg(long)]
    json: bool,
}

/// `NAME:VALUE` (split on the first colon).
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME:VALUE, got {s:?}")),
    }
}

fn plan(scenario: Scenario) -> Plan {
    let (name, producers, consumers, fan_out, rate, mut common) = match scenario {
        Scenario::Queue {
            producers,
            consumers,
            common,
        } => ("queue", producers, consumers, false, None, common),
        Scenario::Topic {
            producers,
            subscribers,
            common,
        } => ("topic", producers, subscribers, true, None, common),
        Scenario::Latency {
            rate,
            seconds,
            common,
        } => ("latency", 1, 1, false, Some((rate, seconds)), common),
        Scenario::Idle { .. } | Scenario::Relay { .. } | Scenario::Schedule { .. } => {
            unreachable!("no plan to run")
        }
    };
    if let Some((rate, seconds)) = rate {
        common.messages = rate * seconds;
    }
    let destination = common.destination.unwrap_or_else(|| match name {
        "latency" => "/queue/bench.latency".to_string(),
        _ => format!("/{name}/bench"),
    });
    let consume_from = common.consume_from.unwrap_or_else(|| destination.clone());
    let endpoint = Endpoint {
        addr: common.addr,
        login: common.login,
        passcode: common.passcode,
        tls: common.tls_ca.as_deref().map(|ca| {
            conn::tls_connector(ca).unwrap_or_else(|e| {
                eprintln!("error: --tls-ca: {e:#}");
                std::process::exit(2)
            })
        }),
    };
    let consume_endpoint = Endpoint {
        addr: common.consume_addr.unwrap_or_else(|| endpoint.addr.clone()),
        ..endpoint.clone()
    };
    Plan {
        scenario: name,
        endpoint,
        consume_endpoint,
        destination,
        consume_from,
        producers,
        consumers,
        fan_out,
        messages: common.messages,
        size: common.size,
        ack: common.ack,
        window: common.window,
        prefetch: common.prefetch,
        send_headers: common.headers,
        subscribe_headers: common.subscribe_headers,
        idle_patterns: common.idle_patterns,
        groups: common.groups,
        priorities: common.priorities,
        rate: rate.map(|(r, _)| r),
        broker_pid: common.broker_pid,
        rss_settle: Duration::from_secs_f64(common.rss_settle.max(0.0)),
        timeout: Duration::from_secs(common.timeout),
        json_only: common.json,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let scenario = Cli::parse().scenario;
    if let Scenario::Relay { listen } = &scenario {
        // Blocking threads of its own; the runtime stays idle.
        return match relay::run(listen) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if let Scenario::Idle {
        connections,
        hold,
        addr,
        login,
        passcode,
        broker_pid,
    } = scenario
    {
        let endpoint = Endpoint {
            addr,
            login,
            passcode,
            tls: None,
        };
        let hold = Duration::from_secs(hold);
        return match idle::run(&endpoint, connections, hold, broker_pid).await {
            Ok(report) => {
                report.print();
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if let Scenario::Schedule {
        background,
        due,
        producers,
        size,
        idle,
        addr,
        login,
        passcode,
        broker_pid,
    } = scenario
    {
        let plan = schedule::SchedulePlan {
            endpoint: Endpoint {
                addr,
                login,
                passcode,
                tls: None,
            },
            background,
            due,
            producers,
            size,
            idle: Duration::from_secs(idle),
            broker_pid,
        };
        return match schedule::run(plan).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let plan = plan(scenario);
    if plan.producers == 0 || plan.consumers == 0 {
        eprintln!("error: need at least one producer and one consumer");
        return std::process::ExitCode::from(2);
    }
    let json_only = plan.json_only;
    let report = run::run(plan).await;
    report.print(json_only);
    if report.lost_or_duplicated() {
        std::process::ExitCode::from(1)
    } else if report.failed() {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_header, plan, relay, run, Cli};
    use clap::Parser;

    /// The bench's own checks pass through the relay (queue and topic), so a relay column in
    /// `compare.sh` is a real measurement, not a failed run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scenarios_pass_through_the_relay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || relay::serve_on(listener));
        for args in [
            &[
                "queue",
                "--producers",
                "2",
                "--consumers",
                "2",
                "--size",
                "1000",
            ][..],
            &["topic", "--producers", "1", "--subscribers", "3"][..],
        ] {
            let mut argv = vec!["plugboard-bench"];
            argv.extend_from_slice(args);
            argv.extend_from_slice(&["--messages", "2000", "--timeout", "30", "--addr", &addr]);
            let report = run::run(plan(Cli::parse_from(argv).scenario)).await;
            assert!(
                !report.lost_or_duplicated() && !report.failed(),
                "{args:?} through the relay failed"
            );
        }
    }

    #[test]
    fn header_arguments_split_on_the_first_colon() {
        assert_eq!(
            parse_header("selector:p IS NOT NULL").unwrap(),
            ("selector".to_string(), "p IS NOT NULL".to_string())
        );
        assert_eq!(
            parse_header("a:b:c").unwrap(),
            ("a".to_string(), "b:c".to_string())
        );
        assert!(parse_header(":x").is_err());
        assert!(parse_header("novalue").is_err());
    }
}
