"""A Plugboard plugin in Python (world `router`, hook `send`): messages whose header `header`
has the value `value` go to their destination plus `suffix` (e.g. `/queue/orders` ->
`/queue/orders.urgent`); the others stay.

WIT -> Python: records are dataclasses in `wit_world.imports.types`, variant cases are classes
(`SendVerdict_Rewrite(edit)`), `option<T>` is `T | None`, `list<u8>` is `bytes`, and raising
`componentize_py_types.Err(reason)` returns `err(reason)`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import send
from wit_world.imports import log, types

config = {"header": "priority", "value": "high", "suffix": ".urgent"}


class Lifecycle(exports.Lifecycle):
    def init(self, config_json: str) -> types.Manifest:
        config.update(json.loads(config_json))
        suffix = config["suffix"]
        if not isinstance(suffix, str) or not suffix or ":" in suffix:
            raise Err("config: `suffix` must be non-empty and contain no `:`")
        log.log(log.Level.INFO, f"routing {config['header']}={config['value']} to *{suffix}")
        # The host copies only this header into the plugin: no body, no other headers.
        return types.Manifest(
            send=types.Needs(headers=types.HeaderNeed_Named([config["header"]]), body=False),
            deliver=types.Needs(headers=types.HeaderNeed_None_(), body=False),
        )


class Send(exports.Send):
    def on_send(self, sender: types.Principal, msg: types.Message) -> send.SendVerdict:
        value = next((h.value for h in msg.headers if h.name == config["header"]), None)
        if value != config["value"]:
            return send.SendVerdict_Keep()
        edit = types.Edit(
            destination=msg.destination + config["suffix"],
            remove_headers=[],
            set_headers=[],
            body=None,
        )
        return send.SendVerdict_Rewrite(edit)
