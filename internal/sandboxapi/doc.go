// Package sandboxapi is the HTTP server behind `fcvm serve`: a sandbox API
// wire-compatible with E2B's, so that the official E2B SDKs drive fcvm VMs
// unchanged.
//
// One listener carries two planes. The control plane (the SDK's
// E2B_API_URL) creates, lists, inspects, times out and kills sandboxes; it
// is authenticated by the server's API key in X-API-KEY. The data plane
// (the SDK's E2B_SANDBOX_URL, E2B's "envd") runs commands and moves files
// in one sandbox; a request belongs to it when it carries the
// E2b-Sandbox-Id header or a Host of the form PORT-ID.DOMAIN, and it is
// authenticated by the sandbox's own access token in X-Access-Token,
// which the create response handed out.
//
// A sandbox is an ordinary fcvm VM, named after the sandbox ID and
// labelled [Label], started as a detached supervisor by running the fcvm
// binary (`run -d`, or `snapshot run -d` when the template names a
// snapshot), so the server can restart without taking sandboxes down.
// Everything else goes through package engine, the one path to a VM. What
// only the API knows (timeout, metadata, env vars, access token, pause
// state) is kept in one file per sandbox under the data directory, read
// back at start. The container's main process is a /bin/sh loop that
// keeps the VM up, so a template's image needs /bin/sh; the SDK runs
// commands as /bin/bash -l -c, so it needs bash too.
//
// Pausing snapshots the VM to disk and removes it; connect resumes it as
// a clone of that snapshot under the same ID (pause.go). A clone cannot
// be snapshotted, so only sandboxes booted from an image can be paused,
// once. What serve implements is described by the OpenAPI document it
// serves at /openapi.json.
//
// A command started through the API belongs to the server, not to the
// stream that started it (proclog.go): the server reads its output
// whether a client listens or not, keeps what no stream has been sent
// (a bounded backlog), and process.Process/Connect re-attaches to it by
// PID or tag. Directory watches are inotify in the guest agent
// (engine.Watch, watch.go).
//
// Beyond E2B's sandbox lifecycle, in E2B's shapes where it has them
// (forks.go): fork clones a running sandbox N times (one snapshot, N
// clones, the snapshot removed with the last clone), snapshots of a
// sandbox are templates (create, list, delete), and a sandbox may
// publish guest ports on the host's loopback.
//
// # Protocols
//
// The control plane is JSON over HTTP; errors are {"code":N,"message":M}
// with N the HTTP status, which the SDK reads. The data plane speaks the
// Connect protocol with JSON (connect.go): unary calls as application/json,
// server streams as application/connect+json envelopes
// ([flags u8][length u32 BE][JSON]) closed by an end-stream envelope
// (flag 0x02) that carries the error, if any. Files go over plain HTTP
// (GET and POST /files).
//
// # Untrusted callers
//
// Every body is capped (MaxJSONBody for JSON and Connect messages,
// Config.MaxUpload for files), sandboxes are capped (Config.MaxSandboxes,
// then 429) and so are the commands of each (maxProcesses), the output a
// command keeps for later (maxBacklog), the streams and watches of each
// sandbox (maxStreams), the directories of a watch and the events a
// polled watcher holds; a command lives no longer than its
// Connect-Timeout-Ms or its sandbox, published ports go on loopback
// only, and file paths are checked and passed to the guest as arguments,
// never as shell text. File operations run in the
// sandbox's container through engine.Exec; nothing on the host is read or
// written on a caller's behalf except the server's own records.
//
// # Concurrency
//
// Handlers run concurrently. Server.mu guards the sandbox table, the
// timers and the process table; it is never held across a call to a VM.
package sandboxapi
