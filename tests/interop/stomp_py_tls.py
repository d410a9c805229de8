#!/usr/bin/env python3
"""stomp.py over TLS against a running plugboard broker.

Usage: stomp_py_tls.py --port PORT --ca CA.pem --tls {1.2,1.3} [--cert C.pem --key K.pem]

Pins the TLS version (stomp.py builds its own ssl.SSLContext, so the version bounds are set on
every context as it wraps a socket), connects over STOMP 1.2, checks the negotiated TLS version, then
subscribes, sends with a receipt, receives and acks, and sends DISCONNECT with a receipt.
Exits 0 when everything holds, 1 with a "FAIL ..." line on stderr otherwise.
"""

import argparse
import ssl
import sys
import threading
import uuid

import stomp

TIMEOUT = 10.0


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.cv = threading.Condition()
        self.messages = []
        self.receipts = set()
        self.errors = []

    def on_message(self, frame):
        with self.cv:
            self.messages.append(frame)
            self.cv.notify_all()

    def on_receipt(self, frame):
        with self.cv:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cv.notify_all()

    def on_error(self, frame):
        with self.cv:
            self.errors.append(frame)
            self.cv.notify_all()

    def wait(self, what, cond):
        with self.cv:
            if not self.cv.wait_for(cond, TIMEOUT):
                errors = [(e.headers, e.body) for e in self.errors]
                raise SystemExit(f"FAIL: no {what} within {TIMEOUT}s (errors: {errors})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--tls", choices=["1.2", "1.3"], required=True)
    args = p.parse_args()
    version = ssl.TLSVersion.TLSv1_3 if args.tls == "1.3" else ssl.TLSVersion.TLSv1_2

    wrap_socket = ssl.SSLContext.wrap_socket

    def pinned_wrap_socket(context, *a, **kw):
        context.minimum_version = version
        context.maximum_version = version
        return wrap_socket(context, *a, **kw)

    ssl.SSLContext.wrap_socket = pinned_wrap_socket

    hosts = [(args.host, args.port)]
    conn = stomp.Connection12(hosts, timeout=TIMEOUT)
    conn.set_ssl(for_hosts=hosts, ca_certs=args.ca, cert_file=args.cert, key_file=args.key)
    listener = Listener()
    conn.set_listener("l", listener)
    conn.connect(wait=True)
    negotiated = conn.transport.socket.version()
    expected = "TLSv1.3" if args.tls == "1.3" else "TLSv1.2"
    if negotiated != expected:
        print(f"FAIL: negotiated {negotiated}, expected {expected}", file=sys.stderr)
        return 1
    queue = f"/queue/stomp-py-tls-{uuid.uuid4()}"
    conn.subscribe(queue, id="s1", ack="client-individual")
    conn.send(queue, "über TLS", headers={"receipt": "r1", "x-k": "v"})
    listener.wait("receipt", lambda: "r1" in listener.receipts)
    listener.wait("message", lambda: listener.messages)
    msg = listener.messages[0]
    if msg.body != "über TLS" or msg.headers.get("x-k") != "v":
        print(f"FAIL: got {msg.headers} {msg.body!r}", file=sys.stderr)
        return 1
    conn.ack(msg.headers["ack"])
    # DISCONNECT by hand: stomp.py 9.0.0 reads TLS sockets non-blocking and takes the broker's
    # close after the receipt for "no data yet", so its disconnect() would wait forever for its
    # reader thread (a daemon thread: it ends with the process).
    conn.send_frame("DISCONNECT", {"receipt": "bye"})
    listener.wait("DISCONNECT receipt", lambda: "bye" in listener.receipts)
    if listener.errors:
        print(f"FAIL: ERROR frames: {[(e.headers, e.body) for e in listener.errors]}", file=sys.stderr)
        return 1
    print(f"OK: stomp.py over {negotiated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
