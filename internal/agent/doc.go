// Package agent is fc-agent, PID 1 of every fcvm guest.
//
// It starts in the initramfs: mounts /proc, /sys and /dev, loads the kernel
// modules the guest needs, finds its disks by serial ("base", "upper",
// "image"), builds the root as an overlay of the read-only base rootfs and
// the VM's writable upper disk, and switches into it. Then it opens the
// host-guest channel and serves requests until the host asks it to power
// off.
//
// # The container
//
// The host sends a Plan, the image config already resolved into it. The
// agent writes an OCI bundle with the spec podman would have generated
// (bundle_linux.go: podman's capabilities, seccomp profile, masked paths,
// mounts and rlimits; the user from the image's passwd and group) and runs
// it with crun, the image disk overlaid with the upper disk as the root.
// Every exec goes through crun exec with the container's own process spec;
// podman never runs. Start is idempotent: a second
// start (after a reconnect, after a snapshot restore) reports the existing
// container rather than running it again.
//
// The container's stdout and stderr go into an output log of numbered
// chunks that the host acknowledges once stored. Unacknowledged output is
// kept (up to a bound, beyond which the container's writes wait), so when
// the channel breaks and comes back the host resumes from the last chunk it
// stored: output is neither lost nor repeated.
//
// # Pods
//
// A pod VM (the containerd shim's CRI sandbox) runs members besides its
// container: each started by name on an image the host wrote into one of
// the VM's spare slot disks, in the container's network, IPC and UTS
// namespaces (pod_linux.go). Attach, exec, signal, status and remove name
// the member; the VM's container is the one with no name.
//
// # Looking into the container
//
// cp, top and stats need no tool in the image: the agent resolves the
// container's paths beneath its root as its first process sees it
// (/proc/PID/root with openat2 RESOLVE_IN_ROOT, so neither .. nor a
// symlink in the container reaches the guest's own files) and reads /proc
// for the processes in the container's PID namespace (copy_linux.go,
// procfs_linux.go).
//
// # Snapshots
//
// Every handshake carries the host's generation counter. A generation other
// than the one last seen means the guest was restored from a snapshot: the
// agent steps the clock, reseeds the entropy pool, regenerates machine-id,
// and re-announces its network before serving.
package agent
