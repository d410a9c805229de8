"""The console's browser test: the live page of the admin listener in headless Chromium
(Debian's, driven by Playwright; no browser is ever downloaded) against the real broker. STOMP
traffic runs over plain sockets meanwhile (this script speaks the few frames it needs), the page
must show a queue row with its depth, the broker-wide and per-queue sparklines, no
Content-Security-Policy violation, and, once the admin token is entered, working action buttons
(a purge through the page). Then the page is photographed.

With `--router WASM` (the header-router sample) a send plugin routes European orders to their
own queue, and the plugins panel must show its calls; it also asks for the plugin's recent
decisions (`GET /api/plugins/traces`), which it must tolerate the broker not serving.

Usage: console_check.py --broker BIN --chromium PATH --workdir DIR --screenshot FILE
                        [--router WASM] [--traffic-seconds 25]
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

TOKEN = "console-browser-token-0123456789"
CONFIG = f"""
admin_token = "{TOKEN}"
[dead_letter]
max_deliveries = 1
"""
ORDERS = "/queue/console.orders"
INVOICES = "/queue/console.invoices"
SCRATCH = "/queue/console.scratch"
PRICES = "/topic/console.prices"
ROUTER = """
[[plugins]]
name = "router"
file = "{file}"
hooks = ["send"]
destinations = ["/queue/console.orders"]
routes_bypass_sender_rights = true

[[plugins.config.rules]]
destination = "/queue/console.orders"
header = "region"
value = "eu"
to = ["/queue/console.orders.eu"]
"""


class BrokerProcess:
    """The plugboard binary on loopback with its admin listener."""

    def __init__(self, binary, workdir, router=None):
        config = workdir / "plugboard.toml"
        config.write_text(CONFIG + (ROUTER.format(file=router) if router else ""))
        self.log_path = workdir / "broker.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--config", str(config), "--data-dir", str(workdir / "data")],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
        )
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(
            [self.process.stdout.readline(), self.process.stdout.readline()]), daemon=True)
        reader.start()
        reader.join(60)
        if len(lines) < 2 or not lines[1].startswith("status on http://"):
            self.stop()
            raise RuntimeError(f"broker did not start: {lines!r}\n{self.log_tail()}")
        host, port = lines[0].strip().removeprefix("listening on ").rsplit(":", 1)
        self.stomp = (host, int(port))
        self.admin = lines[1].strip().removeprefix("status on ").removesuffix("/status")
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


class Stomp:
    """Just enough STOMP 1.2 over a socket: CONNECT, SEND, SUBSCRIBE, ACK, NACK, receipts."""

    def __init__(self, address, login):
        self.sock = socket.create_connection(address, timeout=10)
        self.buffer = b""
        self.write("CONNECT", {"accept-version": "1.2", "host": "/", "login": login, "passcode": "x"})
        frame = self.read()
        assert frame[0] == "CONNECTED", frame

    def write(self, command, headers, body=b""):
        head = "".join(f"{k}:{v}\n" for k, v in headers.items())
        self.sock.sendall(f"{command}\n{head}\n".encode() + body + b"\0")

    def read(self):
        while b"\0" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buffer += chunk
        frame, self.buffer = self.buffer.split(b"\0", 1)
        frame = frame.lstrip(b"\r\n")
        head, _, body = frame.partition(b"\n\n")
        lines = head.decode().split("\n")
        headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        return lines[0], headers, body

    def send(self, destination, body, receipt=None, **headers):
        headers = {"destination": destination, **headers}
        if receipt:
            headers["receipt"] = receipt
        self.write("SEND", headers, body.encode())
        if receipt:
            frame = self.read()
            assert frame[0] == "RECEIPT", frame

    def drain(self):
        """Reads and drops frames until the connection ends."""
        try:
            while True:
                self.read()
        except (OSError, RuntimeError):
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def traffic(broker, seconds, stop):
    """Steady traffic: orders produced and consumed, invoices piling up, a topic with a
    subscriber, and two messages dead-lettered (a DLQ to move back)."""
    producer = Stomp(broker.stomp, "shop")
    consumer = Stomp(broker.stomp, "warehouse")
    consumer.write("SUBSCRIBE", {"id": "orders", "destination": ORDERS, "ack": "auto"})
    listener = Stomp(broker.stomp, "ticker")
    listener.write("SUBSCRIBE", {"id": "prices", "destination": PRICES, "ack": "auto"})
    # Two poison messages: NACKed once, dead-lettered.
    poison = Stomp(broker.stomp, "billing")
    poison.write("SUBSCRIBE", {"id": "p", "destination": "/queue/console.payments",
                               "ack": "client-individual"})
    for n in range(2):
        producer.send("/queue/console.payments", f"payment {n}", receipt=f"p{n}")
        command, headers, _ = poison.read()
        assert command == "MESSAGE", command
        poison.write("NACK", {"id": headers["ack"]})
    for n in range(40):
        producer.send(SCRATCH, f"scratch {n}")
    for client in (consumer, listener):
        threading.Thread(target=client.drain, daemon=True).start()
    deadline = time.time() + seconds
    n = 0
    invoices = 0
    while not stop.is_set() and time.time() < deadline:
        # The rate rises and falls so the sparklines have a shape.
        burst = 5 + int(20 * abs(((n // 10) % 6) - 3) / 3)
        for i in range(burst):
            if i % 4 == 0:
                producer.send(ORDERS, f"order {n}", region="eu")
            else:
                producer.send(ORDERS, f"order {n}")
            producer.send(PRICES, f"price {n}")
        if n % 3 == 0:
            producer.send(INVOICES, f"invoice {n}")
            invoices += 1
        n += 1
        time.sleep(0.25)
    producer.send(INVOICES, "last", receipt="done")
    return [producer, consumer, listener, poison], invoices + 1


def check_console(page, broker, invoices, screenshot, router):
    violations = []
    page.on("console", lambda m: violations.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda err: violations.append(str(err)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(f"{broker.admin}/")
    # Without the token the JSON is refused: the page asks for it.
    page.wait_for_function("() => document.getElementById('state').textContent === 'token needed'",
                           timeout=20000)
    page.fill("#token", TOKEN)
    page.click("#settoken")
    page.wait_for_selector("#state.up", timeout=20000)
    row = f'tr[data-queue="{INVOICES}"] td.depth'
    page.wait_for_function(
        "([sel, n]) => { const e = document.querySelector(sel); return e && e.textContent === n; }",
        arg=[row, f"{invoices:,}"], timeout=20000)
    print(f"queue row with its depth ({invoices}): ok", flush=True)
    page.wait_for_selector("#brokerspark polyline.in", state="attached", timeout=20000)
    page.wait_for_selector(f'tr[data-queue="{ORDERS}"] svg.spark polyline.in', state="attached",
                           timeout=20000)
    print("sparklines: ok", flush=True)
    page.wait_for_selector('#connections td:text("warehouse")', timeout=20000)
    print("connections: ok", flush=True)

    # An action through the page: purge the scratch queue.
    purge = f'tr[data-queue="{SCRATCH}"] button:text("Purge")'
    page.wait_for_selector(purge, timeout=20000)
    page.click(purge)
    page.wait_for_function(
        "(sel) => { const e = document.querySelector(sel); return e && e.textContent === '0'; }",
        arg=f'tr[data-queue="{SCRATCH}"] td.depth', timeout=20000)
    print("purge from the page: ok", flush=True)
    page.wait_for_selector('tr[data-queue="/queue/DLQ.console.payments"] button:text("Move back")',
                           timeout=20000)
    if router:
        page.wait_for_function(
            """() => [...document.querySelectorAll('#plugins tbody tr')].some(
                 tr => tr.cells[0].textContent === 'router'
                       && Number(tr.cells[2].textContent.replace(/,/g, '')) > 0)""",
            timeout=20000)
        page.wait_for_selector('tr[data-queue="/queue/console.orders.eu"]', timeout=20000)
        # The page asked for the plugin's recent decisions and coped with the answer (404 on
        # a broker without decision traces).
        page.wait_for_function("() => tracesAvailable !== null", timeout=20000)
        served = page.evaluate("() => tracesAvailable")
        print(f"plugins panel: ok (decision traces {'shown' if served else 'not served'})",
              flush=True)
    assert not violations, f"CSP violations or page errors: {violations}"
    print("no CSP violation: ok", flush=True)
    page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"console page: ok (screenshot {screenshot})", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--router")
    parser.add_argument("--traffic-seconds", type=int, default=25)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(args.broker, workdir, args.router)
    stop = threading.Event()
    clients = []
    try:
        # Nobody consumes the invoices: the page must show exactly as many as were sent.
        clients, invoices = traffic(broker, args.traffic_seconds, stop)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=args.chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            try:
                page = browser.new_page()
                check_console(page, broker, invoices, Path(args.screenshot), args.router)
            finally:
                browser.close()
    except Exception:
        print(broker.log_tail(), file=sys.stderr)
        raise
    finally:
        stop.set()
        for client in clients:
            client.close()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
