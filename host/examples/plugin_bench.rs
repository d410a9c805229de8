//! Plugin hook costs, in µs per call through the real `PluginHost` (release build):
//!
//! ```text
//! cargo xtask plugins && cargo run --release -p plugboard --example plugin_bench
//! ```
//!
//! Prints a markdown table: each hook of each sample plugin, the WIT shape choices (what the
//! probe plugin asks to be copied in), a fresh instance per call, and raw sync vs async calls.
//! Not a test: numbers depend on the machine (docs/plugins.md has this machine's).

mod support;

use std::time::Instant;

use bytes::Bytes;
use plugboard::plugin::{
    AuthRequest, CallContext, MessageRef, PluginHost, Principal, RedeliverCause, RedeliverEvent,
    SubscriptionInfo,
};
use support::{cache, load, msg, root, specs};

/// Untimed calls before each measurement (at most; see `support::time`).
const WARMUP: u32 = 1000;

fn row(what: &str, us: f64) {
    println!("| {what} | {us:.2} | {:.0} |", 1e6 / us);
}

/// Times `f` in thread CPU time (see `support::time_cpu`) and prints its row, unless [`wanted`] says to skip it.
async fn timed<F, Fut>(label: &str, n: u32, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    timed_per(label, n, 1, f).await
}

/// [`timed`] for calls that each handle `per` messages: prints µs per message.
async fn timed_per<F, Fut>(label: &str, n: u32, per: u32, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    if wanted(label) {
        row(
            label,
            support::time_cpu(WARMUP, n, f).await / f64::from(per),
        );
    }
}

/// Whether to run the row `label`: every row unless `PLUGIN_BENCH_ONLY` is set, then only the
/// rows whose label contains it (e.g. `PLUGIN_BENCH_ONLY=selector` under `perf record`).
fn wanted(label: &str) -> bool {
    std::env::var("PLUGIN_BENCH_ONLY").map_or(true, |only| label.contains(&only))
}

const HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("region", "eu"),
    ("qty", "10"),
    ("message-id", "m-1"),
    ("priority", "4"),
];

/// jwt-auth: one CONNECT per algorithm (a token of the sample's shape: sub, iss, aud, exp and
/// two scopes), signed here with the plugin's test keys.
async fn jwt_rows(n: u32, connect: &AuthRequest) {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let fixture = |name: &str| {
        std::fs::read_to_string(root().join("plugins/jwt-auth/fixtures").join(name))
            .expect("jwt-auth fixture")
    };
    let secret = "bench-secret-of-at-least-thirty-two-bytes";
    let host = load(&format!(
        "[[plugins]]\nname = \"jwt\"\nfile = \"jwt-auth.wasm\"\nhooks = [\"authenticate\"]\n\
         [plugins.config]\nissuer = \"https://idp\"\naudience = \"plugboard\"\nkeys = [\n\
         {{ algorithm = \"HS256\", secret = \"{secret}\" }},\n\
         {{ algorithm = \"RS256\", public_key = '''{}''' }},\n\
         {{ algorithm = \"ES256\", public_key = '''{}''' }},\n]\n\
         [plugins.config.scopes.read]\nmay_subscribe = [\"/topic/*\"]\n\
         [plugins.config.scopes.write]\nmay_send = [\"/queue/*\"]\n",
        fixture("rs256-public.pem"),
        fixture("es256-public.pem"),
    ))
    .await;
    let exp = plugboard::router::message::now_ms() / 1000 + 86_400;
    let claims = serde_json::json!({
        "sub": "alice", "iss": "https://idp", "aud": "plugboard", "exp": exp, "scope": "read write",
    });
    let keys = [
        (
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
            1,
        ),
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(fixture("rs256-private.pem").as_bytes()).unwrap(),
            10,
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(fixture("es256-private.pem").as_bytes()).unwrap(),
            10,
        ),
    ];
    for (alg, key, slower) in keys {
        let token = encode(&Header::new(alg), &claims, &key).unwrap();
        let mut req = connect.clone();
        req.passcode = Some(Bytes::from(token));
        // A row of refusals would measure the wrong thing.
        match host.authenticate(req.clone()).await {
            plugboard::plugin::AuthOutcome::Allow(_, Some(_)) => {}
            other => panic!("jwt-auth refused the {alg:?} bench token: {other:?}"),
        }
        timed(
            &format!("jwt-auth: authenticate (CONNECT, {alg:?} token)"),
            (n / slower).max(5),
            || host.authenticate(req.clone()),
        )
        .await;
    }
}

fn probe(name: &str, extra: &str) -> String {
    format!("[[plugins]]\nname = \"{name}\"\nfile = \"probe.wasm\"\nhooks = [\"send\"]\n{extra}\n")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Calls per timed run; raise it (e.g. `PLUGIN_BENCH_N=500000`) for a profile.
    let n: u32 = std::env::var("PLUGIN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let alice = Principal::named("alice");
    println!("| call | µs/call | calls/s |\n|---|---|---|");

    let examples = root().join("examples");
    let text = std::fs::read_to_string(examples.join("plugins.toml")).unwrap();
    let cache = cache();
    let demo = PluginHost::load(&specs(&text).unwrap(), &examples, &cache)
        .await
        .expect("demo plugins (run `cargo xtask plugins`)");

    let req = AuthRequest {
        login: Some(Bytes::from_static(b"alice")),
        passcode: Some(Bytes::from_static(b"alice-secret")),
        host: Some(Bytes::from_static(b"/")),
        client_addr: "127.0.0.1:5000".parse().unwrap(),
        listener: plugboard::listen::ListenerKind::Tcp,
        client_certificate: None,
        upgrade: None,
        reauth: false,
        headers: vec![
            (
                Bytes::from_static(b"accept-version"),
                Bytes::from_static(b"1.2"),
            ),
            (Bytes::from_static(b"login"), Bytes::from_static(b"alice")),
            (
                Bytes::from_static(b"passcode"),
                Bytes::from_static(b"alice-secret"),
            ),
        ],
    };
    // An argon2id verification takes tens of ms by design: a few dozen calls are plenty.
    timed(
        "static-auth: authenticate (CONNECT, argon2id m=19 MiB t=2 p=1)",
        (n / 1000).max(5),
        || demo.authenticate(req.clone()),
    )
    .await;
    jwt_rows(n, &req).await;
    let order = msg("/queue/orders", HEADERS, br#"{"id":1}"#);
    timed("header-router: on-send, region=eu rewrite", n, || {
        demo.on_send(&alice, order.clone())
    })
    .await;
    for size in [4u32, 16, 64] {
        let batch: Vec<_> = (0..size).map(|_| order.clone()).collect();
        timed_per(
            &format!("header-router: on-send-batch of {size}, per message"),
            n / size,
            size,
            || demo.on_send_batch(&alice, batch.clone()),
        )
        .await;
    }
    let payment = msg(
        "/queue/payments",
        HEADERS,
        br#"{"order":17,"card":"4111-1111-1111-1111","amount":"12.50"}"#,
    );
    timed("redact: on-send, 60 B JSON body masked", n, || {
        demo.on_send(&alice, payment.clone())
    })
    .await;
    let payments: Vec<_> = (0..64).map(|_| payment.clone()).collect();
    timed_per(
        "redact: on-send-batch of 64, per message",
        n / 64,
        64,
        || demo.on_send_batch(&alice, payments.clone()),
    )
    .await;
    // The kv store (WIT 0.1.4): a token bucket read and written per SEND.
    let limiter = |rate: u32| {
        format!(
            "[[plugins]]\nname = \"rate-limit\"\nfile = \"rate-limit.wasm\"\nhooks = [\"send\"]\n\
             kv = {{}}\n[plugins.config]\nrate = {rate}\n"
        )
    };
    let under = load(&limiter(1_000_000)).await;
    timed(
        "rate-limit: on-send, under the limit (kv get + compare-and-swap, clock)",
        n,
        || under.on_send(&alice, order.clone()),
    )
    .await;
    let over = load(&limiter(1)).await;
    timed(
        "rate-limit: on-send, over the limit (kv get, reject)",
        n,
        || over.on_send(&alice, order.clone()),
    )
    .await;
    // The redeliver hook (WIT 0.1.3): the backoff sample deciding a NACKed message's fate
    // (second delivery: a delay), and its last step (dead-letter with the consumer's error).
    let backoff = load(
        "[[plugins]]\nname = \"backoff\"\nfile = \"backoff.wasm\"\nhooks = [\"redeliver\"]\n\
         destinations = [\"/queue/*\"]\n[plugins.config]\ndelays_ms = [1000, 5000, 30000]\n",
    )
    .await;
    let context = CallContext::detached();
    let queue = Bytes::from_static(b"/queue/jobs");
    let body = Bytes::from_static(b"{\"job\":42}");
    let nack = vec![(
        Bytes::from_static(b"error"),
        Bytes::from_static(b"timeout talking to db"),
    )];
    let event = |deliveries: u32| RedeliverEvent {
        message: MessageRef {
            destination: &queue,
            headers: &[],
            body: &body,
            id: Some(("s-1", 7)),
        },
        queue: &queue,
        cause: RedeliverCause::Nacked,
        deliveries,
        nack_headers: &nack,
    };
    for (deliveries, what) in [(2, "redeliver after 5 s"), (4, "dead-letter, last error")] {
        let label = format!("backoff: on-redeliver, NACKed, {what}");
        timed(&label, n, || {
            backoff.on_redeliver(&context, event(deliveries))
        })
        .await;
    }
    let other = b"/queue/unrouted";
    timed(
        "no plugin applies: intercepts_send() (ns-level)",
        n,
        || async { demo.intercepts_send(other) },
    )
    .await;
    let sub = SubscriptionInfo {
        id: Bytes::from_static(b"s"),
        destination: Bytes::from_static(b"/topic/t"),
        headers: vec![(
            Bytes::from_static(b"selector"),
            Bytes::from_static(b"region = 'eu' AND qty > 5"),
        )],
    };
    timed("selector: prepare-subscription (parse)", n / 4, || {
        demo.prepare_subscription(&alice, sub.clone())
    })
    .await;
    let filter = demo
        .prepare_subscription(&alice, sub.clone())
        .await
        .unwrap()
        .unwrap();
    let delivery = msg("/topic/t", HEADERS, &[b'x'; 100]);
    timed("selector: filter, 2 of 5 headers passed", n, || {
        filter.filter(&delivery)
    })
    .await;
    for size in [1u32, 4, 16, 64] {
        let batch: Vec<_> = (0..size).map(|_| delivery.view()).collect();
        timed_per(
            &format!("selector: filter-batch of {size}, per message"),
            n / size,
            size,
            || filter.filter_batch(&batch),
        )
        .await;
    }

    println!("| **WIT shape (probe plugin, on-send → keep)** | | |");
    let small = msg("/queue/p", HEADERS, &[b'x'; 100]);
    for (label, extra, body) in [
        ("nothing: destination + body-len only", "", 100),
        ("1 named header", "config = { headers = [\"region\"] }", 100),
        ("all 5 headers", "config = { headers = \"all\" }", 100),
        (
            "all 5 headers + 100 B body",
            "config = { headers = \"all\", body = true }",
            100,
        ),
        (
            "all 5 headers + 10 KB body",
            "config = { headers = \"all\", body = true }",
            10_000,
        ),
        (
            "all 5 headers + 64 KB body",
            "config = { headers = \"all\", body = true }",
            65_536,
        ),
        ("nothing, 64 KB body not passed", "", 65_536),
        (
            "1 header, rewrite verdict (edit: set 1 header)",
            "config = { headers = [\"region\"], verdict = \"rewrite\" }",
            100,
        ),
        (
            "fresh instance per call (recycle_after_calls = 1)",
            "recycle_after_calls = 1",
            100,
        ),
    ] {
        if !wanted(label) {
            continue;
        }
        let host = load(&probe("probe", extra)).await;
        let m = if body == 100 {
            small.clone()
        } else {
            msg("/queue/p", HEADERS, &vec![b'x'; body])
        };
        let count = if extra.contains("recycle") { n / 10 } else { n };
        timed(label, count, || host.on_send(&alice, m.clone())).await;
    }

    println!("| **loading (selector.wasm, one plugin)** | | |");
    if wanted("load") {
        load_rows().await;
    }

    println!("| **raw call, no host around it (probe on-send)** | | |");
    let wasm = root().join("target").join("plugins").join("probe.wasm");
    for (label, config, headers, body) in [
        ("nothing passed", r#"{}"#, 0, 0),
        (
            "5 headers + 100 B body",
            r#"{"headers":"all","body":true}"#,
            5,
            100,
        ),
    ] {
        if !wanted(label) {
            continue;
        }
        let costs = raw::send_costs(&wasm, config, headers, body, n)
            .await
            .unwrap();
        row(&format!("{label}: sync `call`"), costs.sync_ns / 1000.0);
        row(
            &format!("{label}: `call_async` (what the host uses)"),
            costs.async_ns / 1000.0,
        );
    }
}

/// Loading selector.wasm with a cold, then a warm compiled-artifact cache.
async fn load_rows() {
    let sel = "[[plugins]]\nname = \"sel\"\nfile = \"selector.wasm\"\nhooks = [\"message\"]\n";
    let specs = specs(sel).unwrap();
    let dir = root().join("target").join("plugins");
    let fresh = root()
        .join("target")
        .join(format!("plugin-bench-cold-{}", std::process::id()));
    let t = Instant::now();
    PluginHost::load(&specs, &dir, &fresh).await.unwrap();
    row(
        "load, cold cache (compile + serialize + instantiate + init)",
        t.elapsed().as_secs_f64() * 1e6,
    );
    let t = Instant::now();
    PluginHost::load(&specs, &dir, &fresh).await.unwrap();
    row(
        "load, warm cache (deserialize + instantiate + init)",
        t.elapsed().as_secs_f64() * 1e6,
    );
    std::fs::remove_dir_all(&fresh).ok();
}

/// One call into a warm instance with nothing of the host around it (no pool, projection or
/// validation), made synchronously (`call`) and asynchronously (`call_async`, as the host
/// does): the floor under the host's figures. It has its own engine, configured as the host's
/// (host/src/plugin/engine.rs), and its own bindings of the WIT, since the host's are private.
mod raw {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use wasmtime::component::{Component, HasSelf, Linker};
    use wasmtime::{Config, Engine, Store};

    wasmtime::component::bindgen!({
        world: "full",
        path: "../wit",
        exports: { default: async },
    });

    use self::exports::plugboard::plugin::send::SendVerdict;
    use self::plugboard::plugin::log;
    use self::plugboard::plugin::types::{Header, Message, Principal};

    /// The store's data: the `log` import discards every line.
    struct Quiet;

    impl log::Host for Quiet {
        fn log(&mut self, _: log::Level, _: String) {}
    }

    /// Nanoseconds per call, synchronous and asynchronous.
    #[derive(Debug, Clone, Copy)]
    pub struct RawCosts {
        pub sync_ns: f64,
        pub async_ns: f64,
    }

    /// Times `on-send` of `wasm` (which must accept `config`) with a message of `headers` headers
    /// and a `body_len`-byte body, `iterations` times each way. Call from a tokio runtime.
    pub async fn send_costs(
        wasm: &Path,
        config: &str,
        headers: usize,
        body_len: usize,
        iterations: u32,
    ) -> wasmtime::Result<RawCosts> {
        let mut engine_config = Config::new();
        engine_config
            .epoch_interruption(true)
            .concurrency_support(false)
            .max_wasm_stack(512 * 1024);
        let engine = Engine::new(&engine_config)?;
        let component = Component::from_file(&engine, wasm)?;
        let mut linker = Linker::<Quiet>::new(&engine);
        log::add_to_linker::<Quiet, HasSelf<Quiet>>(&mut linker, |q| q)?;
        // Rust's std seeds its hash maps from here (the host grants it too).
        linker
            .instance("wasi:random/insecure-seed@0.2.6")?
            .func_wrap("insecure-seed", |_, (): ()| Ok(((1u64, 2u64),)))?;
        linker.define_unknown_imports_as_traps(&component)?;
        let mut store = Store::new(&engine, Quiet);
        store.set_epoch_deadline(u64::MAX / 2);
        let plugin = Full::instantiate_async(&mut store, &component, &linker).await?;
        plugin
            .plugboard_plugin_lifecycle()
            .call_init(&mut store, config)
            .await?
            .map_err(wasmtime::Error::msg)?;
        let send = plugin.plugboard_plugin_send();
        let principal = Principal {
            name: "bench".into(),
            groups: vec![],
            may_send: vec![],
            may_subscribe: vec![],
        };
        let msg = Message {
            destination: "/queue/bench".into(),
            headers: (0..headers)
                .map(|i| Header {
                    name: format!("header-{i}"),
                    value: format!("value-{i}"),
                })
                .collect(),
            content_type: None,
            body_len: body_len as u64,
            body: Some(vec![b'x'; body_len]),
        };
        let func = send.func_on_send();
        let start = Instant::now();
        for _ in 0..iterations {
            let (verdict,) = func.call(&mut store, (&principal, &msg))?;
            std::hint::black_box(matches!(verdict, SendVerdict::Keep));
        }
        let sync = start.elapsed();
        let start = Instant::now();
        for _ in 0..iterations {
            let verdict = send.call_on_send(&mut store, &principal, &msg).await?;
            std::hint::black_box(matches!(verdict, SendVerdict::Keep));
        }
        let asynchronous = start.elapsed();
        let per = |d: Duration| d.as_nanos() as f64 / f64::from(iterations);
        Ok(RawCosts {
            sync_ns: per(sync),
            async_ns: per(asynchronous),
        })
    }
}
