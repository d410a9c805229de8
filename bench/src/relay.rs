//! `plugboard-bench relay`: the floor a broker is measured against.
//!
//! A "broker" that does the least any STOMP broker must do to pass the bench's checks: one
//! thread per connection blocked in `read`, frames parsed in place, each SEND written at once
//! as a MESSAGE (headers, then the body straight from the read buffer) to one subscriber of its
//! destination (round robin; every subscriber for `/topic/...`), RECEIPTs when asked. No
//! queue, no flow control, no acks (ACK and NACK are read and dropped), no heart-beats, no
//! persistence, no plugins, and a SEND with no subscriber is lost. Not a broker: a yardstick.
//! What a broker spends above the relay (latency, CPU per message) is its own work; what the
//! relay spends is this machine's (scheduler wake-ups, loopback TCP, copies in and out).
//!
//! Frames are passed through without unescaping (the relay answers in STOMP 1.2, the version
//! the bench speaks, so escaped values stay valid).

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context};

/// Bytes read per `read` call (the buffer grows for a larger frame).
const READ_CHUNK: usize = 256 * 1024;

/// Serves until the process is killed.
pub fn run(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("relay listening on {}", listener.local_addr()?);
    serve_on(listener)
}

/// Serves the connections `listener` accepts, each on a thread of its own.
pub fn serve_on(listener: TcpListener) -> anyhow::Result<()> {
    let routes = Arc::new(Routes::default());
    for (number, stream) in listener.incoming().enumerate() {
        let stream = stream.context("accept")?;
        let routes = routes.clone();
        std::thread::Builder::new()
            .name(format!("relay-{number}"))
            .spawn(move || {
                let _ = serve(stream, number as u64, &routes);
                routes.forget(number as u64);
            })
            .context("spawning a connection thread")?;
    }
    Ok(())
}

/// A subscription: where its MESSAGEs go.
#[derive(Clone)]
struct Subscriber {
    connection: u64,
    id: String,
    out: Arc<Mutex<TcpStream>>,
}

#[derive(Default)]
struct Route {
    subscribers: Vec<Arc<Subscriber>>,
    next: usize,
}

/// Destination → subscribers.
#[derive(Default)]
struct Routes {
    by_destination: Mutex<HashMap<String, Route>>,
}

impl Routes {
    fn subscribe(&self, destination: &str, subscriber: Subscriber) {
        let mut routes = self.lock();
        routes
            .entry(destination.to_string())
            .or_default()
            .subscribers
            .push(Arc::new(subscriber));
    }

    fn unsubscribe(&self, connection: u64, id: &str) {
        for route in self.lock().values_mut() {
            route
                .subscribers
                .retain(|s| !(s.connection == connection && s.id == id));
        }
    }

    fn forget(&self, connection: u64) {
        for route in self.lock().values_mut() {
            route.subscribers.retain(|s| s.connection != connection);
        }
    }

    /// Who gets a message sent to `destination`: one subscriber in turn, or all of a topic's.
    fn targets(&self, destination: &str, into: &mut Vec<Arc<Subscriber>>) {
        into.clear();
        let mut routes = self.lock();
        let Some(route) = routes.get_mut(destination) else {
            return;
        };
        if route.subscribers.is_empty() {
            return;
        }
        if destination.starts_with("/topic/") {
            into.extend(route.subscribers.iter().cloned());
        } else {
            route.next = (route.next + 1) % route.subscribers.len();
            into.push(route.subscribers[route.next].clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One frame, borrowed from the read buffer (header values still escaped).
struct RawFrame<'a> {
    command: &'a str,
    /// The header lines after the command (each checked to hold a colon).
    head: &'a str,
    body: &'a [u8],
}

impl<'a> RawFrame<'a> {
    fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        header_lines(self.head).filter_map(|line| line.split_once(':'))
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

fn header_lines(head: &str) -> impl Iterator<Item = &str> {
    head.split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Parses one frame at the front of `data`: `Ok(None)` until it is complete, else the frame
/// and the bytes it used (leading EOLs included).
fn parse(data: &[u8]) -> anyhow::Result<Option<(RawFrame<'_>, usize)>> {
    let start = data
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(data.len());
    let data_from = &data[start..];
    let Some(blank) = data_from.windows(2).position(|w| w == b"\n\n") else {
        return Ok(None);
    };
    let block = std::str::from_utf8(&data_from[..blank]).context("header block is not UTF-8")?;
    let (command, head) = block.split_once('\n').unwrap_or((block, ""));
    let command = command.strip_suffix('\r').unwrap_or(command);
    let mut length = None;
    for line in header_lines(head) {
        let Some((k, v)) = line.split_once(':') else {
            bail!("header line without a colon: {line:?}");
        };
        if k == "content-length" && length.is_none() {
            length = Some(v.parse::<usize>().context("content-length")?);
        }
    }
    let body_start = blank + 2;
    let (body, end) = match length {
        Some(n) => {
            if data_from.len() < body_start + n + 1 {
                return Ok(None);
            }
            if data_from[body_start + n] != 0 {
                bail!("no NUL after a {n}-byte body");
            }
            (&data_from[body_start..body_start + n], body_start + n + 1)
        }
        None => match data_from[body_start..].iter().position(|&b| b == 0) {
            Some(n) => (&data_from[body_start..body_start + n], body_start + n + 1),
            None => return Ok(None),
        },
    };
    let frame = RawFrame {
        command,
        head,
        body,
    };
    Ok(Some((frame, start + end)))
}

/// Reads and answers one connection's frames until it closes.
fn serve(stream: TcpStream, connection: u64, routes: &Routes) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let out = Arc::new(Mutex::new(stream.try_clone()?));
    let mut input = stream;
    // buf[start..end] holds unparsed bytes. Nothing below allocates per message (the relay
    // must cost no more than the work it stands for).
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    let mut next_id = 0u64;
    let mut targets = Vec::new();
    let mut head = Vec::with_capacity(1024);
    loop {
        while let Some((frame, used)) = parse(&buf[start..end])? {
            let mut reply = Vec::new();
            match frame.command {
                "CONNECT" | "STOMP" => {
                    reply.extend_from_slice(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0");
                }
                "SUBSCRIBE" => {
                    let destination = frame.header("destination").unwrap_or_default();
                    let subscriber = Subscriber {
                        connection,
                        id: frame.header("id").unwrap_or_default().to_string(),
                        out: out.clone(),
                    };
                    routes.subscribe(destination, subscriber);
                }
                "UNSUBSCRIBE" => routes.unsubscribe(connection, frame.header("id").unwrap_or("")),
                "SEND" => {
                    let destination = frame.header("destination").unwrap_or_default();
                    routes.targets(destination, &mut targets);
                    for target in &targets {
                        next_id += 1;
                        encode_message_head(&mut head, &frame, target, connection, next_id);
                        let mut socket = target.out.lock().unwrap_or_else(PoisonError::into_inner);
                        // A consumer that went away loses its message (the bench will say so).
                        let _ = write_all(&mut socket, [&head, frame.body, b"\0"]);
                    }
                }
                _ => {}
            }
            if let Some(receipt) = frame.header("receipt") {
                reply.extend_from_slice(b"RECEIPT\nreceipt-id:");
                reply.extend_from_slice(receipt.as_bytes());
                reply.extend_from_slice(b"\n\n\0");
            }
            if !reply.is_empty() {
                let mut socket = out.lock().unwrap_or_else(PoisonError::into_inner);
                write_all(&mut socket, [&reply])?;
            }
            let disconnect = frame.command == "DISCONNECT";
            start += used;
            if disconnect {
                return Ok(());
            }
        }
        // Make room: move the partial frame to the front, grow for a frame larger than that.
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if buf.len() - end < READ_CHUNK / 4 {
            buf.resize(buf.len() * 2, 0);
        }
        let n = input.read(&mut buf[end..])?;
        if n == 0 {
            return Ok(());
        }
        end += n;
    }
}

/// The MESSAGE frame's header block for `frame` going to `target` (the SEND's own headers
/// except `receipt` and `content-length` are passed on).
fn encode_message_head(
    head: &mut Vec<u8>,
    frame: &RawFrame<'_>,
    target: &Subscriber,
    connection: u64,
    id: u64,
) {
    head.clear();
    head.extend_from_slice(b"MESSAGE\nsubscription:");
    head.extend_from_slice(target.id.as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(
        head,
        "\nmessage-id:{connection}-{id}\nack:{connection}-{id}\n"
    );
    for (k, v) in frame.headers() {
        if matches!(k, "receipt" | "content-length") {
            continue;
        }
        head.extend_from_slice(k.as_bytes());
        head.push(b':');
        head.extend_from_slice(v.as_bytes());
        head.push(b'\n');
    }
    let _ = write!(head, "content-length:{}\n\n", frame.body.len());
}

/// Writes every slice, as few syscalls as the socket allows.
fn write_all<const N: usize>(socket: &mut TcpStream, parts: [&[u8]; N]) -> std::io::Result<()> {
    let mut slices = parts.map(IoSlice::new);
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = socket.write_vectored(slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_frames_in_place() {
        let data =
            b"\nSEND\ndestination:/queue/a\ncontent-length:3\n\na\0b\0SEND\nreceipt:1\n\nxy\0";
        let (first, used) = parse(data).unwrap().unwrap();
        assert_eq!(first.command, "SEND");
        assert_eq!(first.header("destination"), Some("/queue/a"));
        assert_eq!(first.body, b"a\0b");
        let (second, used2) = parse(&data[used..]).unwrap().unwrap();
        assert_eq!(second.header("receipt"), Some("1"));
        assert_eq!(second.body, b"xy");
        assert_eq!(used + used2, data.len());
        for cut in 0..used {
            assert!(parse(&data[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }
}
