// Package image pulls OCI container images on the host and caches each as a
// read-only ext4 disk holding its flattened root filesystem, which every VM
// of that image shares. The guest mounts the disk read-only and runs
// `podman run --rootfs /mnt/image:O`; the host passes the image config
// (Config: entrypoint, cmd, env, workdir, user) as podman flags, so the disk
// holds files only.
//
//	store, err := image.Open(dirs.Images(), log)
//	img, err := store.Ensure(ctx, "busybox", image.DefaultPullOptions()) // cached, else pulled
//	// img.Disk is the ext4 path, img.Config the container config.
//
// # References
//
// As podman and skopeo spell them: a bare "busybox" is
// docker.io/library/busybox:latest; "docker://REF" is REF;
// "oci:DIR[:REF]", "oci-archive:PATH[:REF]" and "docker-archive:PATH[:REF]"
// read local files (REF picks one image when the file holds several);
// "containers-storage:REF" exports the host's podman image with
// `podman image save`. Registry credentials come from the first of
// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
// ~/.config/containers/auth.json, ~/.docker/config.json with an entry for
// the registry. PullOptions.TLSVerify false is --tls-verify=false: plain
// HTTP and unverified certificates. Registries on 127.0.0.0/8 and localhost
// are spoken to over plain HTTP in any case.
//
// # Cache
//
// An image's ID is its config digest, so one image read from a registry and
// from an archive is cached once. The store directory holds:
//
//	<hex>/disk.ext4   the root filesystem, mode 0444
//	<hex>/image.json  ID, manifest digest, Config, size, creation time
//	refs.json         canonical name -> ID, replaced atomically
//	lock              serialises changes to refs.json and removals
//	locks/<hex>       held while one process builds that image
//	tmp/              builds in progress, each renamed into place when done
//
// A pull downloads and flattens the layers (whiteouts applied) into a temp
// dir, keeping owners, modes, times, xattrs, links and device nodes, adds
// the mount points podman expects (etc, dev, proc, sys, tmp, run), and runs
// `mkfs.ext4 -d` (no journal, no reserved blocks, root owned by 0:0) sized
// from the content. A pull that fails or is interrupted leaves nothing but
// its temp dir, which the pull removes and Prune reclaims after a crash.
// Without root the tree is extracted as the invoking user, and the owners,
// device nodes and privileged xattrs it could not set are written into the
// finished disk with debugfs (no mount, no privilege needed).
//
// # Concurrency
//
// Every Store method is safe to call from many goroutines and processes at
// once. Concurrent pulls of one image build it once: the others wait on its
// lock file and find it cached. Lookup, List and Ensure's lookup take no
// lock. Remove and Prune do not know which VMs use an image unless
// Store.InUse tells them; a VM that Looks an image up while it is being
// removed may find its disk gone, so callers that remove images should do
// so when no `fcvm run` of that image is starting.
//
// # Errors
//
// User-facing failures are *Error values whose message is one line naming
// what went wrong and what to do, and whose Kind is one of ErrNotFound
// (unknown image, tag or file), ErrBadReference, ErrUnreachable (names
// host:port and the dial error; suggests --tls-verify=false for a plain
// HTTP registry), ErrUnauthorized, ErrInUse and ErrTooLarge, for
// errors.Is.
//
// # Hostile images
//
// An image is as untrusted as the code it runs. Extraction never writes
// outside its directory (no path, symlink or hardlink leads out), and it
// counts what each entry claims before writing it: the sum of entry sizes
// (a sparse file's holes included, since they are written as zeros),
// names and extended headers stops at Store.Limits.MaxBytes (64 GiB by
// default), and entries, read or created as parents, at MaxEntries (4M).
// Past either, the pull fails with ErrTooLarge having written little, so
// a layer of a few kilobytes cannot fill the host's disk.
//
// # Requirements
//
// mkfs.ext4 (with -d) and debugfs from e2fsprogs; podman for
// containers-storage.
package image
