// Drives the streaming parts of `fcvm serve` with the official E2B SDK,
// unchanged, on one sandbox: commands that outlive their client's stream
// and are found again by PID, stdin, kill, a terminal (PTY), recursive
// listings and directory watches. test/e2e/sandbox_test.go runs it like
// sdk_test.mjs; the last line of stdout is a JSON summary.
import assert from "node:assert/strict";
import { Sandbox, CommandExitError, NotFoundError } from "e2b";

const template = process.env.TEMPLATE;
assert.ok(template, "TEMPLATE must be set");
const log = (...a) => console.error("sdk:", ...a);
const slow = { requestTimeoutMs: 300_000 };
const summary = {};
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// until polls f until it returns a truthy value, for at most a minute.
async function until(what, f) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = await f();
    if (v) return v;
    assert.ok(Date.now() < deadline, `${what}: not within a minute`);
    await sleep(200);
  }
}

const sbx = await Sandbox.create(template, { ...slow, timeoutMs: 600_000 });
summary.sandboxID = sbx.sandboxId;
log("created", sbx.sandboxId);

// A background command whose client disconnects goes on; what it prints
// meanwhile is kept and delivered to the next Connect, with the end.
const seen = [];
const bg = await sbx.commands.run("echo one; read go; echo two; echo err >&2; exit 7", {
  background: true,
  stdin: true,
  timeoutMs: 0,
  onStdout: (d) => seen.push(d),
});
await until("first line", () => seen.join("") === "one\n");
await bg.disconnect();
await sbx.commands.sendStdin(bg.pid, "go\n");
// It runs on without a client: listed until it ends.
await until("command ends", async () => !(await sbx.commands.list()).some((p) => p.pid === bg.pid));
assert.equal(seen.join(""), "one\n", "a disconnected handle got output");
const again = await sbx.commands.connect(bg.pid);
const res = await again.wait().catch((e) => e);
assert.ok(res instanceof CommandExitError, `reconnected command: ${res}`);
assert.equal(res.exitCode, 7);
assert.equal(res.stdout, "two\n");
assert.equal(res.stderr, "err\n");
log("disconnect + connect by PID ok");

// Connect to a running command: its output comes to the new handle;
// kill it by PID through that handle.
const long = await sbx.commands.run("read x; echo got $x; sleep 600", { background: true, stdin: true, timeoutMs: 0 });
await long.disconnect();
const h = await sbx.commands.connect(long.pid, { timeoutMs: 0 });
assert.equal(h.pid, long.pid);
await h.sendStdin("it\n");
await until("output after connect", () => h.stdout === "got it\n");
assert.equal(await h.kill(), true);
const killed = await h.wait().catch((e) => e);
assert.ok(killed instanceof CommandExitError, `killed: ${killed}`);
assert.equal(killed.stdout, "got it\n");
assert.equal(await sbx.commands.kill(long.pid), false, "a killed command is gone");
await assert.rejects(sbx.commands.connect(999999), NotFoundError);
log("connect + kill ok");

// A terminal: input, resize, output, kill.
let term = "";
const dec = new TextDecoder();
const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (term += dec.decode(d)), timeoutMs: 0 });
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("stty size; echo pty-$((40+2))\n"));
await until("pty output", () => term.includes("pty-42"));
assert.match(term, /24 80/);
await sbx.pty.resize(pty.pid, { cols: 100, rows: 30 });
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("stty size\n"));
await until("resized", () => term.includes("30 100"));
assert.equal(await sbx.pty.kill(pty.pid), true);
await pty.wait().catch(() => {});
log("pty ok");

// Recursive listings, getInfo, rename, exists.
await sbx.commands.run("mkdir -p /tree/a/b/c && echo deep > /tree/a/b/c/f && echo top > /tree/t && ln -s /etc /tree/link");
const byDepth = async (depth) => (await sbx.files.list("/tree", { depth })).map((e) => `${e.path}:${e.type}`).sort();
assert.deepEqual(await byDepth(1), ["/tree/a:dir", "/tree/link:symlink", "/tree/t:file"].sort());
assert.deepEqual(await byDepth(2), ["/tree/a:dir", "/tree/a/b:dir", "/tree/link:symlink", "/tree/t:file"].sort());
assert.deepEqual(await byDepth(10), ["/tree/a:dir", "/tree/a/b:dir", "/tree/a/b/c:dir", "/tree/a/b/c/f:file", "/tree/link:symlink", "/tree/t:file"].sort());
const info = await sbx.files.getInfo("/tree/a/b/c/f");
assert.equal(info.type, "file");
assert.equal(info.size, 5);
await sbx.files.rename("/tree/t", "/tree/moved/t2");
assert.equal(await sbx.files.exists("/tree/t"), false);
assert.equal(await sbx.files.read("/tree/moved/t2"), "top\n");
await assert.rejects(sbx.files.list("/tree/missing"), NotFoundError);
log("list depth, getInfo, rename ok");

// Presigned URLs, as the SDK signs them, need no token. With
// E2B_SANDBOX_URL the URL does not name the sandbox, so the header does.
const up = await sbx.uploadUrl("/signed/up.txt", { useSignatureExpiration: 60 });
const sandboxHeader = { "E2b-Sandbox-Id": sbx.sandboxId };
let res2 = await fetch(up, { method: "POST", headers: { ...sandboxHeader, "Content-Type": "application/octet-stream" }, body: "signed upload" });
assert.equal(res2.status, 200, await res2.text());
res2 = await fetch(await sbx.downloadUrl("/signed/up.txt"), { headers: sandboxHeader });
assert.equal(await res2.text(), "signed upload");
res2 = await fetch((await sbx.downloadUrl("/signed/up.txt")).replace("up.txt", "other.txt"), { headers: sandboxHeader });
assert.equal(res2.status, 401, "a signature is for its path only");
log("uploadUrl + downloadUrl ok");

// Directory watches: one directory, and a tree (new subdirectories too).
const flat = [];
const wflat = await sbx.files.watchDir("/tree", (e) => flat.push(`${e.type} ${e.name}`), { timeoutMs: 0 });
const deep = [];
const wdeep = await sbx.files.watchDir("/tree", (e) => deep.push(`${e.type} ${e.name}`), { recursive: true, timeoutMs: 0 });
await sbx.files.write("/tree/new.txt", "x");
await sbx.commands.run("mkdir /tree/a/fresh && echo y > /tree/a/fresh/inner && mv /tree/new.txt /tree/renamed.txt && rm /tree/renamed.txt");
await until("flat events", () => flat.includes("remove renamed.txt"));
await until("recursive events", () => deep.includes("create a/fresh/inner") && deep.includes("remove renamed.txt"));
for (const want of ["create new.txt", "write new.txt", "rename new.txt", "create renamed.txt"]) {
  assert.ok(flat.includes(want), `flat watch: no "${want}" in ${JSON.stringify(flat)}`);
}
assert.ok(!flat.some((e) => e.includes("a/fresh")), `flat watch saw a subdirectory: ${JSON.stringify(flat)}`);
assert.ok(deep.includes("create a/fresh"), `recursive watch: ${JSON.stringify(deep)}`);
await wflat.stop();
await wdeep.stop();
await assert.rejects(sbx.files.watchDir("/tree/missing", () => {}), NotFoundError);
// A watch whose directory is removed ends.
let exited = false;
await sbx.files.makeDir("/doomed");
await sbx.files.watchDir("/doomed", () => {}, { timeoutMs: 0, onExit: () => (exited = true) });
await sbx.files.remove("/doomed");
await until("watch of a removed directory ends", () => exited);
summary.watchEvents = deep.length;
log("watchDir ok:", JSON.stringify(deep));

// fcvm's extensions in E2B's shapes: a snapshot of the sandbox as a
// template, and a fork into clones; both see the sandbox's disk as it was.
await sbx.files.write("/marker", "before the snapshot");
const snapName = `streams-${process.pid}`;
let t0 = performance.now();
const snap = await sbx.createSnapshot({ name: snapName, ...slow });
summary.snapshotMs = Math.round(performance.now() - t0);
assert.equal(snap.snapshotId, snapName);
const snaps = await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems();
assert.ok(snaps.some((x) => x.snapshotId === snapName), `listSnapshots: ${JSON.stringify(snaps)}`);
const fromSnap = await Sandbox.create(snapName, slow);
summary.fromSnapshotID = fromSnap.sandboxId;
assert.equal(await fromSnap.files.read("/marker"), "before the snapshot");
// In use by a sandbox: refused; once it is gone, deleted.
await assert.rejects(Sandbox.deleteSnapshot(snapName), /in use/);
await fromSnap.kill();
assert.equal(await Sandbox.deleteSnapshot(snapName), true);
assert.equal(await Sandbox.deleteSnapshot(snapName), false);
log("createSnapshot, listSnapshots, create from it, deleteSnapshot ok");

await sbx.files.write("/marker", "before the fork");
t0 = performance.now();
const forks = await sbx.fork({ count: 2, ...slow });
summary.forkOf2Ms = Math.round(performance.now() - t0);
assert.equal(forks.length, 2);
summary.forkIDs = forks.map((f) => f.sandboxId);
for (const f of forks) {
  assert.ok(f instanceof Sandbox, `fork result: ${f}`);
  assert.notEqual(f.sandboxId, sbx.sandboxId);
  assert.equal((await f.commands.run("cat /marker")).stdout, "before the fork");
}
await forks[0].files.write("/marker", "changed in clone 0");
assert.equal(await forks[1].files.read("/marker"), "before the fork", "clones share a disk");
assert.equal(await sbx.files.read("/marker"), "before the fork", "the forked sandbox goes on unchanged");
const forkSnaps = (await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems()).map((x) => x.snapshotId);
assert.equal(forkSnaps.length, 1, `fork snapshots: ${forkSnaps}`);
for (const f of forks) await f.kill();
assert.deepEqual(await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems(), [], "the fork snapshot went with its clones");
log("fork ok in", summary.forkOf2Ms, "ms");

await sbx.kill();
console.log(JSON.stringify(summary));
