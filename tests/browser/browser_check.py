"""The browser test: @stomp/stompjs in headless Chromium (Debian's, driven by Playwright; no
browser is ever downloaded) against the real broker over WebSocket: connect, subscribe, send
and receive, a binary body, a 1 MiB message, heart-beats kept for 30 s, and a reconnect after
the broker restarts. Then the demo page (examples/web) publishes and shows a message, and is
photographed. This script owns the broker process, so that it can restart it on its ports.

Usage: browser_check.py --broker BIN --chromium PATH --stompjs BUNDLE --workdir DIR
                        --screenshot FILE [--heartbeat-seconds 30]
"""

import argparse
import functools
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
shutdown_grace_ms = 1000
[heartbeat]
send_min_ms = 1000
receive_min_ms = 1000
"""
QUEUE = "/queue/browser"


class BrokerProcess:
    """The plugboard binary on loopback; `ports` pins the addresses of a restart."""

    def __init__(self, binary, workdir, stomp="127.0.0.1:0", ws="127.0.0.1:0"):
        config = workdir / "plugboard.toml"
        config.write_text(CONFIG)
        self.log_path = workdir / "broker.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [binary, "--listen", stomp, "--ws-listen", ws, "--config", str(config),
             "--data-dir", str(workdir / "data")],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
        )
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(
            [self.process.stdout.readline(), self.process.stdout.readline()]), daemon=True)
        reader.start()
        reader.join(60)
        if len(lines) < 2 or not lines[1].startswith("listening on ws://"):
            self.stop()
            raise RuntimeError(f"broker did not start: {lines!r}\n{self.log_tail()}")
        self.stomp = lines[0].strip().removeprefix("listening on ")
        self.url = lines[1].strip().removeprefix("listening on ")
        self.ws = self.url.removeprefix("ws://").split("/")[0]
        # Keep draining stdout.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-40:])
        except OSError:
            return ""


def serve(directory):
    """A static HTTP server on loopback for `directory`; returns its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def wait(page, predicate, ms=20000):
    page.evaluate(f"() => waitFor(() => {predicate}, {ms})")


def roundtrip(page, text):
    count = page.evaluate("() => state.received.length")
    page.evaluate("([q, t]) => sendText(q, t)", [QUEUE, text])
    wait(page, f"state.received.length > {count}")
    got = page.evaluate(f"() => state.received[{count}]")
    assert got["text"] == text, got


def check_stompjs(page, base, broker, binary, workdir, heartbeat_seconds):
    page.goto(f"{base}/check.html")
    page.evaluate("([url, q]) => start(url, q)", [broker.url, QUEUE])
    wait(page, "state.connects === 1")
    roundtrip(page, "hello from chromium, h\u00e9")
    print("connect, subscribe, send, receive: ok", flush=True)

    count = page.evaluate("() => state.received.length")
    sent = page.evaluate("([q]) => sendBytes(q, 4096)", [QUEUE])
    wait(page, f"state.received.length > {count}")
    got = page.evaluate(f"() => state.received[{count}]")
    assert (got["length"], got["head"], got["sum"]) == (sent["length"], sent["head"], sent["sum"]), (got, sent)
    print("binary body: ok", flush=True)

    count += 1
    page.evaluate("([q]) => sendText(q, 'x'.repeat(1024 * 1024))", [QUEUE])
    wait(page, f"state.received.length > {count}", 60000)
    got = page.evaluate(f"() => state.received[{count}]")
    assert got["length"] == 1024 * 1024, got["length"]
    print("1 MiB message: ok", flush=True)

    before = page.evaluate("() => ({pings: state.pings, pongs: state.pongs})")
    time.sleep(heartbeat_seconds)
    after = page.evaluate("() => ({pings: state.pings, pongs: state.pongs, connects: state.connects, closes: state.closes})")
    assert after["connects"] == 1 and after["closes"] == 0, f"the connection dropped while idle: {after}"
    # Beats every second each way (half the 2 s interval); a loaded machine may skip some.
    minimum = heartbeat_seconds // 4
    assert after["pongs"] - before["pongs"] >= minimum, (before, after)
    assert after["pings"] - before["pings"] >= minimum, (before, after)
    roundtrip(page, "still here")
    print(f"heart-beats for {heartbeat_seconds} s: ok ({after['pongs'] - before['pongs']} in, "
          f"{after['pings'] - before['pings']} out)", flush=True)

    broker.stop()
    wait(page, "state.closes >= 1")
    restarted = BrokerProcess(binary, workdir, stomp=broker.stomp, ws=broker.ws)
    try:
        wait(page, "state.connects === 2", 30000)
        roundtrip(page, "after the restart")
        print("reconnect after a broker restart: ok", flush=True)
    except Exception:
        print(restarted.log_tail(), file=sys.stderr)
        raise
    return restarted


def check_demo(page, base, broker, screenshot):
    page.set_viewport_size({"width": 1100, "height": 780})
    page.goto(f"{base}/index.html?connect=1&url={broker.url}")
    page.wait_for_selector("#status.up", timeout=20000)
    for text in ["Hello from the browser!", "Plugboard speaks STOMP over WebSocket \u2714"]:
        page.fill("#body", text)
        page.click("#send")
        page.wait_for_function(
            "(t) => [...document.querySelectorAll('#messages .body')].some(e => e.textContent === t)",
            arg=text, timeout=20000)
    page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.screenshot(path=str(screenshot))
    print(f"demo page: ok (screenshot {screenshot})", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--stompjs", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--heartbeat-seconds", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    site = workdir / "site"
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests/browser/check.html", site / "check.html")
    shutil.copy(ROOT / "examples/web/index.html", site / "index.html")
    shutil.copy(args.stompjs, site / "stomp.umd.min.js")
    base = serve(site)
    broker = BrokerProcess(args.broker, workdir)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=args.chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            try:
                page = browser.new_page()
                page.on("pageerror", lambda err: print(f"page error: {err}", file=sys.stderr))
                broker = check_stompjs(page, base, broker, args.broker, workdir, args.heartbeat_seconds)
                check_demo(browser.new_page(), base, broker, Path(args.screenshot))
            finally:
                browser.close()
    except Exception:
        print(broker.log_tail(), file=sys.stderr)
        raise
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
