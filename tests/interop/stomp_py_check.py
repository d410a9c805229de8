#!/usr/bin/env python3
"""Drive a running plugboard broker with stomp.py (a client nobody on this project wrote).

Usage: stomp_py_check.py --port PORT --version {1.0,1.1,1.2} [--host 127.0.0.1]

Checks, for the chosen protocol version: connect (STOMP and CONNECT frames), subscribe with
auto and client-individual acks, send with user headers and a UTF-8 body, receive, ack,
nack -> redelivered (1.1+; in 1.0 redelivery after a reconnect), topic fan-out, transactions
(commit and abort), message priorities (order, and an ERROR for a bad one), receipts,
heart-beats (1.1+) and disconnect with a receipt.
Exits 0 when everything holds, 1 with a "FAIL ..." line on stderr otherwise.
"""

import argparse
import sys
import threading
import time
import traceback
import uuid

import stomp

TIMEOUT = 5.0


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Collector(stomp.ConnectionListener):
    """Collects what a connection receives; `wait_*` block with a timeout."""

    def __init__(self, name):
        self.name = name
        self.cv = threading.Condition()
        self.messages = []
        self.receipts = set()
        self.errors = []
        self.connected = None
        self.disconnected = False

    def on_connected(self, frame):
        with self.cv:
            self.connected = frame
            self.cv.notify_all()

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

    def on_disconnected(self):
        with self.cv:
            self.disconnected = True
            self.cv.notify_all()

    def _wait(self, pred, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not pred():
                if self.errors:
                    e = self.errors[0]
                    raise Failure("%s: %s got ERROR %r %r" % (what, self.name, e.headers, e.body))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure("%s: timed out after %.1fs on %s" % (what, timeout, self.name))
                self.cv.wait(left)

    def wait_receipt(self, rid, what):
        self._wait(lambda: rid in self.receipts, "%s (receipt %s)" % (what, rid))

    def wait_messages(self, n, what, timeout=TIMEOUT):
        self._wait(lambda: len(self.messages) >= n, "%s (want %d messages)" % (what, n), timeout)
        with self.cv:
            got = self.messages[:n]
            del self.messages[:n]
        return got

    def expect_nothing(self, what, secs=0.5):
        time.sleep(secs)
        with self.cv:
            check(not self.messages, "%s: unexpected messages %r" % (what, [m.body for m in self.messages]))
            check(not self.errors, "%s: unexpected ERROR %r" % (what, [e.headers for e in self.errors]))


class Session:
    """One stomp.py connection of the version under test, with its collector."""

    def __init__(self, args, name, heartbeats=(0, 0), with_connect_command=False):
        self.version = args.version
        hosts = [(args.host, args.port)]
        if args.version == "1.0":
            self.conn = stomp.Connection10(hosts)
        elif args.version == "1.1":
            self.conn = stomp.Connection11(hosts, heartbeats=heartbeats)
        else:
            self.conn = stomp.Connection12(hosts, heartbeats=heartbeats)
        self.rx = Collector(name)
        self.conn.set_listener("collector", self.rx)
        if args.version == "1.0":
            self.conn.connect(wait=True)
        else:
            self.conn.connect(wait=True, with_connect_command=with_connect_command)
        self.rx._wait(lambda: self.rx.connected is not None, "CONNECTED for " + name)
        self.connected = self.rx.connected

    def receipt(self):
        return "r-" + uuid.uuid4().hex

    def send(self, dest, body, content_type=None, **headers):
        rid = self.receipt()
        headers["receipt"] = rid
        self.conn.send(dest, body, content_type=content_type, headers=headers)
        self.rx.wait_receipt(rid, "SEND to " + dest)

    def subscribe(self, dest, sub_id, ack="auto"):
        rid = self.receipt()
        self.conn.subscribe(dest, id=sub_id, ack=ack, headers={"receipt": rid})
        self.rx.wait_receipt(rid, "SUBSCRIBE " + dest)

    def unsubscribe(self, dest, sub_id):
        rid = self.receipt()
        if self.version == "1.0":
            self.conn.unsubscribe(id=sub_id, headers={"receipt": rid})
        else:
            self.conn.unsubscribe(sub_id, headers={"receipt": rid})
        self.rx.wait_receipt(rid, "UNSUBSCRIBE " + dest)

    def ack(self, msg):
        rid = self.receipt()
        h = msg.headers
        if self.version == "1.0":
            self.conn.ack(h["message-id"], receipt=rid)
        elif self.version == "1.1":
            self.conn.ack(h["message-id"], h["subscription"], receipt=rid)
        else:
            self.conn.ack(h["ack"], receipt=rid)
        self.rx.wait_receipt(rid, "ACK")

    def nack(self, msg):
        rid = self.receipt()
        h = msg.headers
        if self.version == "1.1":
            self.conn.nack(h["message-id"], h["subscription"], receipt=rid)
        else:
            self.conn.nack(h["ack"], receipt=rid)
        self.rx.wait_receipt(rid, "NACK")

    def disconnect(self):
        rid = self.receipt()
        self.conn.disconnect(receipt=rid)
        self.rx._wait(lambda: rid in self.rx.receipts, "DISCONNECT receipt")
        self.rx._wait(lambda: self.rx.disconnected, "close after DISCONNECT")


def unique(name):
    return "%s-%s" % (name, uuid.uuid4().hex[:12])


def check_connected(args, s):
    h = s.connected.headers
    check("session" in h, "CONNECTED has a session header: %r" % h)
    check(h.get("server", "").startswith("plugboard/"), "CONNECTED server header: %r" % h)
    if args.version != "1.0":
        check(h.get("version") == args.version, "negotiated version %r, want %s" % (h.get("version"), args.version))


def check_auto_and_headers(args, s):
    dest = "/queue/" + unique("interop-auto")
    s.subscribe(dest, "sub-auto")
    body = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e"
    s.send(dest, body, content_type="text/plain;charset=utf-8", **{"x-custom": "value", "x-number": "42"})
    (m,) = s.rx.wait_messages(1, "auto subscription")
    h = m.headers
    check(m.body == body, "UTF-8 body round trip: %r != %r" % (m.body, body))
    check(h.get("destination") == dest, "destination %r != %r" % (h.get("destination"), dest))
    check(h.get("x-custom") == "value" and h.get("x-number") == "42", "user headers passed through: %r" % h)
    check(h.get("content-type") == "text/plain;charset=utf-8", "content-type: %r" % h)
    check(int(h.get("content-length", "-1")) == len(body.encode("utf-8")), "content-length in bytes: %r" % h)
    check(h.get("message-id"), "message-id present: %r" % h)
    check(h.get("subscription") == "sub-auto", "subscription header: %r" % h)
    if args.version != "1.0":
        # stomp.py escapes header values in 1.1+; the broker must escape them back.
        tricky = "a:b\\c"
        s.send(dest, "escaped", **{"x-tricky": tricky})
        (m,) = s.rx.wait_messages(1, "escaped header")
        check(m.headers.get("x-tricky") == tricky, "escaped header %r != %r" % (m.headers.get("x-tricky"), tricky))
    s.unsubscribe(dest, "sub-auto")
    s.send(dest, "after unsubscribe")
    s.rx.expect_nothing("after UNSUBSCRIBE")


def check_client_individual(args, s):
    dest = "/queue/" + unique("interop-ci")
    s.subscribe(dest, "sub-ci", ack="client-individual")
    s.send(dest, "first")
    s.send(dest, "second")
    m1, m2 = s.rx.wait_messages(2, "client-individual subscription")
    check([m1.body, m2.body] == ["first", "second"], "order: %r" % [m1.body, m2.body])
    if args.version == "1.2":
        check(m1.headers.get("ack"), "1.2 MESSAGE has an ack header: %r" % m1.headers)
    s.ack(m1)
    if args.version == "1.0":
        # No NACK in 1.0: the unacked message comes back after the consumer leaves.
        s.disconnect()
        s2 = Session(args, "redelivery-1.0")
        s2.subscribe(dest, "sub-ci2", ack="client-individual")
        (again,) = s2.rx.wait_messages(1, "redelivery after disconnect")
        check(again.body == "second", "redelivered body %r" % again.body)
        check(again.headers.get("redelivered") == "true", "redelivered header: %r" % again.headers)
        s2.ack(again)
        s2.rx.expect_nothing("nothing else in the queue")
        return s2
    s.nack(m2)
    (again,) = s.rx.wait_messages(1, "redelivery after NACK")
    check(again.body == "second", "redelivered body %r" % again.body)
    check(again.headers.get("redelivered") == "true", "redelivered header: %r" % again.headers)
    s.ack(again)
    s.rx.expect_nothing("nothing else after ACK")
    return s


def check_topic(args, s):
    dest = "/topic/" + unique("interop-topic")
    other = Session(args, "topic-peer")
    other.subscribe(dest, "t2")
    s.subscribe(dest, "t1")
    s.send(dest, "fan-out")
    (a,) = s.rx.wait_messages(1, "topic copy 1")
    (b,) = other.rx.wait_messages(1, "topic copy 2")
    check(a.body == b.body == "fan-out", "topic bodies %r %r" % (a.body, b.body))
    other.disconnect()
    s.unsubscribe(dest, "t1")


def check_wildcards(args, s):
    """ActiveMQ's * and >, RabbitMQ's #: each MESSAGE names the concrete topic and the pattern's id."""
    root = unique("interop-wild")
    patterns = {"star": "/topic/%s.*" % root, "hash": "/topic/%s.#" % root, "gt": "/topic/%s.>" % root}
    for sub_id, pattern in patterns.items():
        s.subscribe(pattern, sub_id)
    one, two = "/topic/%s.a" % root, "/topic/%s.a.b" % root
    s.send(one, "one segment")
    s.send(two, "two segments")
    got = sorted((m.headers.get("subscription"), m.headers.get("destination"), m.body)
                 for m in s.rx.wait_messages(5, "wildcard copies"))
    want = sorted([("star", one, "one segment"), ("hash", one, "one segment"), ("gt", one, "one segment"),
                   ("hash", two, "two segments"), ("gt", two, "two segments")])
    check(got == want, "wildcard deliveries %r, want %r" % (got, want))
    s.rx.expect_nothing("nothing more for the wildcard subscriptions")
    for sub_id, pattern in patterns.items():
        s.unsubscribe(pattern, sub_id)


def check_transactions(args, s):
    dest = "/queue/" + unique("interop-tx")
    s.subscribe(dest, "sub-tx")
    rid = s.receipt()
    tx = s.conn.begin(headers={"receipt": rid})
    s.rx.wait_receipt(rid, "BEGIN")
    s.send(dest, "in tx", transaction=tx)
    s.rx.expect_nothing("SEND in a transaction before COMMIT")
    rid = s.receipt()
    s.conn.commit(tx, headers={"receipt": rid})
    s.rx.wait_receipt(rid, "COMMIT")
    (m,) = s.rx.wait_messages(1, "message after COMMIT")
    check(m.body == "in tx", "committed body %r" % m.body)
    check("transaction" not in m.headers, "no transaction header on MESSAGE: %r" % m.headers)

    tx = s.conn.begin()
    s.send(dest, "aborted", transaction=tx)
    rid = s.receipt()
    s.conn.abort(tx, headers={"receipt": rid})
    s.rx.wait_receipt(rid, "ABORT")
    s.rx.expect_nothing("SEND in an aborted transaction")
    s.unsubscribe(dest, "sub-tx")


def check_priorities(args, s):
    """Message priority: waiting messages go out highest priority first, FIFO within one."""
    dest = "/queue/" + unique("interop-prio")
    for body, prio in [("low", "1"), ("default", None), ("high", "9"), ("mid", "6"), ("high2", "9")]:
        headers = {} if prio is None else {"priority": prio}
        s.send(dest, body, **headers)
    s.subscribe(dest, "sub-prio")
    got = s.rx.wait_messages(5, "messages of several priorities")
    bodies = [m.body for m in got]
    check(bodies == ["high", "high2", "mid", "default", "low"], "priority order %r" % bodies)
    check(got[0].headers.get("priority") == "9", "priority header echoed: %r" % got[0].headers)
    s.unsubscribe(dest, "sub-prio")

    bad = Session(args, "bad-priority")
    rid = bad.receipt()
    bad.conn.send(dest, "x", headers={"priority": "urgent", "receipt": rid})
    deadline = time.monotonic() + TIMEOUT
    with bad.rx.cv:
        while not bad.rx.errors and time.monotonic() < deadline:
            bad.rx.cv.wait(deadline - time.monotonic())
        errors = list(bad.rx.errors)
    check(errors, "ERROR for priority:urgent")
    message = errors[0].headers.get("message", "")
    check("invalid priority" in message, "ERROR message %r" % message)
    check(errors[0].headers.get("receipt-id") == rid, "ERROR receipt-id: %r" % errors[0].headers)


def check_heartbeats(args):
    if args.version == "1.0":
        return
    s = Session(args, "heart-beats", heartbeats=(200, 200))
    hb = s.connected.headers.get("heart-beat", "")
    check(hb and hb != "0,0", "CONNECTED heart-beat for (200,200): %r" % hb)
    time.sleep(1.5)
    check(s.conn.is_connected() and not s.rx.disconnected, "still connected after 1.5 s of heart-beats")
    dest = "/queue/" + unique("interop-hb")
    s.subscribe(dest, "hb")
    s.send(dest, "alive")
    (m,) = s.rx.wait_messages(1, "message after heart-beats")
    check(m.body == "alive", "body %r" % m.body)
    s.disconnect()


def check_unsubscribe_by_destination_1_0(args):
    """1.0 clients unsubscribe by destination, whether or not they subscribed with an id."""
    if args.version != "1.0":
        return
    s = Session(args, "unsubscribe-by-destination")
    for sub_id in (None, "with-id"):
        dest = "/queue/" + unique("interop-unsub10")
        rid = s.receipt()
        s.conn.subscribe(dest, id=sub_id, ack="auto", headers={"receipt": rid})
        s.rx.wait_receipt(rid, "SUBSCRIBE %s (id %r)" % (dest, sub_id))
        rid = s.receipt()
        s.conn.unsubscribe(destination=dest, headers={"receipt": rid})
        s.rx.wait_receipt(rid, "UNSUBSCRIBE by destination (SUBSCRIBE had id %r)" % sub_id)
        s.send(dest, "after unsubscribe")
        s.rx.expect_nothing("after UNSUBSCRIBE by destination (id %r)" % sub_id)
    s.disconnect()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", choices=["1.0", "1.1", "1.2"], required=True)
    args = parser.parse_args()
    step = "connect"
    try:
        s = Session(args, "main")
        check_connected(args, s)
        if args.version != "1.0":
            step = "connect with CONNECT"
            c = Session(args, "connect-command", with_connect_command=True)
            check_connected(args, c)
            c.disconnect()
        step = "auto subscription and headers"
        check_auto_and_headers(args, s)
        step = "client-individual, ack, nack/redelivery"
        s = check_client_individual(args, s)
        step = "topic fan-out"
        check_topic(args, s)
        step = "wildcard topic subscriptions"
        check_wildcards(args, s)
        step = "transactions"
        check_transactions(args, s)
        step = "message priorities"
        check_priorities(args, s)
        step = "heart-beats"
        check_heartbeats(args)
        step = "disconnect"
        s.disconnect()
        step = "1.0 UNSUBSCRIBE by destination"
        check_unsubscribe_by_destination_1_0(args)
    except Failure as e:
        print("FAIL [stomp.py %s, STOMP %s] during %s: %s" % (stomp.__version__, args.version, step, e), file=sys.stderr)
        sys.exit(1)
    except Exception:
        print("FAIL [stomp.py %s, STOMP %s] during %s: unexpected exception" % (stomp.__version__, args.version, step),
              file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print("OK stomp.py %s STOMP %s" % (stomp.__version__, args.version))


if __name__ == "__main__":
    main()
