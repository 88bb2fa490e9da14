package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Helper processes: the test binary re-executed with STATE_TEST_HELPER set,
// so that locking is tested across processes, not just goroutines.
func TestMain(m *testing.M) {
	if h := os.Getenv("STATE_TEST_HELPER"); h != "" {
		os.Exit(helper(h, os.Getenv("STATE_TEST_DIR"), strings.Fields(os.Getenv("STATE_TEST_ARGS"))))
	}
	os.Exit(m.Run())
}

func helper(kind, dir string, args []string) int {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch kind {
	case "create":
		r := &Record{Name: args[0], Image: "busybox"}
		err := s.Create(r)
		switch {
		case err == nil:
			fmt.Println("won", r.ID)
		case errors.Is(err, ErrNameInUse):
			fmt.Println("lost")
		default:
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	case "increment":
		n, _ := strconv.Atoi(args[1])
		for range n {
			if _, err := s.Update(args[0], increment); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
	case "churn":
		// Rewrite the record forever with payloads of changing size, so
		// a torn write would show up as bad JSON or a wrong checksum.
		for i := 0; ; i++ {
			_, err := s.Update(args[0], func(r *Record) error {
				r.Labels = map[string]string{"pad": strings.Repeat(strconv.Itoa(i%10), 1<<(10+i%10))}
				r.Labels["len"] = strconv.Itoa(len(r.Labels["pad"]))
				return nil
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
	}
	return 0
}

func increment(r *Record) error {
	n, _ := strconv.Atoi(r.Labels["n"])
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	r.Labels["n"] = strconv.Itoa(n + 1)
	return nil
}

func startHelper(t *testing.T, kind, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STATE_TEST_HELPER="+kind, "STATE_TEST_DIR="+dir, "STATE_TEST_ARGS="+strings.Join(args, " "))
	cmd.Stderr = os.Stderr
	return cmd
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "vms"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCreate(t testing.TB, s *Store, r *Record) *Record {
	t.Helper()
	if err := s.Create(r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCreateGet(t *testing.T) {
	s := newStore(t)
	exit := 7
	r := mustCreate(t, s, &Record{
		Name: "web", Image: "nginx:alpine", Cmd: []string{"nginx", "-g", "daemon off;"},
		Driver: "qemu", CPUs: 2, MemoryMiB: 512, ExitCode: &exit,
		Network: Network{Mode: "bridged", Ports: []Port{{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"}}},
		Labels:  map[string]string{"a": "b"},
	})
	if !isID(r.ID) || r.Dir != filepath.Join(s.Dir(), r.ID) || r.Status != StatusCreated || r.Created.IsZero() {
		t.Fatalf("Create did not fill in ID, Dir, Status, Created: %+v", r)
	}
	for _, key := range []string{r.ID, "web", r.ID[:3], r.ID[:12]} {
		got, err := s.Get(key)
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("Get(%q) (-created +got):\n%s", key, diff)
		}
	}
	for _, key := range []string{"nope", r.ID[:2], strings.Repeat("f", 64), "../" + r.ID} {
		_, err := s.Get(key)
		if !errors.Is(err, ErrNotFound) || err.Error() != "no such VM: "+key {
			t.Errorf("Get(%q) = %v, want %q", key, err, "no such VM: "+key)
		}
	}
}

func TestCreateName(t *testing.T) {
	s := newStore(t)
	a := mustCreate(t, s, &Record{Image: "x"})
	b := mustCreate(t, s, &Record{Image: "x"})
	if a.Name == "" || a.Name == b.Name || !validName(a.Name) || !strings.Contains(a.Name, "_") {
		t.Errorf("generated names %q, %q", a.Name, b.Name)
	}
	err := s.Create(&Record{Name: a.Name})
	want := fmt.Sprintf("name %q is already in use by VM %s: choose another --name or remove it with fcvm rm %s", a.Name, a.ID[:12], a.Name)
	if !errors.Is(err, ErrNameInUse) || err.Error() != want {
		t.Errorf("Create(taken name) = %v\nwant %s", err, want)
	}
	for _, bad := range []string{"-x", "a b", "a/b", ".hidden", "é"} {
		if err := s.Create(&Record{Name: bad}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Create(name %q) = %v, want ErrInvalidName", bad, err)
		}
	}
	// A name stays taken by an exited VM until it is removed.
	if _, err := s.Update(a.ID, func(r *Record) error { r.Status = StatusExited; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{Name: a.Name}); !errors.Is(err, ErrNameInUse) {
		t.Errorf("Create(name of exited VM) = %v, want ErrNameInUse", err)
	}
	if err := s.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, &Record{Name: a.Name})
}

func TestGetPrefix(t *testing.T) {
	s := newStore(t)
	ids := []string{
		"abc1" + strings.Repeat("0", 60),
		"abc2" + strings.Repeat("0", 60),
		"abd0" + strings.Repeat("0", 60),
	}
	for i, id := range ids {
		mustCreate(t, s, &Record{ID: id, Name: fmt.Sprint("vm", i)})
	}
	if _, err := s.Get("abc"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Get(abc) = %v, want ErrAmbiguous", err)
	}
	for key, want := range map[string]string{"abc2": ids[1], "abd": ids[2], "vm0": ids[0], ids[1]: ids[1]} {
		r, err := s.Get(key)
		if err != nil || r.ID != want {
			t.Errorf("Get(%q) = %v, %v; want %s", key, r, err, want)
		}
	}
	// An exact name wins over an ID prefix.
	mustCreate(t, s, &Record{Name: "abc"})
	if r, err := s.Get("abc"); err != nil || r.Name != "abc" {
		t.Errorf("Get(abc) = %v, %v; want the VM named abc", r, err)
	}
}

func TestListSkipsCorrupt(t *testing.T) {
	s := newStore(t)
	var want []string
	for i := range 3 {
		r := mustCreate(t, s, &Record{Name: fmt.Sprint("vm", i), Created: time.Unix(int64(100-i), 0)})
		want = append([]string{r.Name}, want...)
	}
	bad := strings.Repeat("b", 64)
	os.Mkdir(s.VMDir(bad), 0o700)
	os.WriteFile(filepath.Join(s.VMDir(bad), recordFile), []byte(`{"id": "bbb`), 0o600)
	noRecord := strings.Repeat("c", 64)
	os.Mkdir(s.VMDir(noRecord), 0o700)
	os.Mkdir(filepath.Join(s.Dir(), ".create-x"), 0o700) // hidden: ignored

	recs, err := s.List()
	var got []string
	for _, r := range recs {
		got = append(got, r.Name)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List names, oldest first (-want +got):\n%s", diff)
	}
	var re *RecordError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), noRecord) {
		t.Errorf("List error = %v, want RecordErrors for %s and %s", err, bad, noRecord)
	}
	// Get and Create still work around the corrupt record.
	if _, err := s.Get("vm1"); err != nil {
		t.Error(err)
	}
	mustCreate(t, s, &Record{Name: "vm3"})
}

func TestUpdateRemove(t *testing.T) {
	s := newStore(t)
	r := mustCreate(t, s, &Record{Name: "a"})
	got, err := s.Update(r.ID, func(r *Record) error { r.Status = StatusRunning; r.Supervisor = Self(); return nil })
	if err != nil || got.Status != StatusRunning || got.Effective() != StatusRunning {
		t.Fatalf("Update = %+v, %v", got, err)
	}
	boom := errors.New("boom")
	if _, err := s.Update(r.ID, func(r *Record) error { r.Status = StatusExited; return boom }); err != boom {
		t.Errorf("Update with failing fn = %v, want fn's error", err)
	}
	if g, _ := s.Get("a"); g.Status != StatusRunning {
		t.Errorf("a failed Update wrote status %s", g.Status)
	}
	if _, err := s.Update(r.ID, func(r *Record) error { r.Name = "b"; return nil }); err == nil {
		t.Error("Update changed the name")
	}
	if err := s.Remove(r.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(r.ID); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
	if _, err := s.Update(r.ID, increment); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update after Remove = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(r.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM dir after Remove: %v", err)
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 0 {
		t.Errorf("store not empty after Remove: %v", ents)
	}
}

func TestEffective(t *testing.T) {
	dead := Process{PID: os.Getpid(), StartTime: Self().StartTime + 1}
	for _, tc := range []struct {
		status Status
		sup    Process
		want   Status
	}{
		{StatusRunning, Self(), StatusRunning},
		{StatusRunning, dead, StatusDead},
		{StatusStarting, dead, StatusDead},
		{StatusStopping, Process{}, StatusDead},
		{StatusPaused, Self(), StatusPaused},
		{StatusPaused, dead, StatusDead},
		{StatusCreated, dead, StatusCreated},
		{StatusExited, dead, StatusExited},
	} {
		r := &Record{Status: tc.status, Supervisor: tc.sup}
		if got := r.Effective(); got != tc.want {
			t.Errorf("Effective(%s, %v) = %s, want %s", tc.status, tc.sup, got, tc.want)
		}
	}
}

func TestCreateSameNameGoroutines(t *testing.T) {
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Create(&Record{Name: "same"}) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrNameInUse):
			t.Errorf("Create: %v", err)
		}
	}
	recs, err := s.List()
	if won != 1 || len(recs) != 1 || err != nil {
		t.Errorf("%d creates won, %d records (%v), want 1", won, len(recs), err)
	}
}

func TestCreateSameNameProcesses(t *testing.T) {
	s := newStore(t)
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for range 8 {
		c := startHelper(t, "create", s.Dir(), "same")
		out := new(strings.Builder)
		c.Stdout = out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, c), append(outs, out)
	}
	won := 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
		if strings.HasPrefix(outs[i].String(), "won") {
			won++
		}
	}
	recs, _ := s.List()
	if won != 1 || len(recs) != 1 {
		t.Errorf("%d processes won, %d records; want 1", won, len(recs))
	}
}

func TestUpdateProcesses(t *testing.T) {
	s := newStore(t)
	r := mustCreate(t, s, &Record{Name: "counter"})
	const procs, each = 4, 50
	var cmds []*exec.Cmd
	for range procs {
		c := startHelper(t, "increment", s.Dir(), r.ID, strconv.Itoa(each))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	// And goroutines here at the same time.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range each {
				if _, err := s.Update(r.ID, increment); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	got, err := s.Get(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa((procs + 4) * each); got.Labels["n"] != want {
		t.Errorf("counter = %s after %s increments: updates were lost", got.Labels["n"], want)
	}
}

// TestKilledWriter reads a record while another process rewrites it as fast
// as it can, then kills that process mid-write: every read must see a whole
// record.
func TestKilledWriter(t *testing.T) {
	s := newStore(t)
	r := mustCreate(t, s, &Record{Name: "churn"})
	path := filepath.Join(r.Dir, recordFile)
	check := func() (written bool) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var got Record
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("torn record (%d bytes): %v", len(b), err)
		}
		if got.Labels != nil && strconv.Itoa(len(got.Labels["pad"])) != got.Labels["len"] {
			t.Fatalf("record mixes two writes: pad %d bytes, len says %s", len(got.Labels["pad"]), got.Labels["len"])
		}
		return got.Labels != nil
	}
	reads := 0
	for round := range 5 {
		c := startHelper(t, "churn", s.Dir(), r.ID)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for the writer's first write (a slow machine may take a
		// while to start it), then read while it writes.
		started := time.Now()
		for round == 0 && !check() {
			if time.Since(started) > 30*time.Second {
				t.Fatal("the writer wrote nothing in 30 s")
			}
			reads++
		}
		deadline := time.Now().Add(time.Duration(50+round*37) * time.Millisecond)
		for time.Now().Before(deadline) {
			check()
			reads++
		}
		c.Process.Signal(syscall.SIGKILL)
		c.Wait()
		check()
	}
	t.Logf("%d reads while writing", reads)
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if tmps, _ := filepath.Glob(filepath.Join(r.Dir, ".*")); len(tmps) != 0 {
		t.Errorf("temp files after Sweep: %v", tmps)
	}
	if got, err := s.Get("churn"); err != nil || got.Labels["len"] == "" {
		t.Errorf("Get after killed writers = %+v, %v", got, err)
	}
}

func TestSweep(t *testing.T) {
	s := newStore(t)
	r := mustCreate(t, s, &Record{Name: "keep"})
	for _, d := range []string{".create-" + strings.Repeat("1", 64), ".trash-x-1"} {
		os.MkdirAll(filepath.Join(s.Dir(), d, "sub"), 0o700)
	}
	os.WriteFile(filepath.Join(r.Dir, ".record.json.tmp-123"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(r.Dir, "disk.img"), []byte("data"), 0o600)
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(s.Dir(), func(p string, _ os.DirEntry, _ error) error {
		rel, _ := filepath.Rel(s.Dir(), p)
		left = append(left, rel)
		return nil
	})
	want := []string{".", r.ID, filepath.Join(r.ID, "disk.img"), filepath.Join(r.ID, recordFile)}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("after Sweep (-want +got):\n%s", diff)
	}
}

func BenchmarkList100(b *testing.B) {
	s := newStore(b)
	for i := range 100 {
		mustCreate(b, s, &Record{
			Image: "docker.io/library/nginx:alpine", Cmd: []string{"nginx", "-g", "daemon off;"},
			Status: StatusRunning, Supervisor: Self(), VMM: Self(), Driver: "qemu",
			Network: Network{Mode: "bridged", Ports: []Port{{HostPort: 8000 + i, GuestPort: 80, Proto: "tcp"}}},
			Labels:  map[string]string{"app": "web"},
		})
	}
	b.ResetTimer()
	for b.Loop() {
		recs, err := s.List()
		if err != nil || len(recs) != 100 {
			b.Fatal(len(recs), err)
		}
		for _, r := range recs {
			r.Effective()
		}
	}
}

func TestRemoveRefusesMounts(t *testing.T) {
	s := newStore(t)
	r := mustCreate(t, s, &Record{Name: "mounted"})
	// Stand-in for a volume: a tmpfs with a file the user cares about.
	mp := filepath.Join(r.Dir, "vol")
	os.Mkdir(mp, 0o700)
	if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mp, syscall.MNT_DETACH) })
	precious := filepath.Join(mp, "precious")
	os.WriteFile(precious, []byte("x"), 0o600)

	if err := s.Remove(r.ID); !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), mp) {
		t.Fatalf("Remove with a mount = %v, want ErrMounted naming %s", err, mp)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Fatalf("Remove deleted through the mount: %v", err)
	}
	if _, err := s.Get("mounted"); err != nil {
		t.Errorf("VM gone after a refused Remove: %v", err)
	}
	if err := syscall.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(r.ID); err != nil {
		t.Fatal(err)
	}
}

func TestMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "vms")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := s.List(); err != nil || len(recs) != 0 {
		t.Errorf("List of a missing store = %v, %v; want empty", recs, err)
	}
	if _, err := s.Get("x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	if err := s.Sweep(); err != nil {
		t.Errorf("Sweep = %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading created the store: %v", err)
	}
	mustCreate(t, s, &Record{Name: "first"})
	if r, err := s.Get("first"); err != nil || r.Name != "first" {
		t.Errorf("Get after first Create = %v, %v", r, err)
	}
}
