package artifacts

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

	"github.com/fcvm/fcvm/internal/firecracker"
)

// FirecrackerRelease is the release InstallFirecracker downloads.
const FirecrackerRelease = "v1.16.1"

// FirecrackerReleaseURL is where FirecrackerRelease's assets are.
const FirecrackerReleaseURL = "https://github.com/firecracker-microvm/firecracker/releases/download/" + FirecrackerRelease

// FirecrackerSource says which Firecracker InstallFirecracker installs:
// binaries already on this host (From, and optionally Jailer), or the
// release downloaded from ReleaseURL.
type FirecrackerSource struct {
	From, Jailer string
	Download     bool
	ReleaseURL   string
}

// InstalledFirecracker is what InstallFirecracker put where.
type InstalledFirecracker struct {
	Version             [3]int
	Firecracker, Jailer string // Jailer is "" when none was installed
}

// InstallFirecracker checks the firecracker (and jailer) binaries src
// names, or downloads and checks the release, and installs them into
// dataDir/bin, where the firecracker driver looks before PATH.
func InstallFirecracker(ctx context.Context, dataDir string, src FirecrackerSource) (*InstalledFirecracker, error) {
	bin := filepath.Join(dataDir, "bin")
	switch {
	case src.Download && (src.From != "" || src.Jailer != ""):
		return nil, errors.New("setup firecracker: --download installs both binaries; do not combine it with --from or --jailer")
	case src.Download:
		dir, err := os.MkdirTemp("", "fcvm-firecracker-")
		if err != nil {
			return nil, fmt.Errorf("setup firecracker: %w", err)
		}
		defer os.RemoveAll(dir)
		if src.ReleaseURL == "" {
			src.ReleaseURL = FirecrackerReleaseURL
		}
		if src.From, src.Jailer, err = downloadFirecracker(ctx, src.ReleaseURL, dir); err != nil {
			return nil, err
		}
	case src.From == "":
		return nil, errors.New("setup firecracker: say which binary to install with --from PATH (or use --download on a host with internet)")
	}

	v, err := firecracker.BinaryVersion(src.From)
	if err != nil {
		return nil, fmt.Errorf("setup firecracker: %w: --from must name a firecracker binary", err)
	}
	if min := firecracker.MinVersion; v[0] < min[0] || (v[0] == min[0] && v[1] < min[1]) {
		return nil, fmt.Errorf("setup firecracker: %s is %d.%d.%d; fcvm needs %d.%d or newer", src.From, v[0], v[1], v[2], min[0], min[1])
	}
	if src.Jailer != "" {
		jv, err := firecracker.JailerVersion(src.Jailer)
		if err != nil {
			return nil, fmt.Errorf("setup firecracker: %w: --jailer must name a jailer binary", err)
		}
		if jv != v {
			return nil, fmt.Errorf("setup firecracker: jailer %d.%d.%d and firecracker %d.%d.%d are from different releases", jv[0], jv[1], jv[2], v[0], v[1], v[2])
		}
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, fmt.Errorf("setup firecracker: %w", err)
	}
	out := &InstalledFirecracker{Version: v, Firecracker: filepath.Join(bin, "firecracker")}
	if err := installExecutable(src.From, out.Firecracker); err != nil {
		return nil, err
	}
	if src.Jailer != "" {
		out.Jailer = filepath.Join(bin, "jailer")
		if err := installExecutable(src.Jailer, out.Jailer); err != nil {
			return nil, err
		}
	}
	return out, nil
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
