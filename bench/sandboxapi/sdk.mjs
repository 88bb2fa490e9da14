// Times `fcvm serve` through the official E2B JS SDK (the e2b package
// pinned in test/e2b; run scripts/install-e2b.sh first). bench/sandboxapi
// -sdk starts serve and runs this with E2B_API_URL, E2B_SANDBOX_URL,
// E2B_API_KEY, TEMPLATE (an image with /bin/bash), SNAPSHOT (a tag to make
// the snapshot template under), FCVM (the fcvm binary, for fcvm exec),
// COLD, CLONES and RUNS.
//
// What it times, one thing at a time:
//   - create to first command: Sandbox.create then commands.run("true")
//     finished, COLD times from the image (cold boots) and CLONES times
//     from a snapshot template (clones) made with sbx.createSnapshot;
//   - round trip: commands.run("true") alternated with `fcvm exec ID true`
//     (timed around the fcvm process), RUNS of each after one warm-up, on
//     one image-booted sandbox and on one clone.
// Every sandbox it made is killed and the snapshot deleted, also on failure.
import { createRequire } from "node:module";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";

// The SDK is installed in test/e2b, not here: load its ES module entry.
const require = createRequire(new URL("../../test/e2b/package.json", import.meta.url));
const pkgJSON = require.resolve("e2b/package.json");
const pkg = JSON.parse(readFileSync(pkgJSON, "utf8"));
const { Sandbox } = await import(pathToFileURL(join(dirname(pkgJSON), pkg.module)).href);

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`sdk.mjs: ${k} must be set`);
  return v;
};
const template = env("TEMPLATE");
const snapName = env("SNAPSHOT");
const fcvm = env("FCVM");
const num = (k) => {
  const n = Number(env(k));
  if (!Number.isInteger(n) || n < 1) throw new Error(`sdk.mjs: ${k}=${process.env[k]}: want a positive integer`);
  return n;
};
const cold = num("COLD"), clones = num("CLONES"), runs = num("RUNS");
const slow = { requestTimeoutMs: 300_000 };
// A sandbox outlives this script by at most its timeout, should the kills
// below never happen.
const life = { ...slow, timeoutMs: 1_800_000 };
const log = (...a) => console.error("sdk:", ...a);
const run = promisify(execFile);

const made = new Set();
let snapshotMade = false;
const t = {};
const add = (k, ms) => (t[k] ??= []).push(ms);

// createToFirst creates a sandbox from tpl and runs `true` in it, timed.
async function createToFirst(kind, tpl) {
  const t0 = performance.now();
  const sbx = await Sandbox.create(tpl, life);
  made.add(sbx);
  await sbx.commands.run("true");
  const ms = performance.now() - t0;
  add(kind, ms);
  log(kind, sbx.sandboxId, Math.round(ms), "ms");
  return sbx;
}

// roundTrips alternates commands.run("true") and `fcvm exec ID true` on sbx.
async function roundTrips(kind, sbx) {
  for (let i = 0; i <= runs; i++) {
    let t0 = performance.now();
    await sbx.commands.run("true");
    const api = performance.now() - t0;
    t0 = performance.now();
    await run(fcvm, ["exec", sbx.sandboxId, "true"]);
    const exec = performance.now() - t0;
    if (i > 0) { // the first of each warms caches up
      add(`${kind} commands.run`, api);
      add(`${kind} fcvm exec`, exec);
    }
  }
  log(kind, "round trips done");
}

async function kill(sbx) {
  await sbx.kill().catch((e) => log("kill", sbx.sandboxId, e.message));
  made.delete(sbx);
}

try {
  const first = await createToFirst("image", template);
  for (let i = 1; i < cold; i++) await kill(await createToFirst("image", template));
  await roundTrips("image", first);

  const t0 = performance.now();
  await first.createSnapshot({ name: snapName, ...slow });
  snapshotMade = true;
  log("snapshot template", snapName, "made in", Math.round(performance.now() - t0), "ms");
  await kill(first);

  const clone = await createToFirst("snapshot", snapName);
  for (let i = 1; i < clones; i++) await kill(await createToFirst("snapshot", snapName));
  await roundTrips("snapshot", clone);
} finally {
  for (const sbx of [...made]) await kill(sbx);
  if (snapshotMade) await Sandbox.deleteSnapshot(snapName).catch((e) => log("delete snapshot", snapName, e.message));
}

// Nearest-rank percentile, as bench/sandboxapi's Go side.
const pct = (xs, p) => xs[Math.max(Math.ceil((xs.length * p) / 100), 1) - 1];
const fmt = (ms) => `${Math.round(ms)} ms`.padStart(9);
const rows = [
  ["create to first command, image (cold boot)", t.image],
  ["create to first command, snapshot (clone)", t.snapshot],
  ["image sandbox: commands.run('true')", t["image commands.run"]],
  ["image sandbox: fcvm exec ID true", t["image fcvm exec"]],
  ["clone: commands.run('true')", t["snapshot commands.run"]],
  ["clone: fcvm exec ID true", t["snapshot fcvm exec"]],
];
const w = Math.max(...rows.map(([k]) => k.length));
console.log(`${"".padEnd(w)} ${"n".padStart(4)} ${"p50".padStart(9)} ${"p99".padStart(9)} ${"max".padStart(9)}`);
for (const [k, xs] of rows) {
  xs.sort((a, b) => a - b);
  console.log(`${k.padEnd(w)} ${String(xs.length).padStart(4)} ${fmt(pct(xs, 50))} ${fmt(pct(xs, 99))} ${fmt(xs[xs.length - 1])}`);
}
for (const kind of ["image", "snapshot"]) {
  const a = t[`${kind} commands.run`], e = t[`${kind} fcvm exec`];
  console.log(`${kind === "image" ? "image sandbox" : "clone"}: commands.run / fcvm exec: p50 ${(pct(a, 50) / pct(e, 50)).toFixed(2)}x, p99 ${(pct(a, 99) / pct(e, 99)).toFixed(2)}x`);
}
