package shim

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/storage"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// CRI pods. containerd's CRI plugin creates a pod's sandbox container
// first, then its containers, every one annotated with the sandbox's ID;
// the shim's start action sends them all to the sandbox's shim (main.go).
// The sandbox is the pod's VM, booted in the pod's network namespace (the
// one CNI set up) with spare slot disks; its own process (the pause
// image's) is the VM's container, whose network, IPC and UTS namespaces
// the pod's containers join. A container's image disk (built from its
// snapshot as stage A builds one, and cached alike) is written into a free
// slot disk, and the guest agent starts it as a pod member on that disk.
// Its stdio go through the FIFOs containerd gives, as a VM's container's
// do; exec, kill, wait and delete work on it by its ID.

// podMounts are the mounts CRI gives every container, which the pod's VM
// provides itself: the pod's hosts, hostname and resolv.conf files (the
// VM's container's, which members bind) and a /dev/shm of their own.
var podMounts = map[string]bool{"/etc/hosts": true, "/etc/hostname": true, "/etc/resolv.conf": true, "/dev/shm": true}

// memberPlan is a pod container's process, as the guest runs it. Its
// fcvm.io/ annotations are the pod's, which CRI copies onto every
// container: they sized the pod's VM, checked there.
func memberPlan(spec *specs.Spec, slot int, tty, stdin bool) (*channel.Plan, error) {
	for _, m := range spec.Mounts {
		if (m.Type == "bind" || m.Type == "rbind" || hasOption(m.Options, "bind") || hasOption(m.Options, "rbind")) && !podMounts[m.Destination] {
			return nil, fmt.Errorf("mount of %s at %s: host directories in a pod's containers are not supported by fcvm yet", m.Source, m.Destination)
		}
	}
	p := spec.Process
	plan := &channel.Plan{
		Entrypoint:  p.Args[:1],
		Cmd:         p.Args[1:],
		Env:         p.Env,
		Workdir:     p.Cwd,
		User:        fmt.Sprintf("%d:%d", p.User.UID, p.User.GID),
		TTY:         tty,
		Interactive: stdin,
		Slot:        supervisor.SlotID(slot),
	}
	if p.ConsoleSize != nil {
		plan.Rows, plan.Cols = uint16(p.ConsoleSize.Height), uint16(p.ConsoleSize.Width)
	}
	plan.Limits = memberLimits(spec)
	return plan, nil
}

// memberLimits are the container's CPU and memory limits (Kubernetes'
// resources, as CRI puts them in the spec), which the guest applies to
// the member's cgroup inside the VM; the VM's own size is the pod's.
// CPU shares are left out: they weigh the container against the other
// pods of a host, and in a VM of its own pod there are none (CRI's
// default of 2 would starve it against the guest's own processes).
func memberLimits(spec *specs.Spec) *channel.Limits {
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return nil
	}
	r := spec.Linux.Resources
	var l channel.Limits
	if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		l.MemoryBytes = *r.Memory.Limit
	}
	if c := r.CPU; c != nil && c.Quota != nil && *c.Quota > 0 {
		l.CPUQuota = *c.Quota
		if c.Period != nil {
			l.CPUPeriod = *c.Period
		}
	}
	if l == (channel.Limits{}) {
		return nil
	}
	return &l
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// createMember is Create of a pod's container; s.mu is held.
func (s *service) createMember(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*taskAPI.CreateTaskResponse, error) {
	sb := s.c
	want := spec.Annotations[annotationSandboxID]
	if sb == nil || sb.id != want || sb.slots == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "create %s: its pod sandbox %s does not run in this shim", r.ID, want)
	}
	if st, _, _, _ := sb.init.snapshot(); st != tasktypes.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "create %s: its pod sandbox %s is %s, not running", r.ID, want, strings.ToLower(st.String()))
	}
	if s.members[r.ID] != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	slot := -1
	for i := range supervisor.MaxPodSlots {
		if _, used := sb.slots[i]; !used {
			slot = i
			break
		}
	}
	if slot < 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrResourceExhausted, "create %s: the pod's VM holds %d containers already: remove exited ones", r.ID, supervisor.MaxPodSlots)
	}
	plan, err := memberPlan(spec, slot, r.Terminal, r.Stdin != "")
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "create %s: %v", r.ID, err)
	}
	pp, err := openPipes(ctx, r.Stdin, r.Stdout, r.Stderr)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	img, err := s.rootfsImage(ctx, r.Rootfs, filepath.Join(r.Bundle, "rootfs"), spec.Process)
	if err == nil {
		err = storage.FillSlot(sb.vm.SlotPath(slot), img.Disk)
	}
	if err != nil {
		pp.Close()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "create %s: %v", r.ID, err)
	}
	c := &container{
		id: r.ID, bundle: r.Bundle, name: sb.name, vm: sb.vm, member: true, slot: slot, plan: plan,
		execs: map[string]*proc{},
		gone:  make(chan struct{}),
		init: &proc{terminal: r.Terminal, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, pipes: pp,
			status: tasktypes.Status_CREATED, pid: sb.init.pid, done: make(chan struct{})},
	}
	sb.slots[slot] = r.ID
	if s.members == nil {
		s.members = map[string]*container{}
	}
	s.members[r.ID] = c
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: c.init.pid,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	return &taskAPI.CreateTaskResponse{Pid: c.init.pid}, nil
}

// startMember starts a pod's container in the VM; its output goes to its
// FIFOs until it exits.
func (s *service) startMember(ctx context.Context, c *container) (*taskAPI.StartResponse, error) {
	p := c.init
	if st, _, _, _ := p.snapshot(); st != tasktypes.Status_CREATED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "start %s: the container is %s, not created", c.id, strings.ToLower(st.String()))
	}
	if err := s.eng.StartMember(ctx, c.name, c.id, c.plan); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "start %s: %v", c.id, err)
	}
	p.mu.Lock()
	p.status = tasktypes.Status_RUNNING
	p.mu.Unlock()
	go func() {
		code, err := s.eng.AttachMember(s.ctx, c.name, c.id, p.pipes.in(), p.pipes.out(), p.pipes.errw())
		if err != nil {
			s.log.Warn("pod container ended without an exit code", "id", c.id, "err", err)
			code = 255
		}
		s.finishMember(c, code)
	}()
	s.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// finishMember is the end of a pod's container: output closed, exit
// published.
func (s *service) finishMember(c *container, code int) {
	p := c.init
	p.pipes.Close()
	if p.setExited(uint32(code)) {
		_, pid, ec, at := p.snapshot()
		s.send(&eventstypes.TaskExit{ContainerID: c.id, ID: c.id, Pid: pid, ExitStatus: ec, ExitedAt: protobuf.ToTimestamp(at)})
	}
}

// killMember signals a pod's container; one never started is ended here.
func (s *service) killMember(ctx context.Context, c *container, sig syscall.Signal) error {
	if st, _, _, _ := c.init.snapshot(); st == tasktypes.Status_CREATED {
		s.finishMember(c, 128+int(sig))
		return nil
	}
	return s.eng.SignalMember(ctx, c.name, c.id, sig)
}

// deleteMember removes an exited pod container from the VM (its root,
// mounts and slot) and from the shim.
func (s *service) deleteMember(ctx context.Context, c *container) (*taskAPI.DeleteResponse, error) {
	st, pid, code, at := c.init.snapshot()
	if st == tasktypes.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "delete %s: the process is running: kill it first", c.id)
	}
	freeSlot := true
	if st == tasktypes.Status_CREATED {
		c.init.pipes.Close()
		c.init.setExited(128 + uint32(syscall.SIGKILL))
		_, pid, code, at = c.init.snapshot()
	} else if err := s.eng.RemoveMember(ctx, c.name, c.id); err != nil {
		// A VM that has gone took the member with it. One that has not
		// may still have the image mounted: its slot is not written
		// again (the pod has one fewer).
		s.log.Warn("remove pod container from its VM; its slot disk stays taken", "id", c.id, "err", err)
		freeSlot = false
	}
	s.mu.Lock()
	delete(s.members, c.id)
	if freeSlot && s.c != nil && s.c.slots != nil && s.c.slots[c.slot] == c.id {
		delete(s.c.slots, c.slot)
	}
	s.mu.Unlock()
	close(c.gone)
	s.send(&eventstypes.TaskDelete{ContainerID: c.id, Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)})
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// endMembers ends what the shim keeps of its pod's containers when the
// pod's VM goes: their output and waits.
func (s *service) endMembers() {
	s.mu.Lock()
	var ms []*container
	for _, m := range s.members {
		ms = append(ms, m)
	}
	s.mu.Unlock()
	for _, m := range ms {
		s.finishMember(m, 128+int(syscall.SIGKILL))
	}
}
