// Package copytar moves file trees as tar streams for fcvm cp: Write
// archives a file or directory without following symlinks, and Extract
// unpacks a stream beneath a directory. The guest agent uses both inside
// the container's root; the host extracts what the guest sent.
//
// # Hostile streams
//
// A tar stream from a guest is hostile, and Extract is written for one:
// every entry is created relative to a directory descriptor opened with
// openat2 and RESOLVE_BENEATH (or RESOLVE_IN_ROOT where the caller asks),
// so no name, ".." or symlink (including one the stream itself made) leads
// outside the destination; the last component is never followed (a
// symlink in its place is replaced, not written through). Device nodes,
// FIFOs and sockets are skipped. The entry count and the content size the
// headers claim are counted before anything is written, against Limits.
// Set-user-ID and set-group-ID bits survive only when the caller keeps
// them (the guest, for files the host sent).
//
// # Errors
//
// Errors name the entry and say why; an extraction that stops leaves what
// it wrote so far, beneath the destination.
package copytar
