package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fcvm/fcvm/internal/artifacts"
)

type setupOptions struct {
	kernel string
	force  bool
	mirror string
	suite  string
}

func newSetupCmd(env *Env) *cobra.Command {
	var o setupOptions
	cmd := &cobra.Command{
		Use:   "setup [--kernel PATH] [--force] [--mirror URL]",
		Short: "Build or refresh the guest kernel, initramfs and base rootfs",
		Long: `Build the guest artifacts every VM boots from, from Debian packages:
a kernel (Debian's linux-image, unpacked, never installed on the host), an
initramfs with fc-agent and the kernel modules the guest needs, and a
read-only ext4 base rootfs with podman (debootstrap; needs root).

Each part is named by a digest of what went into it; running setup again
with the same inputs does nothing. Only the initramfs is rebuilt when only
fc-agent changed. --force rebuilds everything and picks up a newer Debian
kernel. fc-agent is taken from $FCVM_AGENT, else beside the fcvm binary.

The only network used is the Debian mirror: --mirror, else the first Debian
mirror in the host's apt sources, else http://deb.debian.org/debian.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSetup(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kernel, "kernel", "", "use this kernel (ELF vmlinux or bzImage, with virtio, ext4, overlay, fuse and vsock built in) instead of Debian's")
	f.BoolVar(&o.force, "force", false, "rebuild everything")
	f.StringVar(&o.mirror, "mirror", "", "Debian mirror URL (default: the host's, else http://deb.debian.org/debian)")
	f.StringVar(&o.suite, "suite", artifacts.DefaultSuite, "Debian suite")
	_ = f.MarkHidden("suite")
	cmd.AddCommand(newSetupFirecrackerCmd(env))
	return cmd
}

func runSetup(ctx context.Context, env *Env, o setupOptions) error {
	start := time.Now()
	set, res, err := artifacts.Build(ctx, env.Dirs.Data, artifacts.BuildOptions{
		KernelPath: o.kernel,
		Force:      o.force,
		Mirror:     o.mirror,
		Suite:      o.suite,
		Progress:   terminalOrNil(env.Stderr),
		Log:        env.Log,
	})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	short := set.RootfsDigest
	if len(short) > 8 {
		short = short[:8]
	}
	if res.UpToDate {
		fmt.Fprintf(env.Stdout, "guest artifacts are up to date (kernel %s, rootfs %s)\n", set.KernelVersion, short)
		return nil
	}
	what := "reused parts built before"
	if len(res.Built) > 0 {
		what = "built " + strings.Join(res.Built, ", ")
	}
	fmt.Fprintf(env.Stdout, "guest artifacts ready (kernel %s, rootfs %s): %s in %s\n",
		set.KernelVersion, short, what, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// terminalOrNil returns w when it is a terminal, for progress lines that
// a pipe should not get.
func terminalOrNil(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return w
	}
	return nil
}
