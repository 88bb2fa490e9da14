// Drives `fcvm serve` with the official E2B SDK, unchanged: the Go test
// test/e2e/sandbox_test.go starts serve and runs this with E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY pointing at it, and TEMPLATE naming an
// image with /bin/sh and /bin/bash. Every check throws on failure; the last
// line of stdout is a JSON summary the Go test checks again.
import assert from "node:assert/strict";
import { Sandbox, CommandExitError, AuthenticationError, NotFoundError, FileNotFoundError, TimeoutError } from "e2b";

const template = process.env.TEMPLATE;
const snapshotTemplate = process.env.SNAPSHOT_TEMPLATE;
assert.ok(template && snapshotTemplate, "TEMPLATE and SNAPSHOT_TEMPLATE must be set");
for (const v of ["E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"]) {
  assert.ok(process.env[v]?.startsWith("http://127.0.0.1:") || v === "E2B_API_KEY", `${v} must point at the local server`);
}
const log = (...a) => console.error("sdk:", ...a);
const slow = { requestTimeoutMs: 300_000 };
const summary = {};

// A wrong key is refused, and nothing is made.
await assert.rejects(Sandbox.create(template, { ...slow, apiKey: "wrong-key" }), AuthenticationError);
await assert.rejects(Sandbox.list({ apiKey: "wrong-key" }).nextItems(), AuthenticationError);
log("wrong key refused");

let t0 = performance.now();
const sbx = await Sandbox.create(template, {
  ...slow,
  timeoutMs: 600_000,
  metadata: { suite: "e2e", run: String(process.pid) },
  envs: { SANDBOX_VAR: "from-create" },
});
summary.sandboxID = sbx.sandboxId;
const first = await sbx.commands.run("echo first");
summary.createToFirstCommandMs = Math.round(performance.now() - t0);
assert.equal(first.stdout, "first\n");
log("created", sbx.sandboxId, "in", summary.createToFirstCommandMs, "ms");

// Commands: output, stderr, exit codes, env (sandbox's and command's), cwd.
const r = await sbx.commands.run("echo out; echo err >&2; echo $SANDBOX_VAR $CMD_VAR; pwd", {
  envs: { CMD_VAR: "from-command" },
  cwd: "/tmp",
});
assert.equal(r.exitCode, 0);
assert.equal(r.stdout, "out\nfrom-create from-command\n/tmp\n");
assert.equal(r.stderr, "err\n");
const failed = await sbx.commands.run("echo bad; exit 3").catch((e) => e);
assert.ok(failed instanceof CommandExitError, `exit 3 should throw CommandExitError, got ${failed}`);
assert.equal(failed.exitCode, 3);
assert.equal(failed.stdout, "bad\n");
log("commands ok");

// Background command, killed by PID.
const bg = await sbx.commands.run("sleep 600", { background: true });
assert.ok(bg.pid > 0);
assert.equal(await sbx.commands.kill(bg.pid), true);
const bgErr = await bg.wait().catch((e) => e);
assert.ok(bgErr instanceof CommandExitError, `killed command should end with an exit error, got ${bgErr}`);
assert.equal(await sbx.commands.kill(999999), false);
log("background + kill ok");

// Stdin: a command reading its input, fed and closed through the API;
// listed while it runs.
const cat = await sbx.commands.run("cat", { background: true, stdin: true });
await sbx.commands.sendStdin(cat.pid, "fed through stdin\n");
assert.ok((await sbx.commands.list()).some((p) => p.pid === cat.pid), "commands.list shows the running command");
await sbx.commands.closeStdin(cat.pid);
assert.equal((await cat.wait()).stdout, "fed through stdin\n");
// A command outliving its timeoutMs ends with a TimeoutError, promptly.
t0 = performance.now();
await assert.rejects(sbx.commands.run("sleep 600", { timeoutMs: 2_000 }), TimeoutError);
assert.ok(performance.now() - t0 < 20_000, "timeoutMs was not honoured");
log("stdin + timeoutMs ok");

// Round trips.
const rtts = [];
for (let i = 0; i < 10; i++) {
  t0 = performance.now();
  await sbx.commands.run("true");
  rtts.push(performance.now() - t0);
}
rtts.sort((a, b) => a - b);
summary.runP50Ms = Math.round(rtts[Math.floor(rtts.length / 2)]);
summary.runMaxMs = Math.round(rtts[rtts.length - 1]);

// Files: write (parents made), read, list, makeDir, exists, remove, missing.
const info = await sbx.files.write("/work/sub/hello.txt", "hello from the sdk\n");
assert.equal(info.path, "/work/sub/hello.txt");
assert.equal(await sbx.files.read("/work/sub/hello.txt"), "hello from the sdk\n");
assert.equal((await sbx.commands.run("cat /work/sub/hello.txt")).stdout, "hello from the sdk\n");
const bytes = new Uint8Array(256).map((_, i) => i);
await sbx.files.write("/work/bin.dat", bytes.buffer);
assert.deepEqual(await sbx.files.read("/work/bin.dat", { format: "bytes" }), bytes);
assert.equal(await sbx.files.makeDir("/work/newdir"), true);
assert.equal(await sbx.files.makeDir("/work/newdir"), false);
const names = (await sbx.files.list("/work")).map((e) => `${e.name}:${e.type}`).sort();
assert.deepEqual(names, ["bin.dat:file", "newdir:dir", "sub:dir"]);
assert.equal(await sbx.files.exists("/work/sub/hello.txt"), true);
await sbx.files.remove("/work/sub");
assert.equal(await sbx.files.exists("/work/sub/hello.txt"), false);
await assert.rejects(sbx.files.read("/work/missing.txt"), FileNotFoundError);
log("files ok");

// Listing, info, metadata filter.
const listed = await Sandbox.list({ query: { metadata: { suite: "e2e" } } }).nextItems();
assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId), "list shows the sandbox");
const none = await Sandbox.list({ query: { metadata: { suite: "other" } } }).nextItems();
assert.ok(!none.some((s) => s.sandboxId === sbx.sandboxId), "metadata filter excludes it");
const got = await sbx.getInfo();
assert.equal(got.metadata.suite, "e2e");
assert.equal(got.templateId, template);
assert.equal(await sbx.isRunning(), true);

// Pause (to disk, no VM left) and connect (resumed, same ID, same disk).
await sbx.files.write("/paused.txt", "before pause");
t0 = performance.now();
assert.equal(await sbx.pause(slow), true);
summary.pauseMs = Math.round(performance.now() - t0);
assert.equal(await Sandbox.pause(sbx.sandboxId, slow), false, "a second pause says it was paused already");
const paused = await Sandbox.list({ query: { state: ["paused"] } }).nextItems();
assert.ok(paused.some((s) => s.sandboxId === sbx.sandboxId && s.state === "paused"), "listed as paused");
t0 = performance.now();
const resumed = await Sandbox.connect(sbx.sandboxId, slow);
assert.equal(resumed.sandboxId, sbx.sandboxId);
assert.equal(await resumed.files.read("/paused.txt"), "before pause");
summary.resumeToFirstCommandMs = Math.round(performance.now() - t0);
assert.equal((await resumed.commands.run("echo $SANDBOX_VAR")).stdout, "from-create\n");
assert.equal((await resumed.getInfo()).state, "running");
log("pause + connect ok: pause", summary.pauseMs, "ms, resume to first command", summary.resumeToFirstCommandMs, "ms");

// Kill.
assert.equal(await sbx.kill(), true);
assert.equal(await Sandbox.kill(sbx.sandboxId), false);
await assert.rejects(Sandbox.getInfo(sbx.sandboxId), NotFoundError);
log("kill ok");

// A snapshot template: the sandbox is a clone, with the snapshot's disk.
t0 = performance.now();
const clone = await Sandbox.create(snapshotTemplate, { ...slow, envs: { SANDBOX_VAR: "clone" } });
summary.cloneID = clone.sandboxId;
const marker = await clone.commands.run("cat /snapshot-marker; echo $SANDBOX_VAR");
summary.cloneToFirstCommandMs = Math.round(performance.now() - t0);
assert.equal(marker.stdout, "from-the-snapshot\nclone\n");
await clone.files.write("/clone.txt", "clone file");
assert.equal(await clone.files.read("/clone.txt"), "clone file");
assert.equal((await clone.getInfo()).templateId, snapshotTemplate);
log("snapshot template ok in", summary.cloneToFirstCommandMs, "ms");

// A clone cannot be snapshotted (its memory is its snapshot's), so it
// cannot be paused: a clear refusal, and it goes on running.
const refused = await clone.pause(slow).catch((e) => e);
assert.ok(refused instanceof Error && /clone/.test(refused.message), `pausing a clone: ${refused}`);
assert.equal((await clone.commands.run("echo still")).stdout, "still\n");
await clone.kill();

// setTimeout and expiry: the server kills the sandbox at its end.
const short = await Sandbox.create(template, { ...slow, timeoutMs: 600_000 });
summary.expiredID = short.sandboxId;
await short.setTimeout(2_000);
const deadline = Date.now() + 60_000;
for (;;) {
  const alive = await Sandbox.getInfo(short.sandboxId).then(() => true, (e) => {
    if (e instanceof NotFoundError) return false;
    throw e;
  });
  if (!alive) break;
  assert.ok(Date.now() < deadline, "sandbox outlived its timeout by a minute");
  await new Promise((res) => setTimeout(res, 500));
}
log("timeout ok");

console.log(JSON.stringify(summary));
