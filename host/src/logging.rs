//! Log output: the subscriber the broker sets up at start (text or JSON lines on stderr, at
//! `RUST_LOG`'s levels) and the connection a log line belongs to.
//!
//! Every line logged while a session runs names its connection (`conn{n=3 peer=… via=tcp}` in
//! text, `"span":{"n":3,…,"name":"conn"}` in JSON). A session does not enter its `conn` span
//! each time its task is polled: entering and leaving a span through the subscriber costs about
//! 500 instructions and several atomic updates of shared counters per poll, 5 % of a message's
//! cost where each message is its own wake-up (the latency benchmark). Instead the span is
//! filed under the session's tokio task id once ([`in_connection`]), and [`InConnection`]
//! looks it up and enters it only while a line is written, so a poll costs nothing extra. The
//! lines come out as they did from an entered span; what a span-based `RUST_LOG` directive
//! (`[conn{peer=…}]=debug`) would select is no longer selectable that way.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex, PoisonError};

use tokio::task::Id as TaskId;
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// The `conn` span of each task that serves a connection (a session and its writer).
static CONNECTION_TASKS: LazyLock<Mutex<HashMap<TaskId, Span>>> = LazyLock::new(Default::default);

fn connection_tasks() -> std::sync::MutexGuard<'static, HashMap<TaskId, Span>> {
    // A panic while the map was held cannot leave it half-changed (one insert or remove).
    CONNECTION_TASKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The calling task's entry in [`CONNECTION_TASKS`], removed when dropped (the future that
/// holds it ended, was cancelled or panicked).
struct FiledTask(Option<TaskId>);

impl FiledTask {
    fn file(span: Span) -> FiledTask {
        let id = tokio::task::try_id();
        if let Some(id) = id {
            connection_tasks().insert(id, span);
        }
        FiledTask(id)
    }
}

impl Drop for FiledTask {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            connection_tasks().remove(&id);
        }
    }
}

/// The connection span of the calling task, if it serves one.
fn current() -> Option<Span> {
    let id = tokio::task::try_id()?;
    connection_tasks().get(&id).cloned()
}

/// Runs `future` (a session, the body of its task) as connection `span`: each line logged
/// while it runs names it.
pub async fn in_connection<F: Future>(span: Span, future: F) -> F::Output {
    let _filed = FiledTask::file(span);
    future.await
}

/// `future` (the body of a task a session spawns) as the connection the calling task serves,
/// if any.
pub fn in_current_connection<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let span = current();
    async move {
        let _filed = span.map(FiledTask::file);
        future.await
    }
}

/// Logs to stderr, at `RUST_LOG`'s levels (default `info`), as text or as JSON lines.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .event_format(InConnection(tracing_subscriber::fmt::format()))
            .init(),
        LogFormat::Json => builder
            .json()
            .event_format(InConnection(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true),
            ))
            .init(),
    }
}

/// An event format that writes a line logged inside a session (see [`in_connection`]) with
/// that session's `conn` span entered, so the inner format shows it as the current span.
pub struct InConnection<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for InConnection<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // An event with an explicit parent, or logged outside any session, is written as is.
        let connection = event.is_contextual().then(current).flatten();
        match connection {
            Some(span) => span.in_scope(|| self.0.format_event(ctx, writer, event)),
            None => self.0.format_event(ctx, writer, event),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Log lines collected in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs one line inside a connection, one in a task it spawned and one outside, in tasks of
    /// a current-thread runtime (task ids exist only in spawned tasks).
    fn log_three(dispatch: tracing::Dispatch) {
        let _default = tracing::dispatcher::set_default(&dispatch);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let session = runtime.spawn(async {
            let span = tracing::info_span!("conn", n = 7, peer = "127.0.0.1:5000", via = "tcp");
            in_connection(span, async {
                tokio::task::yield_now().await;
                tracing::info!(reason = "client", "inside");
                let writer = tokio::spawn(in_current_connection(async {
                    tracing::info!("in the writer");
                }));
                writer.await.unwrap();
            })
            .await;
            tracing::info!("outside");
        });
        runtime.block_on(session).unwrap();
    }

    #[test]
    fn text_lines_inside_a_session_name_its_connection() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_ansi(false)
            .event_format(InConnection(tracing_subscriber::fmt::format()))
            .finish();
        log_three(tracing::Dispatch::new(subscriber));
        let text = lines.text();
        let inside = text.lines().find(|l| l.contains("inside")).unwrap();
        assert!(
            inside.contains("conn{n=7 peer=\"127.0.0.1:5000\" via=\"tcp\"}: "),
            "{text}"
        );
        assert!(inside.contains("reason=\"client\""), "{text}");
        let writer = text.lines().find(|l| l.contains("in the writer")).unwrap();
        assert!(writer.contains("conn{n=7 "), "{text}");
        let outside = text.lines().find(|l| l.contains("outside")).unwrap();
        assert!(!outside.contains("conn{"), "{text}");
    }

    #[test]
    fn json_lines_inside_a_session_carry_its_span() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .json()
            .event_format(InConnection(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true),
            ))
            .finish();
        log_three(tracing::Dispatch::new(subscriber));
        let events: Vec<serde_json::Value> = lines
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let inside = &events[0];
        assert_eq!(inside["fields"]["message"], "inside", "{inside}");
        assert_eq!(inside["span"]["name"], "conn", "{inside}");
        assert_eq!(inside["span"]["n"], 7, "{inside}");
        assert_eq!(inside["span"]["via"], "tcp", "{inside}");
        assert_eq!(inside["spans"][0]["name"], "conn", "{inside}");
        assert_eq!(events[1]["span"], inside["span"], "{}", events[1]);
        let outside = &events[2];
        assert_eq!(outside["fields"]["message"], "outside", "{outside}");
        assert!(outside.get("span").is_none(), "{outside}");
    }

    #[test]
    fn a_task_that_ends_or_panics_leaves_no_entry() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let filed = |id| connection_tasks().contains_key(&id);
        let ended = runtime.spawn(in_connection(Span::none(), async {
            assert!(current().is_some());
            tokio::task::id()
        }));
        let ended = runtime.block_on(ended).unwrap();
        assert!(!filed(ended));
        let panicked = runtime.spawn(in_connection(Span::none(), async {
            tokio::task::yield_now().await;
            panic!("a session panics");
        }));
        let id = panicked.id();
        assert!(runtime.block_on(panicked).unwrap_err().is_panic());
        assert!(!filed(id));
        let pending = runtime.spawn(in_connection(Span::none(), std::future::pending::<()>()));
        let id = pending.id();
        runtime.block_on(tokio::task::yield_now());
        assert!(filed(id));
        pending.abort();
        assert!(runtime.block_on(pending).unwrap_err().is_cancelled());
        assert!(!filed(id));
    }
}
