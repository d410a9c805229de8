//! `plugboard-bench`: a small STOMP 1.2 load generator and delivery checker.
//!
//! It speaks raw STOMP over TCP with its own codec and does not link the broker, so it works
//! against any STOMP 1.2 broker and builds in seconds.
//!
//! ```text
//! plugboard-bench queue --addr 127.0.0.1:61613 --producers 4 --consumers 4 \
//!     --messages 100000 --size 128 [--ack auto|client|client-individual] [--window 1000] \
//!     [--login L --passcode P] [--destination /queue/bench] [--broker-pid PID] [--timeout 120]
//! plugboard-bench topic --subscribers 4 --messages 50000 [same options]
//! ```
//!
//! * `queue`: N producers → one queue → M competing consumers; together the consumers must
//!   receive every message exactly once.
//! * `topic`: N producers (default 1) → one topic → M subscribers; *each* subscriber must
//!   receive every message exactly once.
//!
//! Consumers subscribe (with a receipt) before the producers start. Every message carries
//! `p:<producer>`, `s:<sequence>` and a per-run `run` tag; each producer asks for a receipt
//! every 100 messages (and on its last) and keeps at most `--window` messages unconfirmed.
//! Counted: *lost* messages (covered by a RECEIPT, yet not received once the producers have
//! finished and 10 s passed without progress), *undelivered* ones (sent without a receipt
//! covering them, because their producer failed, or still in flight at `--timeout`),
//! duplicates, per-consumer per-producer reordering, and *stale* messages (from an earlier run,
//! recognised by the `run` header; ignored). With `--broker-pid`, the broker's CPU time
//! (`/proc/PID/stat`) over the run gives CPU µs per delivered message, and its VmHWM/VmRSS are
//! reported. Throughput is measured from the producers' start to the last first delivery;
//! MB/s counts body bytes only (1 MB = 10^6 bytes).
//!
//! Output: one human-readable line, then one JSON line (`{"scenario":"queue",...}`).
//! Exit status: 0 success, 1 any message lost or duplicated, 2 any other failure (errors,
//! stall, `--timeout` reached).

mod codec;
mod conn;
mod report;
mod run;
mod stats;
mod tracker;

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

Prints one summary line, then one JSON line ({\"scenario\":...}). Throughput runs from the
producers' start to the last first delivery; MB/s counts body bytes (1 MB = 10^6 B).
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
}

#[derive(Debug, Args)]
struct Common {
    /// Broker address.
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
    /// Broker process id, for CPU time and memory readings from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Overall time limit in seconds; reaching it fails the run.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn plan(scenario: Scenario) -> Plan {
    let (name, producers, consumers, fan_out, common) = match scenario {
        Scenario::Queue {
            producers,
            consumers,
            common,
        } => ("queue", producers, consumers, false, common),
        Scenario::Topic {
            producers,
            subscribers,
            common,
        } => ("topic", producers, subscribers, true, common),
    };
    let destination = common
        .destination
        .unwrap_or_else(|| format!("/{name}/bench"));
    Plan {
        scenario: name,
        endpoint: Endpoint {
            addr: common.addr,
            login: common.login,
            passcode: common.passcode,
        },
        destination,
        producers,
        consumers,
        fan_out,
        messages: common.messages,
        size: common.size,
        ack: common.ack,
        window: common.window,
        broker_pid: common.broker_pid,
        timeout: Duration::from_secs(common.timeout),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let plan = plan(Cli::parse().scenario);
    if plan.producers == 0 || plan.consumers == 0 {
        eprintln!("error: need at least one producer and one consumer");
        return std::process::ExitCode::from(2);
    }
    let report = run::run(plan).await;
    report.print();
    if report.lost_or_duplicated() {
        std::process::ExitCode::from(1)
    } else if report.failed() {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
