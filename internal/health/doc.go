// Package health runs a VM's container health check the way podman does:
// a probe (an HTTP GET from the host, or a command in the container) runs
// every Interval, each run bounded by Timeout, and the status moves
// between [Starting], [Healthy] and [Unhealthy]. The supervisor owns one
// [Checker] per VM, stores every status change in the VM's record (which
// `fcvm ls` shows in its HEALTH column) and lets `fcvm run -d
// --wait-healthy` wait with [Checker.WaitDecided].
//
// # Rules (podman's)
//
//   - The status is Starting until the first check passes.
//   - During StartPeriod, failed checks do not count: the container may
//     still be warming up. A passing check ends the start period early.
//   - After it, Retries failed checks in a row make the container
//     Unhealthy; any passing check makes it Healthy again and resets the
//     count.
//
// One difference from podman: the first check runs as soon as the
// container has started, not one Interval later, because a VM's start is
// already slow and --wait-healthy should not add an Interval to it.
//
// # Probes
//
// [HTTP] passes on a 2xx or 3xx answer (redirects are not followed), as
// `curl -f` does in the usual podman health command. [Command] passes when
// the command exits 0; [ParseCommand] turns podman's --health-cmd syntax
// (a shell string, or a JSON array with "CMD" or "CMD-SHELL") into an
// argument list. [GuestURL] rewrites a URL whose host is "guest" to an
// address where the host reaches the container's port.
//
// # Concurrency
//
// [Checker.Run] blocks until its context ends; the caller owns its
// goroutine. OnChange is called from that goroutine. WaitDecided may be
// called from any goroutine, any number of times.
package health
