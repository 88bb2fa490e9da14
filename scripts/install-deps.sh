#!/usr/bin/env bash
# Installs the Debian packages fcvm and its tests need on the host.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q || true
apt-get install -y -q --no-install-recommends \
  qemu-system-x86 debootstrap debian-archive-keyring e2fsprogs cpio \
  podman runc crun conmon uidmap fuse-overlayfs catatonit skopeo \
  docker-registry busybox-static \
  passt slirp4netns nftables iproute2 containernetworking-plugins \
  btrfs-progs xfsprogs fuse3 \
  gcc libc6-dev ca-certificates curl procps util-linux tmux xz-utils kmod hyperfine

# The E2B SDK the sandbox API e2e test drives (npm part).
bash "$(dirname "$0")/install-e2b.sh"

# containerd from Debian's package, unpacked (not installed: that would
# start a system service) for the containerd shim e2e test, which runs it
# with its own config, root, state and socket.
containerd_dir=${FCVM_CONTAINERD_DIR:-/var/cache/fcvm/containerd}
if [ ! -x "$containerd_dir/usr/bin/containerd" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q containerd)
  mkdir -p "$containerd_dir"
  dpkg -x "$tmp"/containerd_*.deb "$containerd_dir"
  rm -rf "$tmp"
fi

# crictl, which the CRI e2e test drives containerd with (kubelet's side of
# CRI), built from the Go module proxy once (about two minutes).
tools_dir=/var/cache/fcvm/tools
if [ ! -x "$tools_dir/crictl" ]; then
  mkdir -p "$tools_dir"
  (cd / && GOBIN="$tools_dir" PATH=/usr/local/go/bin:$PATH \
    go install sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0)
fi
