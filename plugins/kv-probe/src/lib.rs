//! `kv-probe` (tests only): runs the kv operations a SEND's headers ask for (WIT `kv`, 0.1.4)
//! and reports the results in headers of the message it lets through.
//!
//! - `kv-set: KEY=VALUE` sets (with `kv-ttl: MS`, expiring);
//! - `kv-get: KEY` reports `x-kv: VALUE`, or `x-kv-absent: KEY`;
//! - `kv-incr: KEY` increments and reports `x-kv: N`;
//! - `kv-fill: N` sets up to N keys `fill/0`, `fill/1`, ... with 1 KiB values, stopping at the
//!   first refusal: `x-kv-filled: COUNT` (hostile: fills the store to its cap);
//! - `kv-init` reports `x-kv-init:` what a kv call made from `init` got;
//! - `clock` reports `x-clock: NOW_MS`.
//!
//! Any refusal is reported as `x-kv-error: ERROR` (e.g. `too-many-entries`, `disabled`).

use plugboard_sdk::prelude::*;

/// The probe; remembers what kv answered in `init`.
pub struct KvProbe {
    init: String,
}

impl Plugin for KvProbe {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        let init = match kv::get("init") {
            Ok(_) => "ok".to_string(),
            Err(e) => e.name().to_string(),
        };
        Ok(KvProbe { init })
    }

    fn manifest(&self) -> Manifest {
        Manifest::send(Needs::all_headers())
    }
}

fn run(msg: &Message, init: &str, out: &mut Vec<Header>) -> Result<(), kv::KvError> {
    let ttl = msg.header("kv-ttl").and_then(|t| t.parse().ok());
    if let Some((key, value)) = msg.header("kv-set").and_then(|s| s.split_once('=')) {
        kv::set(key, value.as_bytes(), ttl)?;
    }
    if let Some(key) = msg.header("kv-incr") {
        out.push(Header::new("x-kv", kv::increment(key, 1, ttl)?.to_string()));
    }
    if let Some(key) = msg.header("kv-get") {
        match kv::get(key)? {
            Some(v) => out.push(Header::new("x-kv", String::from_utf8_lossy(&v))),
            None => out.push(Header::new("x-kv-absent", key)),
        }
    }
    if let Some(n) = msg.header("kv-fill").and_then(|n| n.parse::<u32>().ok()) {
        let value = vec![b'x'; 1024];
        let mut filled = 0;
        let result = (0..n).try_for_each(|i| {
            kv::set(&format!("fill/{i}"), &value, None)?;
            filled += 1;
            Ok(())
        });
        out.push(Header::new("x-kv-filled", filled.to_string()));
        result?;
    }
    if msg.header("kv-init").is_some() {
        out.push(Header::new("x-kv-init", init));
    }
    if msg.header("clock").is_some() {
        out.push(Header::new("x-clock", clock::now_ms().to_string()));
    }
    Ok(())
}

impl Router for KvProbe {
    fn on_send(&self, _sender: &Principal, msg: &Message) -> SendVerdict {
        let mut headers = Vec::new();
        if let Err(e) = run(msg, &self.init, &mut headers) {
            headers.push(Header::new("x-kv-error", e.name()));
        }
        if headers.is_empty() {
            return SendVerdict::Keep;
        }
        SendVerdict::Rewrite(Edit {
            destination: None,
            remove_headers: Vec::new(),
            set_headers: headers,
            body: None,
        })
    }
}

plugboard_sdk::export_router!(KvProbe);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::testing::{kv as test_kv, Harness};

    fn headers(v: SendVerdict) -> Vec<(String, String)> {
        match v {
            SendVerdict::Rewrite(edit) => edit
                .set_headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sets_gets_increments_and_reports_refusals() {
        test_kv::reset();
        let h = Harness::<KvProbe>::new("{}").unwrap();
        let p = Principal::named("p");
        let got = h.send(
            &p,
            Message::new("/queue/a")
                .with_header("kv-set", "k=v")
                .with_header("kv-get", "k"),
        );
        assert_eq!(headers(got), [("x-kv".to_string(), "v".to_string())]);
        let got = h.send(&p, Message::new("/queue/a").with_header("kv-incr", "n"));
        assert_eq!(headers(got), [("x-kv".to_string(), "1".to_string())]);
        let got = h.send(&p, Message::new("/queue/a").with_header("kv-get", ""));
        assert_eq!(
            headers(got),
            [("x-kv-error".to_string(), "key-too-long".to_string())]
        );
        assert_eq!(h.send(&p, Message::new("/queue/a")), SendVerdict::Keep);
    }
}
