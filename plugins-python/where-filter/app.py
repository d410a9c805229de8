"""`where-filter`: per-subscriber filters in Python (world `message-filter`, hook `message`).

A subscriber adds a `where` header to its SUBSCRIBE with a Python expression over the message's
headers, and receives only the messages for which it is true:

    SUBSCRIBE
    destination:/topic/prices
    where:symbol in ("ACME", "INITECH") and float(price) >= 100

Header names are Python names with `-` written as `_` (`content_type` is the header
`content-type`); a header that is absent is `None`. `destination` and `body` (the body as text;
asking for it makes the host pass bodies) are names too. Allowed: literals, tuples and lists,
`and or not`, comparisons (`== != < <= > >= in not in is is not`), `+ - * / %`, and the
functions `int float str len lower upper`. An expression that fails on a message (say
`float(None)`) skips that message. A malformed or disallowed expression refuses the SUBSCRIBE
with `where: column N: ...`.

Config (all optional): `header = "where"` (the SUBSCRIBE header to read), `max_length = 512`.
This is what Python is good at: `ast` parses and checks the expression, `compile` runs it.
"""

import ast
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import deliver
from wit_world.imports import log, types

FUNCTIONS = {
    "int": int,
    "float": float,
    "str": str,
    "len": len,
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
}
ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.Is, ast.IsNot, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod,
    ast.Constant, ast.Name, ast.Load, ast.Tuple, ast.List, ast.Call,
)
NOTHING = types.Needs(headers=types.HeaderNeed_None_(), body=False)

settings = {"header": "where", "max_length": 512}
compiled = {}  # token -> code, per instance (instances are pooled: only a cache)


def parse(text):
    """Checks an expression; returns (normalised text, header names, whether it reads the body)."""
    if len(text) > settings["max_length"]:
        raise ValueError(f"column 1: longer than {settings['max_length']} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"column {e.offset or 1}: {e.msg}") from None
    headers, body = set(), False
    for node in ast.walk(tree):
        column = getattr(node, "col_offset", 0) + 1
        if not isinstance(node, ALLOWED):
            raise ValueError(f"column {column}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        ):
            raise ValueError(f"column {column}: only {', '.join(FUNCTIONS)} may be called")
        if isinstance(node, ast.Name) and node.id not in FUNCTIONS:
            if node.id == "body":
                body = True
            elif node.id != "destination":
                headers.add(node.id.replace("_", "-"))
    return ast.unparse(tree), sorted(headers), body


class Names(dict):
    """The names an expression sees: an absent header is `None`."""

    def __missing__(self, key):
        return None


def matches(token, msg):
    code = compiled.get(token)
    if code is None:
        code = compile(ast.parse(token.decode(), mode="eval"), "<where>", "eval")
        compiled[token] = code
    names = {"destination": msg.destination, "body": None}
    if msg.body is not None:
        names["body"] = msg.body.decode("utf-8", "replace")
    for h in reversed(msg.headers):  # the first occurrence wins
        names[h.name.replace("-", "_")] = h.value
    env = Names(names)
    env.update(FUNCTIONS)
    try:
        return bool(eval(code, {"__builtins__": {}}, env))
    except Exception:
        return False


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> types.Manifest:
        try:
            table = json.loads(config)
        except ValueError as e:
            raise Err(f"config: {e}")
        unknown = set(table) - set(settings)
        if unknown:
            raise Err(f"config: unknown key `{sorted(unknown)[0]}`")
        settings.update(table)
        if not isinstance(settings["header"], str) or not isinstance(settings["max_length"], int):
            raise Err("config: `header` must be a string and `max_length` an integer")
        return types.Manifest(send=NOTHING, deliver=NOTHING)


class Deliver(exports.Deliver):
    def prepare_subscription(self, subscriber, sub):
        text = next((h.value for h in sub.headers if h.name == settings["header"]), None)
        if text is None:
            return None  # no filter: deliveries to this subscription cost nothing
        try:
            normalised, headers, body = parse(text)
        except ValueError as e:
            raise Err(f"{settings['header']}: {e}")
        log.log(log.Level.DEBUG, f"{sub.id}: {normalised}")
        needs = types.Needs(headers=types.HeaderNeed_Named(headers), body=body)
        return deliver.FilterPlan(token=normalised.encode(), needs=needs)

    def filter(self, token: bytes, msg: types.Message) -> deliver.FilterVerdict:
        if matches(token, msg):
            return deliver.FilterVerdict_Deliver()
        return deliver.FilterVerdict_Skip()


def _warm_up():
    """Runs every path once while the component is built: componentize-py snapshots the
    interpreter after this module is imported, so modules that Python imports lazily (here, by
    `ast.unparse` and by error reporting) are already loaded. A lazy import at call time would
    look for files, and the plugin has no filesystem: the call would trap."""
    for text in ('a == "x" and float(b) >= 1.5 or lower(c) in ("y", "z") and not d', "x >"):
        try:
            token = parse(text)[0].encode()
            msg = types.Message("/t", [types.Header("a", "x")], None, 0, b"")
            matches(token, msg)
        except ValueError:
            pass
    compiled.clear()


_warm_up()
