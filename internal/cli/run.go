package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/fcvm/fcvm/internal/health"
	"github.com/fcvm/fcvm/internal/supervisor"
)

type runOptions struct {
	supervisor.Options
	envFiles   []string
	entrypoint string
	labels     []string
	rm         bool
	volumes    []string // -v, parsed by parseVolumes (volume.go)
	mounts     []string // --mount type=bind|tmpfs, turned into -v or --tmpfs (volume.go)
	// waitHealthy makes -d return only once the container is healthy.
	waitHealthy bool
	stopSignal  string
	stopTimeout int
	cidfile     string
}

func newRunCmd(env *Env) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Run a container in a new microVM",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Image, o.Cmd = args[0], args[1:]
			if cmd.Flags().Changed("entrypoint") {
				o.Entrypoint = &o.entrypoint
			}
			if cmd.Flags().Changed("stop-timeout") {
				o.StopTimeout = &o.stopTimeout
			}
			return runRun(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringVar(&o.Name, "name", "", "name of the VM")
	f.BoolVarP(&o.Detach, "detach", "d", false, "run in the background and print the VM ID")
	f.BoolVar(&o.rm, "rm", false, "remove the VM when it exits")
	f.BoolVarP(&o.Interactive, "interactive", "i", false, "keep stdin open")
	f.BoolVarP(&o.TTY, "tty", "t", false, "allocate a terminal")
	f.StringArrayVarP(&o.Env, "env", "e", nil, "set an environment variable (K=V, or K to take it from this environment)")
	f.StringArrayVar(&o.envFiles, "env-file", nil, "read environment variables from a file")
	f.StringVar(&o.entrypoint, "entrypoint", "", "override the image's entrypoint")
	f.StringVarP(&o.Workdir, "workdir", "w", "", "working directory in the container")
	f.StringVarP(&o.User, "user", "u", "", "user (and group) to run as")
	f.IntVar(&o.CPUs, "cpus", 1, "virtual CPUs")
	f.IntVarP(&o.MemoryMiB, "memory", "m", 512, "memory in MiB")
	f.IntVar(&o.DiskMiB, "disk", 4096, "size of the VM's writable disk in MiB (sparse)")
	f.StringVar(&o.VMM, "vmm", "auto", "VMM: auto, firecracker or qemu")
	f.StringVar(&o.Network, "network", "rootless", "network: rootless, bridged (root), none, or ns:PATH to take over the one interface of an existing network namespace (root); pasta:--map-gw or slirp4netns:allow_host_loopback=true let the guest reach the host's loopback at 10.0.2.2")
	f.StringArrayVarP(&o.Publish, "publish", "p", nil, "publish a guest port: [IP:]HOSTPORT:GUESTPORT[/tcp|/udp], or [IP::]GUESTPORT for a free host port (see fcvm port)")
	f.StringVar(&o.Hostname, "hostname", "", "the container's host name (default: the short ID)")
	f.BoolVar(&o.Replace, "replace", false, "remove a VM of the same --name first (stopping it if it runs)")
	f.StringVar(&o.stopSignal, "stop-signal", "", "signal stop sends the container first (default SIGTERM)")
	f.IntVar(&o.stopTimeout, "stop-timeout", 10, "seconds stop waits for the container before killing it")
	f.StringVar(&o.cidfile, "cidfile", "", "write the VM's ID to this file (which must not exist)")
	f.StringVar(&o.Restart, "restart", "", "restart policy when the container exits (with -d): no, on-failure[:MAX], always")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "set a label (K=V)")
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "share a host directory: HOST-DIR:CONTAINER-DIR[:ro] (repeatable)")
	f.StringArrayVar(&o.mounts, "mount", nil, "type=bind,source=HOST-DIR,target=CONTAINER-DIR[,ro] (as -v) or type=tmpfs,target=CONTAINER-DIR[,tmpfs-size=N] (as --tmpfs)")
	f.BoolVar(&o.TLSVerify, "tls-verify", true, "require HTTPS and verify certificates when pulling")
	f.StringVar(&o.Pull, "pull", "missing", "pull the image: missing (when not cached), always, newer or never")
	addHealthFlags(f, o)
	addShapeFlags(f, &o.Shape)
	return cmd
}

// parseEnv resolves -e and --env-file like podman: K=V sets, bare K copies
// the caller's value (and is dropped when unset).
func parseEnv(flags, files []string) ([]string, error) {
	var out []string
	add := func(kv string) {
		if strings.Contains(kv, "=") {
			out = append(out, kv)
		} else if v, ok := os.LookupEnv(kv); ok {
			out = append(out, kv+"="+v)
		}
	}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read --env-file: %w", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			add(line)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read --env-file %s: %w", path, err)
		}
	}
	for _, kv := range flags {
		if strings.HasPrefix(kv, "=") {
			return nil, fmt.Errorf("-e %q: no variable name", kv)
		}
		add(kv)
	}
	return out, nil
}

func parseLabels(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, l := range flags {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, fmt.Errorf("--label %q: no key", l)
		}
		m[k] = v
	}
	return m, nil
}

func runRun(ctx context.Context, env *Env, o *runOptions) error {
	var err error
	if o.Env, err = parseEnv(o.Env, o.envFiles); err != nil {
		return err
	}
	if o.Labels, err = parseLabels(o.labels); err != nil {
		return err
	}
	for _, m := range o.mounts {
		v, tmpfs, err := parseMount(m) // volume.go
		if err != nil {
			return err
		}
		if v != "" {
			o.volumes = append(o.volumes, v)
		} else {
			o.Shape.Tmpfs = append(o.Shape.Tmpfs, tmpfs)
		}
	}
	if o.Volumes, err = parseVolumes(o.volumes); err != nil {
		return err
	}
	o.Remove = o.rm
	if o.stopSignal != "" {
		sig, err := parseSignal(o.stopSignal) // kill.go
		if err != nil {
			return fmt.Errorf("--stop-signal: %w", err)
		}
		o.StopSignal = int(sig)
	}
	if o.Restart != "" && o.Restart != "no" && !o.Detach {
		return errors.New("--restart: needs -d (the restarts are the background supervisor's)")
	}
	if o.waitHealthy && (!o.Detach || o.Health.URL == "" && o.Health.Cmd == "") {
		return errors.New("--wait-healthy: needs -d and a health check (--health-url or --health-cmd)")
	}
	stdinFile, _ := env.Stdin.(*os.File)
	// As podman: -t gives the container a terminal even without one on
	// stdin (run -dt is common; output then has CRLF line ends), and only
	// -it without one warns. Raw mode and resizing need a real terminal.
	rawTTY := o.TTY && !o.Detach && stdinFile != nil && term.IsTerminal(int(stdinFile.Fd()))
	if o.TTY && o.Interactive && !o.Detach && !rawTTY {
		fmt.Fprintln(env.Stderr, "fcvm: the input device is not a TTY; the --tty and --interactive flags might not work properly")
	}
	if rawTTY {
		o.Rows, o.Cols, _ = terminalSize(stdinFile)
	}
	if err := o.Validate(); err != nil {
		return err
	}
	// The --cidfile is made (exclusively) by the command the user ran,
	// never by the detached supervisor it leaves.
	var cid *cidFile
	if o.cidfile != "" && !supervisor.IsDetachedSupervisor() {
		if cid, err = createCIDFile(o.cidfile); err != nil {
			return err
		}
		defer cid.abandon()
	}
	launch := func() (*supervisor.VM, error) { return env.engine().Launch(ctx, o.Options) }
	if o.Detach {
		return runDetached(ctx, env, launch, o.waitHealthy, o.rm, cid)
	}
	// Launch under a context that Ctrl-C cancels, so a pull or a boot can
	// be interrupted and cleaned up.
	vm, err := supervisor.Launch(ctx, env.Log, env.Dirs, o.Options)
	if err != nil {
		return err
	}
	if err := cid.write(vm.Record.ID); err != nil {
		env.Log.Warn("write --cidfile", "err", err)
	}
	for _, p := range vm.Phases {
		env.Log.Debug("launch phase", "phase", p.Name, "took", p.Dur)
	}
	stdio := supervisor.Stdio{Stdout: env.Stdout, Stderr: env.Stderr}
	if o.Interactive {
		stdio.Stdin = env.Stdin
	}
	if rawTTY {
		defer rawTerminal(stdinFile)()
		resize := make(chan [2]uint16, 1)
		defer followSize(stdinFile, func(rows, cols uint16) {
			select {
			case resize <- [2]uint16{rows, cols}:
			default:
			}
		})()
		stdio.Resize = resize
	}
	code, runErr := vm.Run(ctx, stdio, nil)
	return finishRun(env, vm, o.rm, code, runErr)
}

// finishRun records how the container ended, powers the VM off and cleans
// up, and turns the exit code into fcvm's.
func finishRun(env *Env, vm *supervisor.VM, rm bool, code int, runErr error) error {
	vm.Finish(code, runErr)
	vm.PowerOff(5 * time.Second)
	if err := vm.Teardown(rm); err != nil {
		env.Log.Warn("teardown", "err", err)
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			return &ExitError{Code: 143}
		}
		return runErr
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// runDetached starts the detached supervisor of `run -d` or `snapshot run
// -d` and prints the VM's ID, or, in that supervisor, runs the VM.
func runDetached(ctx context.Context, env *Env, launch func() (*supervisor.VM, error), waitHealthy, rm bool, cid *cidFile) error {
	if !supervisor.IsDetachedSupervisor() {
		id, err := supervisor.StartDetached(ctx)
		if err != nil {
			return err
		}
		if err := cid.write(id); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, id)
		return nil
	}
	moveLog := func(dir string) error { return env.logToDir(dir, 2) }
	vm, code, runErr := supervisor.RunDetached(ctx, launch, moveLog, waitHealthy)
	if vm == nil {
		return runErr
	}
	return superviseRestarts(ctx, env, vm, rm, code, runErr)
}

// superviseRestarts finishes a detached VM's run and, as its --restart
// policy says, boots it again and runs it, until the policy says no.
func superviseRestarts(ctx context.Context, env *Env, vm *supervisor.VM, rm bool, code int, runErr error) error {
	for {
		err := finishRun(env, vm, rm, code, runErr)
		next := vm.Next(ctx, code, runErr)
		if next == nil {
			return err
		}
		vm = next
		code, runErr = vm.Run(ctx, supervisor.Stdio{}, nil)
	}
}

// cidFile is run --cidfile: created exclusively before the VM starts (as
// podman refuses a file that exists), filled with the ID once it is known,
// removed if the run fails before that.
type cidFile struct {
	f *os.File
}

func createCIDFile(path string) (*cidFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("--cidfile %s: the file exists: another VM may use it; remove it or choose another", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--cidfile: %w", err)
	}
	return &cidFile{f: f}, nil
}

// write stores id; a nil c (no --cidfile) does nothing.
func (c *cidFile) write(id string) error {
	if c == nil || c.f == nil {
		return nil
	}
	_, err := c.f.WriteString(id)
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	c.f = nil
	if err != nil {
		return fmt.Errorf("write --cidfile: %w", err)
	}
	return nil
}

// abandon removes the file if no ID was written to it.
func (c *cidFile) abandon() {
	if c == nil || c.f == nil {
		return
	}
	c.f.Close()
	os.Remove(c.f.Name())
	c.f = nil
}

// addHealthFlags adds podman's --health-* flags and --wait-healthy.
func addHealthFlags(f *pflag.FlagSet, o *runOptions) {
	h := &o.Health
	f.StringVar(&h.URL, "health-url", "", "health check: HTTP GET from the host; 2xx/3xx is healthy (host \"guest\" is the container, e.g. http://guest:80/; rootless needs the port published)")
	f.StringVar(&h.Cmd, "health-cmd", "", "health check: command run in the container (shell string, or JSON array as podman); exit 0 is healthy")
	f.DurationVar(&h.Interval, "health-interval", health.DefaultInterval, "time between health checks")
	f.IntVar(&h.Retries, "health-retries", health.DefaultRetries, "failed checks in a row before the container is unhealthy")
	f.DurationVar(&h.StartPeriod, "health-start-period", 0, "time after start during which failed checks do not count")
	f.DurationVar(&h.Timeout, "health-timeout", health.DefaultTimeout, "time one health check may take")
	f.BoolVar(&o.waitHealthy, "wait-healthy", false, "with -d: return only once the container is healthy (fail if it turns unhealthy)")
}
