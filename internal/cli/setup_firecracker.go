package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/firecracker"
)

// FirecrackerRelease is the release `fcvm setup firecracker --download`
// fetches.
const FirecrackerRelease = "v1.16.1"

type setupFirecrackerOpts struct {
	from, jailer string
	download     bool
	// releaseURL is the base URL of the release assets (a flag for hosts
	// behind a mirror).
	releaseURL string
}

func newSetupFirecrackerCmd(env *Env) *cobra.Command {
	var o setupFirecrackerOpts
	cmd := &cobra.Command{
		Use:   "firecracker (--from PATH [--jailer PATH] | --download)",
		Short: "Install the firecracker (and jailer) binary fcvm uses",
		Long: `Install firecracker into <data dir>/bin, where fcvm looks before PATH.

Download a release tarball (` + FirecrackerRelease + ` or any 1.10+) from
https://github.com/firecracker-microvm/firecracker/releases, unpack it, and:

  fcvm setup firecracker --from release-v1.16.1-x86_64/firecracker-v1.16.1-x86_64 \
      --jailer release-v1.16.1-x86_64/jailer-v1.16.1-x86_64

On a host with internet, --download fetches ` + FirecrackerRelease + ` for this
machine's architecture and checks it against the release's SHA-256 file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSetupFirecracker(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "path of a firecracker binary to install")
	f.StringVar(&o.jailer, "jailer", "", "path of a jailer binary to install alongside")
	f.BoolVar(&o.download, "download", false, "download firecracker "+FirecrackerRelease+" from GitHub")
	f.StringVar(&o.releaseURL, "release-url", "https://github.com/firecracker-microvm/firecracker/releases/download/"+FirecrackerRelease,
		"base URL of the release assets, for --download")
	return cmd
}

func runSetupFirecracker(ctx context.Context, env *Env, o setupFirecrackerOpts) error {
	bin := filepath.Join(env.Dirs.Data, "bin")
	switch {
	case o.download && (o.from != "" || o.jailer != ""):
		return errors.New("setup firecracker: --download installs both binaries; do not combine it with --from or --jailer")
	case o.download:
		dir, err := os.MkdirTemp("", "fcvm-firecracker-")
		if err != nil {
			return fmt.Errorf("setup firecracker: %w", err)
		}
		defer os.RemoveAll(dir)
		if o.from, o.jailer, err = downloadFirecracker(ctx, o.releaseURL, dir); err != nil {
			return err
		}
	case o.from == "":
		return errors.New("setup firecracker: say which binary to install with --from PATH (or use --download on a host with internet)")
	}

	v, err := firecracker.BinaryVersion(o.from)
	if err != nil {
		return fmt.Errorf("setup firecracker: %w: --from must name a firecracker binary", err)
	}
	if min := firecracker.MinVersion; v[0] < min[0] || (v[0] == min[0] && v[1] < min[1]) {
		return fmt.Errorf("setup firecracker: %s is %d.%d.%d; fcvm needs %d.%d or newer", o.from, v[0], v[1], v[2], min[0], min[1])
	}
	if o.jailer != "" {
		jv, err := firecracker.JailerVersion(o.jailer)
		if err != nil {
			return fmt.Errorf("setup firecracker: %w: --jailer must name a jailer binary", err)
		}
		if jv != v {
			return fmt.Errorf("setup firecracker: jailer %d.%d.%d and firecracker %d.%d.%d are from different releases", jv[0], jv[1], jv[2], v[0], v[1], v[2])
		}
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return fmt.Errorf("setup firecracker: %w", err)
	}
	if err := installExecutable(o.from, filepath.Join(bin, "firecracker")); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "installed firecracker %d.%d.%d to %s\n", v[0], v[1], v[2], filepath.Join(bin, "firecracker"))
	if o.jailer != "" {
		if err := installExecutable(o.jailer, filepath.Join(bin, "jailer")); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "installed jailer to %s\n", filepath.Join(bin, "jailer"))
	}
	return nil
}

// installExecutable copies src to dst atomically: temp file, fsync, rename.
func installExecutable(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+"-*")
	if err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: %w", src, err)
	}
	if err := errors.Join(tmp.Chmod(0o755), tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	return nil
}

// downloadFirecracker fetches the release tarball for this architecture,
// checks it against the release's .sha256.txt, and unpacks the two
// binaries into dir.
func downloadFirecracker(ctx context.Context, baseURL, dir string) (fc, jailer string, err error) {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if arch == "" {
		return "", "", fmt.Errorf("setup firecracker --download: no release for %s", runtime.GOARCH)
	}
	name := fmt.Sprintf("firecracker-%s-%s.tgz", FirecrackerRelease, arch)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	fail := func(err error) (string, string, error) {
		return "", "", fmt.Errorf("setup firecracker --download %s: %w; on a host without internet, download it elsewhere and use --from", baseURL+"/"+name, err)
	}
	sumText, err := httpGet(ctx, baseURL+"/"+name+".sha256.txt", 4096)
	if err != nil {
		return fail(err)
	}
	wantSum, _, _ := strings.Cut(strings.TrimSpace(string(sumText)), " ")
	tgz, err := httpGet(ctx, baseURL+"/"+name, 256<<20)
	if err != nil {
		return fail(err)
	}
	if sum := sha256.Sum256(tgz); hex.EncodeToString(sum[:]) != wantSum {
		return fail(fmt.Errorf("sha256 %x does not match the release's %s", sum, wantSum))
	}
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return fail(err)
	}
	tr := tar.NewReader(zr)
	want := map[string]*string{
		fmt.Sprintf("firecracker-%s-%s", FirecrackerRelease, arch): &fc,
		fmt.Sprintf("jailer-%s-%s", FirecrackerRelease, arch):      &jailer,
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(err)
		}
		dst, ok := want[filepath.Base(h.Name)]
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, filepath.Base(h.Name))
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			return fail(err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, 256<<20))
		if err = errors.Join(err, f.Close()); err != nil {
			return fail(err)
		}
		*dst = p
	}
	if fc == "" || jailer == "" {
		return fail(errors.New("the tarball lacks the firecracker or jailer binary"))
	}
	return fc, jailer, nil
}

func httpGet(ctx context.Context, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}
