package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// The detach protocol of `run -d` and `snapshot run -d`: the command
// re-executes itself with DetachEnv set, as a session leader with no
// terminal, and waits for one line on the pipe the child has as fd 3:
// "ok ID" once the container runs (or is healthy, with --wait-healthy),
// "err MESSAGE" if it failed. The child stays behind as the VM's
// supervisor.

// DetachEnv marks the re-executed process that stays behind as a detached
// VM's supervisor.
const DetachEnv = "FCVM_SUPERVISOR"

// reportFD is the child's end of the report pipe.
const reportFD = 3

// IsDetachedSupervisor reports whether this process is the supervisor
// StartDetached left behind.
func IsDetachedSupervisor() bool { return os.Getenv(DetachEnv) != "" }

// StartDetached re-executes this command (os.Args) as a background
// supervisor and waits until it reports the container started, returning
// the VM's ID, or failed, returning its error.
func StartDetached(ctx context.Context) (string, error) {
	return StartDetachedArgs(ctx, os.Args[1:])
}

// StartDetachedArgs is StartDetached with the supervisor's arguments
// given: a command that acts on several VMs starts one supervisor each.
func StartDetachedArgs(ctx context.Context, args []string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find fcvm executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return "", err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), DetachEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return "", fmt.Errorf("start supervisor: %w", err)
	}
	// The supervisor outlives us: do not wait for it beyond its report.
	go cmd.Wait()
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	line, err := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(line, "ok "):
		return strings.TrimPrefix(line, "ok "), nil
	case strings.HasPrefix(line, "err "):
		return "", errors.New(strings.TrimPrefix(line, "err "))
	default:
		return "", fmt.Errorf("supervisor exited before the container started (%v); see fcvm logs", err)
	}
}

// report is a detached supervisor's end of the protocol. It says one
// thing, once.
type report struct {
	once sync.Once
	f    *os.File
}

func (r *report) say(line string) {
	r.once.Do(func() {
		fmt.Fprintln(r.f, line)
		r.f.Close()
	})
}

// RunDetached is the life of a detached supervisor: launch brings up the
// VM (a cold boot or a clone), moveLog moves the supervisor's log into the
// VM's dir, the VM runs, and the parent hears "ok ID" once the container
// started (with waitHealthy, once the health check passed) or the error
// that stopped it, whichever comes first. It returns what Run returned;
// vm is nil when launch failed. The caller finishes the VM (Finish,
// PowerOff, Teardown).
func RunDetached(ctx context.Context, launch func() (*VM, error), moveLog func(vmDir string) error, waitHealthy bool) (vm *VM, code int, err error) {
	rep := &report{f: os.NewFile(reportFD, "report")}
	defer rep.say("err the supervisor ended without a report")
	fail := func(err error) { rep.say("err " + oneLineText(err.Error())) }
	vm, err = launch()
	if err != nil {
		fail(err)
		return nil, 0, err
	}
	// From here on the supervisor's log goes to the VM's dir; the
	// terminal it came from is gone.
	if err := moveLog(vm.Record.Dir); err != nil {
		vm.log.Warn("move the supervisor's log to the VM's dir", "err", err)
	}
	ready := func() { rep.say("ok " + vm.Record.ID) }
	if waitHealthy {
		// Report once the health check decides; Run must not wait.
		ready = func() {
			go func() {
				if err := vm.WaitHealthy(ctx); err != nil {
					fail(err)
					return
				}
				rep.say("ok " + vm.Record.ID)
			}()
		}
	}
	code, err = vm.Run(ctx, Stdio{}, ready)
	switch {
	case err != nil:
		fail(err)
	case waitHealthy:
		fail(fmt.Errorf("the container exited with code %d before it was healthy: see fcvm logs %s", code, vm.Record.Name))
	default:
		// A container that ran and exited before Run reported it
		// started still started.
		ready()
	}
	return vm, code, err
}

// oneLineText keeps a message on the report's one line.
func oneLineText(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
