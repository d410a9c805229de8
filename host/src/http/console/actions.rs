//! The console's actions, `POST /api/queues/purge`, `POST /api/queues/move` and
//! `POST /api/connections/close`: each takes a small JSON object (unknown fields refused),
//! does one thing, answers JSON, and is logged with who asked (the caller's address), what and
//! the result. The access rules (a configured token, carried as a bearer token) are checked
//! before anything here runs (see the [`http`](crate::http) module).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use crate::broker::Broker;
use crate::router::{Published, Queue};
use crate::vhost::Vhost;

/// Most messages one move request takes out of its queue.
pub const MAX_MOVE: usize = 10_000;
/// How long a move waits for room in a full target queue before it stops.
const MOVE_WAIT: Duration = Duration::from_secs(1);
/// How many messages a move out of a cluster queue takes from JetStream at a time (and holds
/// in memory at most, beside those it leaves where they are, of which it keeps only the ack).
const MOVE_CHUNK: usize = 32;

/// What an action answers: an HTTP status and a JSON body.
pub type Outcome = (&'static str, Value);

fn refused(code: &'static str, error: impl std::fmt::Display) -> Outcome {
    (code, json!({ "error": error.to_string() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    queue: String,
    /// The queue's virtual host (see [`vhost_for`]).
    #[serde(default)]
    vhost: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    from: String,
    /// The virtual host of both queues (see [`vhost_for`]).
    #[serde(default)]
    vhost: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    max: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    id: u64,
}

/// Parses an action's body: a JSON object with the fields of `T` and no others.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Outcome> {
    let bad = |err: String| refused("400 Bad Request", format!("body: {err}"));
    let value: Value = serde_json::from_slice(body).map_err(|err| bad(err.to_string()))?;
    if !value.is_object() {
        return Err(bad("a JSON object is expected".into()));
    }
    serde_json::from_value(value).map_err(|err| bad(err.to_string()))
}

/// Runs the action at `path` with `body`, for the caller at `peer`.
pub async fn run(path: &[u8], body: &[u8], broker: &Broker, peer: SocketAddr) -> Outcome {
    let outcome = match path {
        b"/api/queues/purge" => match parse::<PurgeRequest>(body) {
            Ok(request) => purge(broker, &request).await,
            Err(outcome) => outcome,
        },
        b"/api/queues/move" => match parse::<MoveRequest>(body) {
            Ok(request) => move_messages(broker, &request).await,
            Err(outcome) => outcome,
        },
        b"/api/connections/close" => match parse::<CloseRequest>(body) {
            Ok(request) => close(broker, &request),
            Err(outcome) => outcome,
        },
        _ => return refused("404 Not Found", "no such action"),
    };
    info!(
        kind = "admin-action",
        actor = %peer,
        action = %String::from_utf8_lossy(path),
        request = %String::from_utf8_lossy(body),
        status = outcome.0,
        result = %outcome.1,
        "admin action"
    );
    outcome
}

/// The vhost an action names; without a name, the only vhost, or else `/`.
fn vhost_for<'b>(broker: &'b Broker, name: Option<&str>) -> Result<&'b Arc<Vhost>, Outcome> {
    let vhosts = &broker.vhosts;
    match name {
        Some(name) => vhosts
            .get(name)
            .ok_or_else(|| refused("404 Not Found", format!("no virtual host {name}"))),
        None if vhosts.len() == 1 => Ok(vhosts.iter().next().expect("one vhost")),
        None => vhosts.get("/").ok_or_else(|| {
            refused(
                "400 Bad Request",
                "several virtual hosts and no `/`: name the `vhost`",
            )
        }),
    }
}

async fn purge(broker: &Broker, request: &PurgeRequest) -> Outcome {
    let vhost = match vhost_for(broker, request.vhost.as_deref()) {
        Ok(vhost) => vhost,
        Err(outcome) => return outcome,
    };
    let Some(queue) = vhost.router.existing_queue(request.queue.as_bytes()) else {
        return refused("404 Not Found", format!("no queue {}", request.queue));
    };
    // A cluster queue's messages are in JetStream, for every edge.
    let purged = match queue.remote() {
        Some(remote) => match remote.purge().await {
            Ok(purged) => purged as usize,
            Err(err) => {
                return refused(
                    "503 Service Unavailable",
                    format!("the cluster did not purge {}: {err}", request.queue),
                )
            }
        },
        None => queue.purge(),
    };
    (
        "200 OK",
        json!({ "vhost": &*vhost.name, "queue": request.queue, "purged": purged }),
    )
}

fn close(broker: &Broker, request: &CloseRequest) -> Outcome {
    let Some(connection) = broker.registry.get(request.id) else {
        return refused(
            "404 Not Found",
            format!("no open connection {}", request.id),
        );
    };
    connection.request_close();
    ("200 OK", json!({ "closed": request.id }))
}

/// The queue a dead-lettered message came from, by its `dlq-original-destination` header.
fn original_destination(message: &crate::router::Message) -> Option<&[u8]> {
    message
        .headers
        .iter()
        .find(|(name, _)| name.as_ref() == b"dlq-original-destination")
        .map(|(_, value)| value.as_ref())
}

async fn move_messages(broker: &Broker, request: &MoveRequest) -> Outcome {
    let vhost = match vhost_for(broker, request.vhost.as_deref()) {
        Ok(vhost) => vhost,
        Err(outcome) => return outcome,
    };
    let router = &vhost.router;
    let Some(source) = router.existing_queue(request.from.as_bytes()) else {
        return refused("404 Not Found", format!("no queue {}", request.from));
    };
    let fixed = match request
        .to
        .as_deref()
        .map(|to| router.queue_for_admin(to.as_bytes()))
    {
        None => None,
        Some(Ok(queue)) if queue.name == source.name => {
            return refused("400 Bad Request", "`to` is the queue the messages are in")
        }
        Some(Ok(queue)) => Some(queue),
        Some(Err(err)) => return refused("400 Bad Request", err),
    };
    let limit = request.max.unwrap_or(MAX_MOVE).min(MAX_MOVE);
    if let Some(remote) = source.remote() {
        return move_from_cluster(vhost, &source, remote, request, fixed, limit).await;
    }
    let mut report = MoveReport::default();
    let mut skipped = Vec::new();
    for _ in 0..limit {
        let Some(taken) = source.take_for_move() else {
            break;
        };
        let Some(target) = move_target(vhost, &source, fixed.as_ref(), taken.message()) else {
            // No queue to go back to: it stays (put back once the move is over).
            skipped.push(taken);
            continue;
        };
        let copy = router.moved_copy(taken.message(), target.name.clone());
        match tokio::time::timeout(MOVE_WAIT, target.publish(copy)).await {
            Ok(Published::Queued) => {
                source.finish_move(taken);
                report.moved_to(&target);
            }
            Ok(Published::Dropped | Published::Rejected | Published::Unavailable) | Err(_) => {
                source.put_back(taken);
                report.stopped_at(&target);
                break;
            }
        }
    }
    report.skipped = skipped.len();
    for taken in skipped {
        source.put_back(taken);
    }
    report.answer(vhost, request, Some(source.depth()))
}

/// Where a moved message goes: `fixed` (the request's `to`), or else the queue its
/// `dlq-original-destination` header names (not `source` itself); none without either.
fn move_target(
    vhost: &Vhost,
    source: &Queue,
    fixed: Option<&Arc<Queue>>,
    message: &crate::router::Message,
) -> Option<Arc<Queue>> {
    match fixed {
        Some(queue) => Some(queue.clone()),
        None => original_destination(message)
            .and_then(|name| vhost.router.queue_for_admin(name).ok())
            .filter(|queue| queue.name != source.name),
    }
}

/// What a move did, for its answer.
#[derive(Default)]
struct MoveReport {
    moved: usize,
    targets: BTreeMap<String, usize>,
    /// Messages without a queue to go to (they stay).
    skipped: usize,
    stopped: Option<String>,
}

impl MoveReport {
    fn moved_to(&mut self, target: &Queue) {
        self.moved += 1;
        *self
            .targets
            .entry(String::from_utf8_lossy(&target.name).into_owned())
            .or_default() += 1;
    }

    fn stopped_at(&mut self, target: &Queue) {
        self.stopped = Some(format!(
            "{} is full or unavailable: the move stopped there",
            String::from_utf8_lossy(&target.name)
        ));
    }

    /// The answer; `remaining`: the source's depth, when the edge knows it.
    fn answer(self, vhost: &Vhost, request: &MoveRequest, remaining: Option<usize>) -> Outcome {
        (
            "200 OK",
            json!({
                "vhost": &*vhost.name,
                "from": request.from,
                "moved": self.moved,
                "targets": self.targets,
                "skipped_without_target": self.skipped,
                "remaining": remaining,
                "stopped": self.stopped,
            }),
        )
    }
}

/// [`move_messages`] out of a cluster queue: its messages are taken from JetStream
/// [`MOVE_CHUNK`] at a time (see [`crate::cluster::RemoteQueue::take_for_move`]), so memory
/// holds at most that many, each acknowledged there once its copy is in the target queue (for
/// a cluster target: stored by JetStream), handed back otherwise.
async fn move_from_cluster(
    vhost: &Arc<Vhost>,
    source: &Queue,
    remote: &Arc<crate::cluster::RemoteQueue>,
    request: &MoveRequest,
    fixed: Option<Arc<Queue>>,
    limit: usize,
) -> Outcome {
    let router = &vhost.router;
    let mut report = MoveReport::default();
    // Left where they are (no queue to go to), handed back once the move is over.
    let mut deferred = Vec::new();
    let mut asked = 0;
    'chunks: while asked < limit {
        let want = (limit - asked).min(MOVE_CHUNK);
        asked += want;
        let chunk = match remote.take_for_move(want, router.budget()).await {
            Ok(chunk) => chunk,
            Err(err) if report.moved == 0 && deferred.is_empty() => {
                return refused(
                    "503 Service Unavailable",
                    format!(
                        "the cluster did not give {}'s messages: {err}",
                        request.from
                    ),
                )
            }
            Err(err) => {
                report.stopped = Some(format!("the cluster stopped giving messages: {err}"));
                break;
            }
        };
        let last = chunk.len() < want;
        let mut chunk = chunk.into_iter();
        for moving in chunk.by_ref() {
            let Some(target) = move_target(vhost, source, fixed.as_ref(), &moving.message) else {
                deferred.push(moving.defer());
                continue;
            };
            let copy = router.moved_copy(&moving.message, target.name.clone());
            let stored = match target.remote() {
                // Bounded by `publish_timeout_ms`; not cut shorter, or a copy stored late
                // would be a second one of a message put back.
                Some(into) => moving.publish_copy(into, &copy).await,
                None => matches!(
                    tokio::time::timeout(MOVE_WAIT, target.publish(copy)).await,
                    Ok(Published::Queued)
                ),
            };
            if stored {
                moving.done();
                report.moved_to(&target);
            } else {
                moving.put_back();
                report.stopped_at(&target);
                for rest in chunk {
                    rest.put_back();
                }
                break 'chunks;
            }
        }
        if last {
            break;
        }
    }
    report.skipped = deferred.len();
    for left in deferred {
        left.put_back();
    }
    report.answer(vhost, request, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_strict_json_objects() {
        assert!(parse::<PurgeRequest>(br#"{"queue":"/queue/a"}"#).is_ok());
        for bad in [
            &br#"{"queue":"/queue/a","extra":1}"#[..],
            br#"{"queue":5}"#,
            b"queue=/queue/a",
            b"",
            br#"["/queue/a"]"#,
        ] {
            let err = parse::<PurgeRequest>(bad).unwrap_err();
            assert_eq!(
                err.0,
                "400 Bad Request",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let request = parse::<MoveRequest>(br#"{"from":"/queue/DLQ.a"}"#).unwrap();
        assert_eq!((request.to, request.max), (None, None));
        assert!(parse::<CloseRequest>(br#"{"id":-1}"#).is_err());
    }
}
