"""STOMP over WebSocket framing checks with the `websockets` library (a client nobody on this
project wrote): frames split over messages, many frames in one message, a message fragmented
into WebSocket continuation frames, a 1 MiB message, a binary body, and the refused upgrades
(unknown subprotocol, foreign origin). Exits non-zero on the first failure.

Usage: ws_framing_check.py --url ws://127.0.0.1:PORT/ws
"""

import argparse
import sys
import uuid

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

WAIT = 10


def frames_of(message):
    """The STOMP frames in one message (the broker sends exactly one, plus a trailing EOL)."""
    data = message.encode() if isinstance(message, str) else bytes(message)
    return data


def parse(data):
    head, _, rest = data.partition(b"\n\n")
    lines = head.decode().split("\n")
    headers = dict(line.split(":", 1) for line in lines[1:])
    body = rest.rstrip(b"\n")
    assert body.endswith(b"\0"), f"frame does not end with NUL: {data[:80]!r}"
    return lines[0], headers, body[:-1]


def recv_frame(ws):
    """The next message that is not a heart-beat: (command, headers, body, was_text)."""
    while True:
        message = ws.recv(timeout=WAIT)
        if message == "\n":
            continue
        command, headers, body = parse(frames_of(message))
        return command, headers, body, isinstance(message, str)


def session(url):
    ws = connect(url, subprotocols=["v10.stomp", "v11.stomp", "v12.stomp"], max_size=None)
    assert ws.subprotocol == "v12.stomp", ws.subprotocol
    ws.send("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0")
    command, headers, _, _ = recv_frame(ws)
    assert command == "CONNECTED", (command, headers)
    assert headers["version"] == "1.2"
    return ws


def check_split_and_batched(url):
    queue = f"/queue/ws-py-{uuid.uuid4().hex[:8]}"
    ws = session(url)
    ws.send(f"SUBSCRIBE\nid:s\ndestination:{queue}\n\n\0")
    # One SEND split over three messages (inside the command, a header and the body).
    ws.send("SE")
    ws.send(f"ND\ndestination:{queue}\ncontent-type:text/plain\n\nhel")
    ws.send("lo\0")
    # Three SENDs and EOLs in one message.
    ws.send("".join(f"SEND\ndestination:{queue}\n\nbatch {i}\0\n" for i in range(3)))
    # One SEND as a message fragmented into continuation frames.
    ws.send(iter([f"SEND\ndestination:{queue}\n", "\nfragm", "ented\0"]))
    bodies = [recv_frame(ws)[2] for _ in range(5)]
    assert bodies == [b"hello", b"batch 0", b"batch 1", b"batch 2", b"fragmented"], bodies
    ws.close()
    print("split, batched and fragmented frames: ok")


def check_large_and_binary(url):
    queue = f"/queue/ws-py-{uuid.uuid4().hex[:8]}"
    ws = session(url)
    ws.send(f"SUBSCRIBE\nid:s\ndestination:{queue}\nreceipt:sub\n\n\0")
    assert recv_frame(ws)[0] == "RECEIPT"
    body = bytes(range(256)) * 4
    ws.send(f"SEND\ndestination:{queue}\ncontent-length:{len(body)}\n\n".encode() + body + b"\0")
    command, headers, got, was_text = recv_frame(ws)
    assert command == "MESSAGE" and got == body, (command, len(got))
    assert not was_text, "a body that is not UTF-8 must come as a binary message"
    big = "m" * (1024 * 1024)
    ws.send(f"SEND\ndestination:{queue}\n\n{big}\0")
    command, headers, got, was_text = recv_frame(ws)
    assert command == "MESSAGE" and got == big.encode(), (command, len(got))
    assert was_text, "a UTF-8 frame comes as a text message"
    ws.close()
    print("binary body and 1 MiB message: ok")


def expect_status(status, **kwargs):
    try:
        connect(kwargs.pop("url"), **kwargs).close()
    except InvalidStatus as refused:
        assert refused.response.status_code == status, refused.response.status_code
        return
    raise AssertionError(f"the upgrade was accepted, expected HTTP {status}")


def check_refusals(url):
    expect_status(400, url=url, subprotocols=["mqtt", "v13.stomp"])
    expect_status(403, url=url, origin="https://evil.example")
    # No subprotocol at all, and a loopback page, are accepted.
    ws = connect(url, origin="http://127.0.0.1:8000")
    assert ws.subprotocol is None
    ws.close()
    print("unknown subprotocol (400), foreign origin (403), no subprotocol: ok")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    check_split_and_batched(args.url)
    check_large_and_binary(args.url)
    check_refusals(args.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
