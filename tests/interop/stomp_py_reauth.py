#!/usr/bin/env python3
"""Re-authentication (`reauth:true`) driven by stomp.py against a running plugboard broker.

Usage: stomp_py_reauth.py --port PORT --version {1.1,1.2} [--host 127.0.0.1]

The broker has the users alice/alice-pw (see tests/interop/reauth.rs). stomp.py has no
re-authentication call of its own: its `connect()` would open a new socket, so the CONNECT
with `reauth:true` goes through the protocol layer (`Protocol1x.connect`) on the open
connection, exactly the frame stomp.py sends for a login. Checks: the second CONNECTED has the
first's session; a subscription and an open transaction survive; a reauth with a wrong
passcode gets ERROR auth.denied and the connection closes.
Exits 0 when everything holds, 1 with a "FAIL ..." line on stderr otherwise.
"""

import argparse
import sys
import threading
import traceback
import uuid

import stomp
from stomp.protocol import Protocol11, Protocol12

TIMEOUT = 5.0


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Collector(stomp.ConnectionListener):
    def __init__(self):
        self.cv = threading.Condition()
        self.connected = []
        self.messages = []
        self.errors = []
        self.disconnected = False

    def on_connected(self, frame):
        with self.cv:
            self.connected.append(frame)
            self.cv.notify_all()

    def on_message(self, frame):
        with self.cv:
            self.messages.append(frame)
            self.cv.notify_all()

    def on_error(self, frame):
        with self.cv:
            self.errors.append(frame)
            self.cv.notify_all()

    def on_disconnected(self):
        with self.cv:
            self.disconnected = True
            self.cv.notify_all()

    def wait(self, what, cond):
        with self.cv:
            check(self.cv.wait_for(cond, TIMEOUT), "timed out waiting for " + what)


def open_connection(args):
    cls = stomp.Connection12 if args.version == "1.2" else stomp.Connection11
    conn = cls([(args.host, args.port)], heartbeats=(0, 0), auto_content_length=True)
    rx = Collector()
    conn.set_listener("rx", rx)
    conn.connect("alice", "alice-pw", wait=True)
    rx.wait("CONNECTED", lambda: len(rx.connected) == 1)
    return conn, rx


def reauth(args, conn, passcode):
    protocol = Protocol12 if args.version == "1.2" else Protocol11
    protocol.connect(conn, "alice", passcode, wait=False, headers={"reauth": "true"})


def check_reauth_keeps_the_session(args):
    conn, rx = open_connection(args)
    dest = "/queue/reauth-" + uuid.uuid4().hex[:12]
    conn.subscribe(dest, "s-1", ack="auto")
    conn.begin("tx-1")
    conn.send(dest, "in the transaction", transaction="tx-1")
    reauth(args, conn, "alice-pw")
    rx.wait("the re-authentication's CONNECTED", lambda: len(rx.connected) == 2)
    first, again = rx.connected
    check(again.headers.get("session") == first.headers.get("session"),
          "same session: %r vs %r" % (first.headers, again.headers))
    check("reauth" in first.headers.get("capabilities", "").split(","),
          "capabilities list reauth: %r" % first.headers)
    check(not rx.errors, "no ERROR: %r" % rx.errors)
    conn.commit("tx-1")
    conn.send(dest, "after the reauth")
    rx.wait("two messages", lambda: len(rx.messages) == 2)
    bodies = sorted(m.body for m in rx.messages)
    check(bodies == ["after the reauth", "in the transaction"], "bodies %r" % bodies)
    check(all(m.headers.get("subscription") == "s-1" for m in rx.messages), "subscription kept")
    conn.disconnect()


def check_bad_reauth_closes(args):
    conn, rx = open_connection(args)
    reauth(args, conn, "wrong")
    rx.wait("ERROR and close", lambda: rx.errors and rx.disconnected)
    err = rx.errors[0]
    check(err.headers.get("error-code") == "auth.denied", "error-code: %r" % err.headers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", choices=["1.1", "1.2"], required=True)
    args = parser.parse_args()
    step = "reauth keeps the session"
    try:
        check_reauth_keeps_the_session(args)
        step = "a refused reauth closes"
        check_bad_reauth_closes(args)
    except Failure as e:
        print("FAIL [stomp.py %s, STOMP %s] during %s: %s" % (stomp.__version__, args.version, step, e),
              file=sys.stderr)
        sys.exit(1)
    except Exception:
        print("FAIL [stomp.py %s, STOMP %s] during %s: unexpected exception" % (stomp.__version__, args.version, step),
              file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print("OK stomp.py %s STOMP %s re-authentication" % (stomp.__version__, args.version))


if __name__ == "__main__":
    main()
