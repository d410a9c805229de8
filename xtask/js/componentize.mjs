// Builds one JavaScript plugin into a component with the componentize-js library (the
// `jco componentize` command line fails on this machine; the library works).
// usage: node componentize.mjs TOOLS_DIR SOURCE.js WIT_DIR WORLD OUT.wasm
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [toolsDir, sourcePath, witPath, worldName, out] = process.argv.slice(2);
const entry = join(toolsDir, "node_modules/@bytecodealliance/componentize-js/src/componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  // A pure component: no WASI at all (the host would refuse or stub it anyway).
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await writeFile(out, component);
