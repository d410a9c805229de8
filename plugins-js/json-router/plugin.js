// `json-router`: a content-based router in JavaScript (world `router`, hook `send`).
//
// It reads each SEND's JSON body and routes it by rules written in the plugin's config:
//
//   [plugins.config]
//   rules = [
//     { destination = "/queue/events", when = { type = "^order\\." }, to = ["/topic/orders.{region}"] },
//     { destination = "/queue/events", when = { "header:priority" = "^high$" }, to = ["/queue/urgent", "/queue/audit"] },
//   ]
//   reject_invalid_json = true   # a body that is not JSON is rejected (else it stays)
//
// `when` maps a dotted JSON path (`customer.country`) or `header:NAME` to a regular expression;
// every entry must match. `to` is one destination (a rewrite) or several (a fan-out);
// `{path}` in it is replaced by that JSON field (letters, digits, `.`, `_` and `-` only).
// The first matching rule wins; no match keeps the message where it was sent.
// This is what JavaScript is good at: JSON, regular expressions and string templates.

import { log } from "plugboard:plugin/log@0.1.4";

let rules = [];
let rejectInvalidJson = false;
const decoder = new TextDecoder();

function lookup(doc, path) {
  let value = doc;
  for (const key of path.split(".")) {
    if (value === null || typeof value !== "object" || !(key in value)) return undefined;
    value = value[key];
  }
  return value;
}

function fill(template, doc) {
  return template.replace(/\{([^}]+)\}/g, (_, path) => {
    const value = lookup(doc, path);
    const text = value === undefined || value === null ? "" : String(value);
    if (!/^[A-Za-z0-9._-]*$/.test(text)) throw `field \`${path}\` cannot be part of a destination`;
    return text;
  });
}

function edit(destination) {
  return { destination, removeHeaders: [], setHeaders: [], body: undefined };
}

export const lifecycle = {
  init(configJson) {
    const config = JSON.parse(configJson);
    const headers = new Set();
    rules = (config.rules ?? []).map((rule, i) => {
      if (typeof rule.destination !== "string") throw `config: rules[${i}]: \`destination\` is missing`;
      const to = Array.isArray(rule.to) ? rule.to : [rule.to];
      if (to.length === 0 || !to.every((d) => typeof d === "string" && d.startsWith("/")))
        throw `config: rules[${i}]: \`to\` must be destinations starting with \`/\``;
      const when = Object.entries(rule.when ?? {}).map(([key, pattern]) => {
        let regex;
        try {
          regex = new RegExp(pattern);
        } catch (e) {
          throw `config: rules[${i}].when.${key}: ${e.message}`;
        }
        if (key.startsWith("header:")) headers.add(key.slice(7));
        return { key, regex };
      });
      return { destination: rule.destination, when, to };
    });
    rejectInvalidJson = config.reject_invalid_json === true;
    log("info", `${rules.length} rule(s)`);
    return {
      send: { headers: { tag: "named", val: [...headers].sort() }, body: true },
      deliver: { headers: { tag: "none" }, body: false },
    };
  },
};

export const send = {
  onSend(sender, msg) {
    const candidates = rules.filter((r) => r.destination === msg.destination);
    if (candidates.length === 0) return { tag: "keep" };
    let doc;
    try {
      doc = JSON.parse(decoder.decode(msg.body ?? new Uint8Array()));
    } catch (e) {
      return rejectInvalidJson ? { tag: "reject", val: "the body is not JSON" } : { tag: "keep" };
    }
    const header = (name) => msg.headers.find((h) => h.name === name)?.value;
    for (const rule of candidates) {
      const matches = rule.when.every(({ key, regex }) => {
        const value = key.startsWith("header:") ? header(key.slice(7)) : lookup(doc, key);
        return value !== undefined && value !== null && regex.test(String(value));
      });
      if (!matches) continue;
      let targets;
      try {
        targets = rule.to.map((t) => fill(t, doc));
      } catch (reason) {
        return { tag: "reject", val: String(reason) };
      }
      if (targets.length === 1) {
        return targets[0] === msg.destination ? { tag: "keep" } : { tag: "rewrite", val: edit(targets[0]) };
      }
      return { tag: "fan-out", val: targets.map(edit) };
    }
    return { tag: "keep" };
  },
};
