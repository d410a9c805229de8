//! `--idle-patterns N`: wildcard topic subscriptions that match none of the run's messages,
//! held open (on connections of their own) for the whole run. They measure what a broker pays
//! per published message for wildcard subscriptions that exist but do not match (the pattern
//! lookup), next to a run without them.
//!
//! The patterns mix both brokers' spellings and the shapes a trie must handle: a literal first
//! segment (`w7.*`, `w7.#`), a wildcard first segment (`*.w7`), and the destination's own name
//! as a prefix (`bench.w7.>`, which shares the published topic's first segment).

use anyhow::Context;

use crate::conn::{Conn, Endpoint};

/// Subscriptions per connection (brokers cap them per connection; Plugboard at 1024).
const PER_CONNECTION: usize = 500;

/// Pattern `i` of a run whose topic is `destination` (`/topic/NAME`); never matches it.
pub fn pattern(destination: &str, i: usize) -> String {
    let name = destination.strip_prefix("/topic/").unwrap_or(destination);
    match i % 4 {
        0 => format!("/topic/w{i}.*"),
        1 => format!("/topic/*.w{i}"),
        2 => format!("/topic/{name}.w{i}.>"),
        _ => format!("/topic/w{i}.#"),
    }
}

/// Opens the connections and subscribes `count` patterns (a receipt per connection confirms
/// them); the caller keeps the connections open for the run.
pub async fn hold(
    endpoint: &Endpoint,
    destination: &str,
    count: usize,
) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    let mut next = 0;
    while next < count {
        let mut conn = Conn::connect(endpoint).await?;
        let end = (next + PER_CONNECTION).min(count);
        for i in next..end {
            let id = format!("p{i}");
            let pattern = pattern(destination, i);
            let mut headers = vec![("id", id.as_str()), ("destination", pattern.as_str())];
            if i + 1 == end {
                headers.push(("receipt", "patterns"));
            }
            conn.send("SUBSCRIBE", &headers, b"").await?;
        }
        conn.flush().await?;
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            conn.await_receipt("patterns", |_| {}),
        )
        .await
        .context("no RECEIPT for the wildcard SUBSCRIBEs within 60 s")?
        .with_context(|| format!("subscribing patterns {next}..{end}"))?;
        conns.push(conn);
        next = end;
    }
    Ok(conns)
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn patterns_cycle_through_the_shapes() {
        assert_eq!(pattern("/topic/bench", 0), "/topic/w0.*");
        assert_eq!(pattern("/topic/bench", 1), "/topic/*.w1");
        assert_eq!(pattern("/topic/bench", 2), "/topic/bench.w2.>");
        assert_eq!(pattern("/topic/bench", 3), "/topic/w3.#");
    }
}
