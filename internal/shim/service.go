package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cgroupstats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/engine"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

var empty = &ptypes.Empty{}

// service is the task API of one shim: one container (one VM) and the
// exec processes in it.
type service struct {
	// ctx is the shim's life: VMs and execs run under it, and end
	// ends it (shim exit).
	ctx    context.Context
	end    context.CancelFunc
	eng    *engine.Engine
	log    *slog.Logger
	events chan any
	sd     shutdown.Service

	mu sync.Mutex
	c  *container // nil before Create and after Delete
	// members are a CRI pod's containers, run in c's VM (pod.go).
	members map[string]*container
}

// container is the task: its VM and its processes.
type container struct {
	id, bundle, name string
	init             *proc
	execs            map[string]*proc
	vm               *supervisor.VM
	resize           chan [2]uint16
	// gone is closed once the VM is torn down (after its exit, or by
	// Delete of a task never started); teardownOnce guards it.
	gone         chan struct{}
	teardownOnce sync.Once

	// A pod member (pod.go): its slot disk and plan, in the sandbox's VM.
	member bool
	slot   int
	plan   *channel.Plan
	// A pod sandbox: which slot disk holds which member (guarded by
	// service.mu).
	slots map[int]string
}

// proc is the init process or an exec.
type proc struct {
	execID   string
	terminal bool
	stdin    string
	stdout   string
	stderr   string
	spec     *specs.Process // execs
	pipes    *pipes
	x        *engine.Exec // a started exec

	mu       sync.Mutex
	status   tasktypes.Status
	pid      uint32
	exitCode uint32
	exitedAt time.Time
	done     chan struct{} // closed on exit
}

func (p *proc) setExited(code uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == tasktypes.Status_STOPPED {
		return false
	}
	p.status, p.exitCode, p.exitedAt = tasktypes.Status_STOPPED, code, time.Now()
	close(p.done)
	return true
}

func (p *proc) snapshot() (tasktypes.Status, uint32, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.pid, p.exitCode, p.exitedAt
}

func newService(ctx context.Context, eng *engine.Engine, log *slog.Logger, pub shim.Publisher, sd shutdown.Service) (*service, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	// Not the plugin's context: containerd's shutdown cancels that only
	// after the callbacks below, one of which waits for the VM to end.
	life, end := context.WithCancel(namespaces.WithNamespace(context.Background(), ns))
	s := &service{ctx: life, end: end, eng: eng, log: log, events: make(chan any, 128), sd: sd}
	go s.forward(namespaces.WithNamespace(context.Background(), ns), pub)
	sd.RegisterCallback(func(context.Context) error {
		s.teardownAll()
		close(s.events)
		return nil
	})
	if address, err := shim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error { return shim.RemoveSocket(address) })
	}
	return s, nil
}

// RegisterTTRPC serves the task API.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// forward publishes events in order; containerd (and CRI through it) acts
// on them, TaskExit above all.
func (s *service) forward(ctx context.Context, pub shim.Publisher) {
	for e := range s.events {
		if err := pub.Publish(ctx, topic(e), e); err != nil {
			s.log.Warn("publish event", "topic", topic(e), "err", err)
		}
	}
	pub.Close()
}

func topic(e any) string {
	switch e.(type) {
	case *eventstypes.TaskCreate:
		return runtime.TaskCreateEventTopic
	case *eventstypes.TaskStart:
		return runtime.TaskStartEventTopic
	case *eventstypes.TaskExit:
		return runtime.TaskExitEventTopic
	case *eventstypes.TaskDelete:
		return runtime.TaskDeleteEventTopic
	case *eventstypes.TaskExecAdded:
		return runtime.TaskExecAddedEventTopic
	case *eventstypes.TaskExecStarted:
		return runtime.TaskExecStartedEventTopic
	case *eventstypes.TaskPaused:
		return runtime.TaskPausedEventTopic
	case *eventstypes.TaskResumed:
		return runtime.TaskResumedEventTopic
	}
	return "/tasks/unknown"
}

func (s *service) send(e any) {
	defer func() { recover() }() // events closed by shutdown
	s.events <- e
}

// get returns the container id and its process execID.
func (s *service) get(id, execID string) (*container, *proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	if m := s.members[id]; m != nil {
		c = m
	}
	if c == nil || c.id != id {
		return nil, nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "container %s", id)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "exec %s in container %s", execID, id)
	}
	return c, p, nil
}

// Create mounts the rootfs just long enough to make its disk, and
// launches the VM (host side and VMM) without starting the container.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "create %s from a checkpoint: not supported by fcvm (use fcvm snapshot)", r.ID)
	}
	if spec, err := readSpec(r.Bundle); err == nil && spec.Annotations[annotationCRIType] == criContainer {
		return s.createMember(ctx, r, spec) // pod.go
	}
	if s.c != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "this shim already runs container %s", s.c.id)
	}
	pp, err := openPipes(ctx, r.Stdin, r.Stdout, r.Stderr)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	c, err := s.create(ctx, r, pp)
	if err != nil {
		pp.Close()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "create %s: %v", r.ID, err)
	}
	s.c = c
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: c.init.pid,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	return &taskAPI.CreateTaskResponse{Pid: c.init.pid}, nil
}

func (s *service) create(ctx context.Context, r *taskAPI.CreateTaskRequest, pp *pipes) (*container, error) {
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	o, err := launchOptions(spec)
	if err != nil {
		return nil, err
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	o.Name = vmName(ns, r.ID)
	o.TTY = r.Terminal
	o.Interactive = r.Stdin != ""
	if o.Prebuilt, err = s.rootfsImage(ctx, r.Rootfs, filepath.Join(r.Bundle, "rootfs"), spec.Process); err != nil {
		return nil, err
	}
	o.Image = o.Prebuilt.ID
	vm, err := s.eng.Launch(s.ctx, o)
	if err != nil {
		return nil, err
	}
	c := &container{
		id: r.ID, bundle: r.Bundle, name: o.Name, vm: vm,
		execs:  map[string]*proc{},
		resize: make(chan [2]uint16, 1),
		gone:   make(chan struct{}),
		init: &proc{terminal: r.Terminal, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, pipes: pp,
			status: tasktypes.Status_CREATED, pid: uint32(vm.Record.VMM.PID), done: make(chan struct{})},
	}
	if o.PodSlots > 0 {
		c.slots = map[int]string{}
	}
	return c, nil
}

// maxSpec bounds the bundle's config.json.
const maxSpec = 4 << 20

func readSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	defer f.Close()
	var spec specs.Spec
	if err := json.NewDecoder(io.LimitReader(f, maxSpec)).Decode(&spec); err != nil {
		return nil, fmt.Errorf("read OCI spec %s: %w", f.Name(), err)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, errors.New("OCI spec has no process args: give a command")
	}
	return &spec, nil
}

// Annotations that size and connect the VM; any other fcvm.io/ one is an
// error, so a typo is not silently ignored.
const (
	annotationCPUs    = "fcvm.io/cpus"
	annotationMemory  = "fcvm.io/memory-mib"
	annotationNetwork = "fcvm.io/network"
	// annotationCRIType marks a CRI pod's sandbox or container, and
	// annotationSandboxID names a container's pod sandbox.
	annotationCRIType   = "io.kubernetes.cri.container-type"
	annotationSandboxID = "io.kubernetes.cri.sandbox-id"
	criSandbox          = "sandbox"
	criContainer        = "container"
)

// launchOptions maps the OCI spec onto fcvm's run options: the process
// replaces the image's entrypoint and cmd (containerd's client resolved
// them already), env, workdir and user as given. A network namespace
// given in the spec (CNI's, ctr --with-ns) is joined: the VM takes over
// its interface (--network ns:PATH). Without one the network is none,
// what a runc container without CNI gets.
func launchOptions(spec *specs.Spec) (supervisor.Options, error) {
	p := spec.Process
	o := supervisor.Options{
		// The disk is built later (rootfsImage); its ID then names it.
		Image:      "containerd-rootfs",
		Entrypoint: &p.Args[0],
		Cmd:        p.Args[1:],
		Env:        p.Env,
		Workdir:    p.Cwd,
		User:       fmt.Sprintf("%d:%d", p.User.UID, p.User.GID),
		CPUs:       1,
		MemoryMiB:  512,
		DiskMiB:    4096,
		VMM:        "auto",
		Network:    "none",
		Labels:     map[string]string{"io.containerd.runtime": RuntimeType},
		// The container's (and a pod's) host name; "" is the VM's ID.
		Hostname: spec.Hostname,
	}
	if p.ConsoleSize != nil {
		o.Rows, o.Cols = uint16(p.ConsoleSize.Height), uint16(p.ConsoleSize.Width)
	}
	switch t := spec.Annotations[annotationCRIType]; t {
	case "":
	case criSandbox:
		// The pod's VM: its containers' images go on spare disks.
		o.PodSlots = supervisor.MaxPodSlots
	default:
		return o, fmt.Errorf("CRI container type %q: fcvm runs a pod's sandbox as its VM and containers in it", t)
	}
	if path := specNetNS(spec); path != "" {
		if v, ok := spec.Annotations[annotationNetwork]; ok {
			return o, fmt.Errorf("annotation %s=%s: the container is given the network namespace %s already: drop the annotation", annotationNetwork, v, path)
		}
		o.Network = "ns:" + path
		// CRI's resolv.conf for the pod (its dns_config, or the host's):
		// the guest's container gets what it says.
		if err := specDNS(spec, &o.Shape); err != nil {
			return o, err
		}
	}
	for k, v := range spec.Annotations {
		if !strings.HasPrefix(k, "fcvm.io/") {
			continue
		}
		var err error
		switch k {
		case annotationCPUs:
			o.CPUs, err = strconv.Atoi(v)
		case annotationMemory:
			o.MemoryMiB, err = strconv.Atoi(v)
		case annotationNetwork:
			o.Network = v
		default:
			return o, fmt.Errorf("annotation %s: unknown (fcvm knows %s, %s and %s)", k, annotationCPUs, annotationMemory, annotationNetwork)
		}
		if err != nil {
			return o, fmt.Errorf("annotation %s=%q: want a number", k, v)
		}
	}
	return o, o.Validate()
}

// maxResolvConf bounds the resolv.conf the shim reads from the host.
const maxResolvConf = 64 << 10

// specDNS sets s's nameservers, search domains and options from the
// resolv.conf the spec binds at /etc/resolv.conf (CRI writes one per pod).
// A loopback nameserver is the host's own, which the guest cannot reach:
// it is left out, as `--network ns:` leaves it out.
func specDNS(spec *specs.Spec, s *channel.Shape) error {
	var src string
	for _, m := range spec.Mounts {
		if m.Destination == "/etc/resolv.conf" {
			src = m.Source
		}
	}
	if src == "" {
		return nil
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("read the pod's resolv.conf: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxResolvConf))
	if err != nil {
		return fmt.Errorf("read the pod's resolv.conf: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 2 {
			continue
		}
		switch fs[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(fs[1]); err == nil && !a.IsLoopback() {
				s.DNS = append(s.DNS, a.String())
			}
		case "search":
			s.DNSSearch = append(s.DNSSearch, fs[1:]...)
		case "options":
			s.DNSOptions = append(s.DNSOptions, fs[1:]...)
		}
	}
	return s.Validate()
}

// specNetNS is the path of the network namespace the spec puts the
// container in, "" for a new one (or none).
func specNetNS(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// Start starts the container (init) or an exec, and returns once it runs.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		return s.startExec(c, p)
	}
	if c.member {
		return s.startMember(ctx, c) // pod.go
	}
	if st, _, _, _ := p.snapshot(); st != tasktypes.Status_CREATED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "start %s: the container is %s, not created", r.ID, strings.ToLower(st.String()))
	}
	ready := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		stdio := supervisor.Stdio{Stdin: p.pipes.in(), Stdout: p.pipes.out(), Stderr: p.pipes.errw(), Resize: c.resize}
		code, err := c.vm.Run(s.ctx, stdio, func() {
			p.mu.Lock()
			p.status = tasktypes.Status_RUNNING
			p.mu.Unlock()
			close(ready)
		})
		if err != nil {
			s.log.Warn("container ended without an exit code", "id", c.id, "err", err)
			failed <- err
			code = 255
		}
		s.finish(c, code, err)
	}()
	select {
	case <-ready:
	case err := <-failed:
		return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "start %s: %v", r.ID, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// finish is the end of the init process: output closed, exit published,
// the VM torn down.
func (s *service) finish(c *container, code int, runErr error) {
	p := c.init
	c.vm.Finish(code, runErr)
	p.pipes.Close()
	if p.setExited(uint32(code)) {
		_, pid, ec, at := p.snapshot()
		s.send(&eventstypes.TaskExit{ContainerID: c.id, ID: c.id, Pid: pid, ExitStatus: ec, ExitedAt: protobuf.ToTimestamp(at)})
	}
	s.teardown(c)
	s.endMembers() // a pod's containers went with its VM
}

// teardown powers the VM off and removes everything it made; once.
func (s *service) teardown(c *container) {
	c.teardownOnce.Do(func() {
		s.mu.Lock()
		for _, p := range c.execs {
			p.mu.Lock()
			if p.x != nil {
				p.x.Close()
			}
			p.mu.Unlock()
		}
		s.mu.Unlock()
		c.vm.PowerOff(5 * time.Second)
		if err := c.vm.Teardown(true); err != nil {
			s.log.Warn("teardown", "id", c.id, "err", err)
		}
		close(c.gone)
	})
}

// teardownAll is the shim's exit (Shutdown, or SIGTERM): a VM still there
// goes with it, boundedly; what a shim that exits first leaves,
// containerd's `shim delete` reclaims.
func (s *service) teardownAll() {
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	if c == nil {
		s.endMembers()
		return
	}
	s.end() // a running container's Run returns, and finish tears down
	if st, _, _, _ := c.init.snapshot(); st == tasktypes.Status_CREATED {
		c.init.pipes.Close()
		s.teardown(c)
	}
	select {
	case <-c.gone:
	case <-time.After(30 * time.Second):
		s.log.Warn("VM still tearing down at shim exit", "id", c.id)
	}
}

func (s *service) startExec(c *container, p *proc) (*taskAPI.StartResponse, error) {
	if st, _, _, _ := c.init.snapshot(); st != tasktypes.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec in %s: the container is not running", c.id)
	}
	if st, _, _, _ := p.snapshot(); st != tasktypes.Status_CREATED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s: already started", p.execID)
	}
	pp, err := openPipes(s.ctx, p.stdin, p.stdout, p.stderr)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	req := channel.ExecRequest{
		Cmd: p.spec.Args, Env: p.spec.Env, Workdir: p.spec.Cwd,
		User:  fmt.Sprintf("%d:%d", p.spec.User.UID, p.spec.User.GID),
		Stdin: p.stdin != "", TTY: p.terminal,
	}
	if p.spec.ConsoleSize != nil {
		req.Rows, req.Cols = uint16(p.spec.ConsoleSize.Height), uint16(p.spec.ConsoleSize.Width)
	}
	var x *engine.Exec
	if c.member {
		x, err = s.eng.ExecMember(s.ctx, c.name, c.id, req)
	} else {
		x, err = s.eng.Exec(s.ctx, c.name, req)
	}
	if err != nil {
		pp.Close()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s in %s: %v", p.execID, c.id, err)
	}
	p.mu.Lock()
	p.pipes, p.x, p.status, p.pid = pp, x, tasktypes.Status_RUNNING, c.init.pid
	p.mu.Unlock()
	if in := pp.in(); in != nil {
		x.Stdin(in)
	}
	go func() {
		code, err := x.Wait(pp.out(), pp.errw())
		if err != nil {
			s.log.Warn("exec ended without an exit code", "id", c.id, "exec", p.execID, "err", err)
			fmt.Fprintf(pp.errw(), "fcvm: %v\n", err)
			code = 255
		}
		x.Close()
		pp.Close()
		if p.setExited(uint32(code)) {
			_, pid, ec, at := p.snapshot()
			s.send(&eventstypes.TaskExit{ContainerID: c.id, ID: p.execID, Pid: pid, ExitStatus: ec, ExitedAt: protobuf.ToTimestamp(at)})
		}
	}()
	s.send(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.execID, Pid: p.pid})
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// Delete removes a stopped process; for init, the container: it returns
// once the VM and everything it made on the host is gone.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" && c.member {
		return s.deleteMember(ctx, c) // pod.go
	}
	st, pid, code, at := p.snapshot()
	switch {
	case st == tasktypes.Status_RUNNING:
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "delete %s: the process is running: kill it first", r.ID)
	case r.ExecID != "":
		if st == tasktypes.Status_CREATED && p.pipes != nil {
			p.pipes.Close()
		}
		s.mu.Lock()
		delete(c.execs, r.ExecID)
		s.mu.Unlock()
		return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
	case st == tasktypes.Status_CREATED:
		// Never started: nothing runs in the VM; end it here.
		p.pipes.Close()
		c.vm.Finish(128+int(syscall.SIGKILL), nil)
		p.setExited(128 + uint32(syscall.SIGKILL))
		s.teardown(c)
		_, pid, code, at = p.snapshot()
	}
	select {
	case <-c.gone:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	s.c = nil
	s.mu.Unlock()
	s.send(&eventstypes.TaskDelete{ContainerID: c.id, Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)})
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Exec registers an exec process; Start runs it.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, _, err := s.get(r.ID, "")
	if err != nil {
		return nil, err
	}
	if st, _, _, _ := c.init.snapshot(); st != tasktypes.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec in %s: the container is not running (%s)", r.ID, strings.ToLower(st.String()))
	}
	if r.Spec == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: no process spec", r.ExecID)
	}
	var spec specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &spec); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: process spec: %v", r.ExecID, err)
	}
	if len(spec.Args) == 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: no command", r.ExecID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s", r.ExecID)
	}
	if len(c.execs) >= maxExecs {
		return nil, errdefs.ToGRPCf(errdefs.ErrResourceExhausted, "exec in %s: %d execs already: delete finished ones", r.ID, maxExecs)
	}
	c.execs[r.ExecID] = &proc{execID: r.ExecID, terminal: r.Terminal, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr,
		spec: &spec, status: tasktypes.Status_CREATED, done: make(chan struct{})}
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// maxExecs bounds the exec processes one container keeps.
const maxExecs = 256

// ResizePty sets the size of a process's terminal.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	sz := [2]uint16{uint16(r.Height), uint16(r.Width)}
	if r.ExecID == "" && c.member {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "resize %s: a pod container's own terminal keeps its first size (an exec's resizes)", r.ID)
	}
	if r.ExecID == "" {
		// Keep only the latest size for the attach loop.
		select {
		case <-c.resize:
		default:
		}
		c.resize <- sz
		return empty, nil
	}
	p.mu.Lock()
	x := p.x
	p.mu.Unlock()
	if x == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "resize exec %s: not started", r.ExecID)
	}
	if err := x.Resize(sz[0], sz[1]); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return empty, nil
}

// State reports a process.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, pid, code, at := p.snapshot()
	if st == tasktypes.Status_RUNNING && r.ExecID == "" {
		if rec, err := s.eng.Inspect(c.name); err == nil && rec.Effective() == state.StatusPaused {
			st = tasktypes.Status_PAUSED
		}
	}
	return &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: c.bundle, Pid: pid, Status: st,
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
		ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at),
	}, nil
}

// Pause freezes the VM's vCPUs.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return s.vmOp(ctx, r.ID, s.eng.Pause, func(id string) any { return &eventstypes.TaskPaused{ContainerID: id} })
}

// Resume thaws the VM.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return s.vmOp(ctx, r.ID, s.eng.Unpause, func(id string) any { return &eventstypes.TaskResumed{ContainerID: id} })
}

// vmOp applies an engine verb to container id's VM and publishes the
// event that says it happened.
func (s *service) vmOp(ctx context.Context, id string, op func(context.Context, string) error, event func(string) any) (*ptypes.Empty, error) {
	c, _, err := s.get(id, "")
	if err != nil {
		return nil, err
	}
	if c.member {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "%s is a pod's container: pause or resume the pod's sandbox, whose VM it runs in", id)
	}
	if err := op(ctx, c.name); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	s.send(event(c.id))
	return empty, nil
}

// Kill signals the container's main process (through the guest agent) or
// an exec. A created container that was never started is ended here.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	sig := syscall.Signal(r.Signal)
	if sig <= 0 || sig > 64 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "kill %s: signal %d", r.ID, r.Signal)
	}
	switch st, _, _, _ := p.snapshot(); {
	case st == tasktypes.Status_STOPPED:
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "kill %s: process already finished", r.ID)
	case r.ExecID == "" && c.member:
		if err := s.killMember(ctx, c, sig); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
		}
	case r.ExecID != "":
		p.mu.Lock()
		x := p.x
		p.mu.Unlock()
		if x == nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "kill exec %s: not started", r.ExecID)
		}
		if err := x.Signal(sig); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	case st == tasktypes.Status_CREATED:
		p.pipes.Close()
		c.vm.Finish(128+int(sig), nil)
		if p.setExited(128 + uint32(sig)) {
			_, pid, ec, at := p.snapshot()
			s.send(&eventstypes.TaskExit{ContainerID: c.id, ID: c.id, Pid: pid, ExitStatus: ec, ExitedAt: protobuf.ToTimestamp(at)})
		}
		go s.teardown(c)
	default:
		if err := s.eng.Kill(ctx, c.name, sig); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
		}
	}
	return empty, nil
}

// Pids lists the task's host processes: the VMM, which holds every
// process of the container.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, _, err := s.get(r.ID, "")
	if err != nil {
		return nil, err
	}
	return &taskAPI.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: c.init.pid}}}, nil
}

// CloseIO ends a process's stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	_, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	pp := p.pipes
	p.mu.Unlock()
	if r.Stdin && pp != nil {
		pp.closeStdin()
	}
	return empty, nil
}

// Checkpoint is not supported: fcvm snapshots whole VMs (fcvm snapshot).
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint %s: not supported by fcvm (use fcvm snapshot create)", r.ID)
}

// Update is not supported: a VM's size is fixed at boot.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "update %s: a VM's resources are fixed at boot", r.ID)
}

// Wait blocks until the process exits.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, _, code, at := p.snapshot()
	return &taskAPI.WaitResponse{ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Stats reports what the host sees of the VM, in cgroup v2 metrics
// form: memory is the VMM's resident set (guest memory the guest touched
// plus the VMM's own), usage limit the VM's memory size, one process (the
// VMM). The guest's own view (its processes, their CPU time) is not there.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, _, err := s.get(r.ID, "")
	if err != nil {
		return nil, err
	}
	rec, err := s.eng.Inspect(c.name)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	mem, err := rec.VMM.Memory()
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "stats of %s: the VMM is not running: %v", r.ID, err)
	}
	stats, err := typeurl.MarshalAny(&cgroupstats.Metrics{
		Pids:   &cgroupstats.PidsStat{Current: 1},
		Memory: &cgroupstats.MemoryStat{Usage: mem.RSSKiB << 10, UsageLimit: uint64(rec.MemoryMiB) << 20},
	})
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(stats)}, nil
}

// Connect tells containerd the shim's and the task's PIDs.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if c, _, err := s.get(r.ID, ""); err == nil {
		pid = c.init.pid
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

// Shutdown ends the shim once it holds no container (exec processes do
// not count: they end with their container).
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	busy := s.c != nil || len(s.members) > 0
	s.mu.Unlock()
	if !busy {
		s.sd.Shutdown()
	}
	return empty, nil
}

func isNotFound(err error) bool { return errors.Is(err, state.ErrNotFound) }
