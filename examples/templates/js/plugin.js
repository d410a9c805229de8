// A Plugboard plugin in JavaScript (world `router`, hook `send`): messages whose header
// `header` has the value `value` go to their destination plus `suffix`
// (e.g. `/queue/orders` -> `/queue/orders.urgent`); the others stay.
//
// WIT -> JavaScript: records are objects with camelCase fields, variants are
// `{ tag: "rewrite", val: ... }`, `option<T>` is `T | undefined`, `list<u8>` is a Uint8Array,
// `u64` is a BigInt, and throwing a string from `init` returns `err(string)`.

import { log } from "plugboard:plugin/log@0.1.4";

let config = { header: "priority", value: "high", suffix: ".urgent" };

export const lifecycle = {
  init(json) {
    config = { ...config, ...JSON.parse(json) };
    if (typeof config.suffix !== "string" || config.suffix === "" || config.suffix.includes(":"))
      throw "config: `suffix` must be non-empty and contain no `:`";
    log("info", `routing ${config.header}=${config.value} to *${config.suffix}`);
    return {
      // The host copies only this header into the plugin: no body, no other headers.
      send: { headers: { tag: "named", val: [config.header] }, body: false },
      deliver: { headers: { tag: "none" }, body: false },
    };
  },
};

export const send = {
  onSend(sender, msg) {
    const value = msg.headers.find((h) => h.name === config.header)?.value;
    if (value !== config.value) return { tag: "keep" };
    return {
      tag: "rewrite",
      val: {
        destination: msg.destination + config.suffix,
        removeHeaders: [],
        setHeaders: [],
        body: undefined,
      },
    };
  },
};
