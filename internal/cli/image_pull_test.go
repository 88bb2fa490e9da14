package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/imagetest"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
)

func imageEnv(t *testing.T) (*Env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	return &Env{
		Stdout: &stdout, Stderr: &stderr,
		Log:  slog.New(slog.NewTextHandler(&stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Dirs: datadir.Dirs{Data: t.TempDir(), Runtime: t.TempDir()},
	}, &stdout, &stderr
}

// runImage runs `fcvm image ARGS...` and returns its error.
func runImage(t *testing.T, env *Env, args ...string) error {
	t.Helper()
	env.Stdout.(*bytes.Buffer).Reset()
	env.Stderr.(*bytes.Buffer).Reset()
	cmd := newImageCmd(env)
	cmd.SetArgs(args)
	cmd.SetOut(env.Stdout)
	cmd.SetErr(env.Stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.ExecuteContext(context.Background())
}

func TestImageCommands(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	src := imagetest.Busybox(t, imagetest.Options{Cmd: []string{"echo", "hi"}, Ports: []string{"80/tcp"}})
	imagetest.Push(t, src, addr+"/test/busybox:1")
	id := imagetest.ID(t, src)
	env, stdout, stderr := imageEnv(t)

	if err := runImage(t, env, "pull", "--tls-verify=false", addr+"/test/busybox:1"); err != nil {
		t.Fatal(err)
	}
	if got := stdout.String(); got != id+"\n" {
		t.Errorf("pull printed %q, want the ID", got)
	}
	if stderr.Len() != 0 {
		t.Errorf("pull wrote progress to a non-terminal: %q", stderr.String())
	}
	archive := filepath.Join(t.TempDir(), "b.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{Cmd: []string{"true"}}), archive)
	if err := runImage(t, env, "pull", "oci-archive:"+archive); err != nil {
		t.Fatal(err)
	}
	unnamed := strings.TrimSpace(stdout.String())

	if err := runImage(t, env, "ls"); err != nil {
		t.Fatal(err)
	}
	short := strings.TrimPrefix(id, "sha256:")[:12]
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "REPOSITORY") || !strings.Contains(lines[0], "IMAGE ID") {
		t.Fatalf("ls:\n%s", stdout.String())
	}
	for i, want := range [][]string{
		{addr + "/test/busybox", "1", short, "2", "years", "ago", "MB"},
		{"<none>", "<none>", strings.TrimPrefix(unnamed, "sha256:")[:12], "2", "years", "ago", "MB"},
	} {
		f := strings.Fields(lines[i+1])
		if len(f) == 8 {
			f = append(f[:6], f[7]) // the size's number depends on busybox's version
		}
		if diff := cmp.Diff(want, f); diff != "" {
			t.Errorf("ls line %d (-want +got):\n%s", i+1, diff)
		}
	}

	if err := runImage(t, env, "ls", "--json"); err != nil {
		t.Fatal(err)
	}
	var got []imageJSON
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, stdout.String())
	}
	var mine imageJSON
	for _, g := range got {
		if g.ID == id {
			mine = g
		}
	}
	want := imageConfigJSON{Entrypoint: []string{}, Cmd: []string{"echo", "hi"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		ExposedPorts: []string{"80/tcp"}, Labels: map[string]string{}}
	if diff := cmp.Diff(want, mine.Config); diff != "" {
		t.Errorf("ls --json config (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{addr + "/test/busybox:1"}, mine.Names); diff != "" {
		t.Errorf("ls --json names (-want +got):\n%s", diff)
	}
	if !mine.Created.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) || mine.Size == 0 || mine.Disk == "" {
		t.Errorf("ls --json: %+v", mine)
	}
	// Stable keys, even when empty.
	for _, key := range []string{`"entrypoint": []`, `"labels": {}`, `"working_dir": ""`, `"names": []`} {
		if !strings.Contains(stdout.String(), key) {
			t.Errorf("ls --json lacks %s:\n%s", key, stdout.String())
		}
	}

	// A VM record naming the image keeps it.
	st, err := state.Open(env.Dirs.VMs())
	if err != nil {
		t.Fatal(err)
	}
	rec := &state.Record{ID: strings.Repeat("f", 64), Name: "user", Image: addr + "/test/busybox:1", ImageID: id,
		Created: time.Now(), Status: state.StatusExited}
	if err := st.Create(rec); err != nil {
		t.Fatal(err)
	}
	err = runImage(t, env, "rm", addr+"/test/busybox:1")
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("rm of an image a VM uses: %v", err)
	}
	if err := runImage(t, env, "prune", "-a"); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(stdout.String()); got != unnamed {
		t.Errorf("prune -a removed %q, want only the unused %s", got, unnamed)
	}
	if err := st.Remove(rec.ID); err != nil {
		t.Fatal(err)
	}
	// So does a snapshot of a VM of it: its clones boot from the image.
	snaps := &snapshot.Store{Dir: env.Dirs.Snapshots()}
	staging, err := snaps.Staging("warm")
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.Commit(staging, &snapshot.Manifest{Tag: "warm", Image: addr + "/test/busybox:1", ImageID: id, Driver: "qemu"}); err != nil {
		t.Fatal(err)
	}
	if err := runImage(t, env, "rm", addr+"/test/busybox:1"); err == nil || !strings.Contains(err.Error(), "in use by a VM or a snapshot") {
		t.Fatalf("rm of an image a snapshot uses: %v", err)
	}
	if err := snaps.Remove("warm"); err != nil {
		t.Fatal(err)
	}

	if err := runImage(t, env, "rm", addr+"/test/busybox:1"); err != nil {
		t.Fatal(err)
	}
	if want := "Untagged: " + addr + "/test/busybox:1\nDeleted: " + id + "\n"; stdout.String() != want {
		t.Errorf("rm printed %q, want %q", stdout.String(), want)
	}
	if err := runImage(t, env, "rm", "127.0.0.1:1/nosuch:1"); err == nil ||
		err.Error() != "image 127.0.0.1:1/nosuch:1 not known locally: pull it with `fcvm image pull 127.0.0.1:1/nosuch:1`" {
		t.Errorf("rm of an unknown image: %v", err)
	}
	if err := runImage(t, env, "rm", "-i", "127.0.0.1:1/nosuch:1"); err != nil {
		t.Errorf("rm -i of an unknown image: %v", err)
	}
	if err := runImage(t, env, "ls", "-q"); err != nil || stdout.Len() != 0 {
		t.Errorf("ls -q after removing everything: %q, %v", stdout.String(), err)
	}
	ents, _ := os.ReadDir(env.Dirs.Images())
	for _, e := range ents {
		if e.Name() != "tmp" && e.Name() != "locks" && e.Name() != "lock" && e.Name() != "refs.json" {
			t.Errorf("left in the image store: %s", e.Name())
		}
	}
}

func TestImagePullErrors(t *testing.T) {
	env, _, _ := imageEnv(t)
	closed := imagetest.ClosedAddr(t)
	// Through Run, as a user sees it: one line on stderr, exit 125.
	t.Setenv("FCVM_DATA_DIR", env.Dirs.Data)
	t.Setenv("FCVM_RUNTIME_DIR", env.Dirs.Runtime)
	for _, tc := range []struct{ ref, want string }{
		{closed + "/x:1", "fcvm: registry " + closed + " unreachable: dial tcp " + closed + ": connect: connection refused: check the address and that the registry is running\n"},
		{"Bad//Ref", `fcvm: malformed image reference "Bad//Ref": `},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), []string{"image", "pull", tc.ref}, nil, &stdout, &stderr)
		if code == 0 || !strings.HasPrefix(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("pull %s: exit %d, stderr %q, want %q", tc.ref, code, stderr.String(), tc.want)
		}
	}
}
