package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// Directory watches (channel.KindWatch) with inotify, in the container's
// filesystem: paths resolve under the container's root (the root of its
// main process, /proc/PID/root, with its mounts), never outside it, and a
// recursive watch does not follow symlinks. Events go to the host as they
// come; when the host reads too slowly the kernel's queue fills and the
// watch ends with an error rather than holding events here.

// watchMask is what a watch reports, in fsnotify's terms.
const watchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// containerPID is the PID of the VM's container's main process.
func containerPID() (int, error) { return crunPID(containerName) }

// crunPID is the PID of container name's main process, from the OCI
// runtime's state (crun keeps {"pid":N,...} in its status file).
func crunPID(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(runtimeStateDir, name, "status"))
	if err == nil {
		var st struct {
			PID int `json:"pid"`
		}
		if json.Unmarshal(b, &st) == nil && st.PID > 0 {
			if _, err := os.Stat("/proc/" + strconv.Itoa(st.PID)); err == nil {
				return st.PID, nil
			}
		}
	}
	return 0, errors.New("the container is not running")
}

// watcher is one watch: an inotify instance and the directories it
// follows.
type watcher struct {
	ino       *os.File // read through the poller, so Close ends a Read
	ifd       int      // ino's descriptor (ino.Fd would make it blocking)
	base      int      // O_PATH fd of the watched directory
	recursive bool
	dirs      map[int32]string // watch descriptor → path relative to base
}

// watch serves a KindWatch stream.
func (a *Agent) watch(req *channel.WatchRequest, conn net.Conn) error {
	if req == nil || !path.IsAbs(req.Path) {
		return errors.New("watch: an absolute path is required")
	}
	pid, err := containerPID()
	if err != nil {
		return fmt.Errorf("watch %s: %w", req.Path, err)
	}
	root, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("watch %s: open the container's root: %w", req.Path, err)
	}
	defer unix.Close(root)
	base, err := unix.Openat2(root, strings.TrimPrefix(req.Path, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("watch %s: %w", req.Path, err)
	}
	defer unix.Close(base)
	w, err := newWatcher(base, req.Recursive)
	if err != nil {
		return fmt.Errorf("watch %s: %w", req.Path, err)
	}
	defer w.ino.Close()
	if err := channel.Reply(conn, nil); err != nil {
		return nil
	}
	// The host ends the watch by closing the stream.
	go func() {
		for {
			if _, err := channel.ReadFrame(conn); err != nil {
				w.ino.Close()
				return
			}
		}
	}()
	return w.run(conn)
}

// newWatcher watches the directory open as base (O_PATH), and if
// recursive the directories under it.
func newWatcher(base int, recursive bool) (*watcher, error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w := &watcher{ino: os.NewFile(uintptr(ifd), "inotify"), ifd: ifd, base: base, recursive: recursive, dirs: map[int32]string{}}
	if err := w.add("."); err != nil {
		w.ino.Close()
		return nil, err
	}
	return w, nil
}

// add watches directory rel (relative to base) and, if recursive, the
// directories under it.
func (w *watcher) add(rel string) error {
	fd, err := unix.Openat2(w.base, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return err
	}
	dir := os.NewFile(uintptr(fd), rel)
	defer dir.Close()
	if len(w.dirs) >= channel.MaxWatchDirs {
		return fmt.Errorf("more than %d directories to watch", channel.MaxWatchDirs)
	}
	wd, err := unix.InotifyAddWatch(w.ifd, "/proc/self/fd/"+strconv.Itoa(fd), watchMask)
	if err != nil {
		return err
	}
	w.dirs[int32(wd)] = rel
	if !w.recursive {
		return nil
	}
	ents, err := dir.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := w.add(path.Join(rel, e.Name())); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
	return nil
}

// run sends events until the watched directory goes or the host leaves.
func (w *watcher) run(conn net.Conn) error {
	out := channel.NewStream(conn)
	buf := make([]byte, 64<<10)
	for {
		// The watch holds the directory open, so the kernel reports its
		// removal only when it is closed: look every second whether it
		// is gone.
		w.ino.SetReadDeadline(time.Now().Add(time.Second))
		n, err := w.ino.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			var st unix.Stat_t
			if unix.Fstat(w.base, &st) == nil && st.Nlink == 0 {
				return out.Send(channel.FrameExit, channel.Uint32(0))
			}
			continue
		}
		if err != nil {
			return nil // closed: the host ended the watch
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				nb := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = strings.TrimRight(string(nb), "\x00")
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				return out.Send(channel.FrameError, []byte("watch: events came faster than they were read, and some were lost"))
			}
			dir, ok := w.dirs[ev.Wd]
			if !ok {
				continue
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				delete(w.dirs, ev.Wd)
				if dir == "." {
					return out.Send(channel.FrameExit, channel.Uint32(0))
				}
				continue
			}
			rel := path.Join(dir, name)
			if name == "" && ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 && dir != "." {
				// A subdirectory's own removal is reported by its parent.
				continue
			}
			if w.recursive && ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
				if err := w.add(rel); err != nil && !errors.Is(err, unix.ENOENT) {
					return out.Send(channel.FrameError, []byte(fmt.Sprintf("watch %s: %v", rel, err)))
				}
			}
			for _, op := range watchOps(ev.Mask) {
				b, _ := json.Marshal(channel.WatchEvent{Name: rel, Op: op})
				if err := out.Send(channel.FrameStdout, b); err != nil {
					return nil
				}
			}
		}
	}
}

// watchOps maps an inotify mask to what fsnotify (and so envd) reports.
func watchOps(m uint32) []channel.WatchOp {
	var ops []channel.WatchOp
	if m&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		ops = append(ops, channel.WatchCreate)
	}
	if m&unix.IN_MODIFY != 0 {
		ops = append(ops, channel.WatchWrite)
	}
	if m&(unix.IN_DELETE|unix.IN_DELETE_SELF) != 0 {
		ops = append(ops, channel.WatchRemove)
	}
	if m&(unix.IN_MOVED_FROM|unix.IN_MOVE_SELF) != 0 {
		ops = append(ops, channel.WatchRename)
	}
	if m&unix.IN_ATTRIB != 0 {
		ops = append(ops, channel.WatchChmod)
	}
	return ops
}
