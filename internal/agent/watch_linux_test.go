package agent

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// watchDir starts a watcher on dir and returns a channel of what it
// sends, "op name" or "exit"/"error: ...", and a stop.
func watchDir(t *testing.T, dir string, recursive bool) (<-chan string, func()) {
	t.Helper()
	base, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(base) })
	w, err := newWatcher(base, recursive)
	if err != nil {
		t.Fatal(err)
	}
	guest, host := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(guest)
		w.ino.Close()
		guest.Close()
	}()
	events := make(chan string, 100)
	go func() {
		defer close(events)
		for {
			f, err := channel.ReadFrame(host)
			if err != nil {
				return
			}
			switch f.Type {
			case channel.FrameStdout:
				var ev channel.WatchEvent
				json.Unmarshal(f.Payload, &ev)
				events <- string(ev.Op) + " " + ev.Name
			case channel.FrameExit:
				events <- "exit"
			default:
				events <- "error: " + string(f.Payload)
			}
		}
	}()
	stop := func() {
		w.ino.Close() // what the agent does when the host closes the stream
		host.Close()
		<-done
	}
	t.Cleanup(stop)
	return events, stop
}

// expect reads events until want has come, failing on a minute without,
// and returns those that came before it.
func expect(t *testing.T, events <-chan string, want string) []string {
	t.Helper()
	timeout := time.After(time.Minute)
	var seen []string
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("events ended before %q; saw %q", want, seen)
			}
			if ev == want {
				return seen
			}
			seen = append(seen, ev)
		case <-timeout:
			t.Fatalf("no %q within a minute; saw %q", want, seen)
		}
	}
}

func TestWatchRecursiveFollowsNewDirectoriesNotSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.Symlink(outside, filepath.Join(dir, "out"))
	events, _ := watchDir(t, dir, true)

	os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("x"), 0o644)
	expect(t, events, "create a/b/f")
	expect(t, events, "write a/b/f")
	os.Mkdir(filepath.Join(dir, "new"), 0o755)
	expect(t, events, "create new")
	os.WriteFile(filepath.Join(dir, "new", "g"), nil, 0o644)
	expect(t, events, "create new/g")
	// Through the symlink: not watched. The marker after it shows the
	// outside write was not reported in between.
	os.WriteFile(filepath.Join(outside, "secret"), nil, 0o644)
	os.Rename(filepath.Join(dir, "new", "g"), filepath.Join(dir, "new", "h"))
	if before := expect(t, events, "rename new/g"); len(before) != 0 {
		t.Errorf("events through the symlink or out of place: %q", before)
	}
	expect(t, events, "create new/h")
	os.Chmod(filepath.Join(dir, "new", "h"), 0o600)
	expect(t, events, "chmod new/h")
	os.RemoveAll(filepath.Join(dir, "a"))
	expect(t, events, "remove a")
	// The watched directory itself goes: the watch ends.
	os.RemoveAll(dir)
	expect(t, events, "exit")
}

func TestWatchFlatAndBounded(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	events, _ := watchDir(t, dir, false)
	os.WriteFile(filepath.Join(dir, "sub", "deep"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "top"), nil, 0o644)
	expect(t, events, "create top")

	// A recursive watch of more directories than it may follow is
	// refused, and leaves no inotify instance behind.
	big := t.TempDir()
	for i := range channel.MaxWatchDirs + 1 {
		os.Mkdir(filepath.Join(big, "d"+strconv.Itoa(i)), 0o755)
	}
	base, err := unix.Open(big, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(base)
	before := openFDs(t)
	if _, err := newWatcher(base, true); err == nil || !strings.Contains(err.Error(), "more than 1024 directories") {
		t.Errorf("watch of %d directories: %v, want a refusal", channel.MaxWatchDirs+1, err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after the refusal, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
