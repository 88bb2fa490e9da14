package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/engine"
	"github.com/fcvm/fcvm/internal/state"
)

type inspectOptions struct {
	names  []string
	format string
}

func newInspectCmd(env *Env) *cobra.Command {
	var o inspectOptions
	cmd := &cobra.Command{
		Use:   "inspect NAME|ID...",
		Short: "Show VMs as podman inspect shows containers, with fcvm's record",
		Long: `Print a JSON array with a document per VM named, in podman inspect's shape
for the fields a VM has: Id, Name, Created, Path, Args, Image (the image ID),
ImageName, RestartCount, State {Status, Running, Paused, Restarting,
OOMKilled, Dead, Pid, ExitCode, Error, StartedAt, FinishedAt, Health},
Config {Hostname, User, Env, Cmd, Image, WorkingDir, Entrypoint, Labels,
StopSignal, StopTimeout} (Entrypoint and StopSignal as podman 4: a string
and a number), NetworkSettings {Ports}, Mounts. State.Pid is the
VMM's PID on the host: the process that is the VM. A VM is named by its
name, its full ID or a unique ID prefix.

"Fcvm" holds fcvm's own record: "status" is the effective status (dead when
the supervisor is gone; then "recorded_status" says what the record
claimed), and for a VM whose VMM is running "memory" has the VMM's rss_kib
and pss_kib from /proc/PID/smaps_rollup.

--format takes a Go template run once per VM over the document's fields, as
podman's: '{{.State.Pid}} {{.State.Running}} {{.NetworkSettings.Ports}}',
and fcvm's record by its Go fields: '{{.Fcvm.Status}} {{.Fcvm.Memory.PSSKiB}}'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runInspect(cmd.Context(), env, o)
		},
	}
	cmd.Flags().StringVarP(&o.format, "format", "f", "", "a Go template per VM instead of JSON")
	return cmd
}

// inspectDoc is a VM in podman's inspect shape: the Go field names are
// podman's JSON keys, so templates read as podman's do.
type inspectDoc struct {
	Id              string                 `json:"Id"` //lint:ignore ST1003 podman's key, which templates name
	Created         time.Time              `json:"Created"`
	Path            string                 `json:"Path"`
	Args            []string               `json:"Args"`
	State           inspectState           `json:"State"`
	Image           string                 `json:"Image"`
	ImageName       string                 `json:"ImageName"`
	Name            string                 `json:"Name"`
	RestartCount    int                    `json:"RestartCount"`
	Mounts          []inspectMount         `json:"Mounts"`
	NetworkSettings inspectNetworkSettings `json:"NetworkSettings"`
	Config          inspectConfig          `json:"Config"`
	// Fcvm is fcvm's own record.
	Fcvm inspectJSON `json:"Fcvm"`
}

type inspectState struct {
	Status     string         `json:"Status"`
	Running    bool           `json:"Running"`
	Paused     bool           `json:"Paused"`
	Restarting bool           `json:"Restarting"`
	OOMKilled  bool           `json:"OOMKilled"`
	Dead       bool           `json:"Dead"`
	Pid        int            `json:"Pid"`
	ExitCode   int            `json:"ExitCode"`
	Error      string         `json:"Error"`
	StartedAt  time.Time      `json:"StartedAt"`
	FinishedAt time.Time      `json:"FinishedAt"`
	Health     *inspectHealth `json:"Health,omitempty"`
}

type inspectHealth struct {
	Status        string `json:"Status"`
	FailingStreak int    `json:"FailingStreak"`
	Log           []any  `json:"Log"`
}

type inspectMount struct {
	Type        string   `json:"Type"`
	Source      string   `json:"Source"`
	Destination string   `json:"Destination"`
	Driver      string   `json:"Driver"`
	Mode        string   `json:"Mode"`
	Options     []string `json:"Options"`
	RW          bool     `json:"RW"`
	Propagation string   `json:"Propagation"`
}

type inspectPortBinding struct {
	HostIp   string `json:"HostIp"` //lint:ignore ST1003 podman's key
	HostPort string `json:"HostPort"`
}

type inspectNetworkSettings struct {
	Ports map[string][]inspectPortBinding `json:"Ports"`
}

type inspectConfig struct {
	Hostname   string   `json:"Hostname"`
	User       string   `json:"User"`
	Env        []string `json:"Env"`
	Cmd        []string `json:"Cmd"`
	Image      string   `json:"Image"`
	WorkingDir string   `json:"WorkingDir"`
	// Entrypoint and StopSignal have podman 4's types (the podman of
	// Debian 12): the entrypoint joined by spaces, the signal's number.
	Entrypoint  string            `json:"Entrypoint"`
	Labels      map[string]string `json:"Labels"`
	StopSignal  uint              `json:"StopSignal"`
	StopTimeout uint              `json:"StopTimeout"`
}

// inspectJSON is the record as stored, with the status readers should
// believe and, for a live VMM, its memory use.
type inspectJSON struct {
	*state.Record
	// Status shadows the stored status: encoding/json prefers the less
	// nested field.
	Status         state.Status  `json:"status"`
	RecordedStatus state.Status  `json:"recorded_status,omitempty"`
	Memory         *state.Memory `json:"memory,omitempty"`
}

func newInspectDoc(e *engine.Engine, r *state.Record) inspectDoc {
	j := inspectJSON{Record: r, Status: r.Effective()}
	if j.Status != r.Status {
		j.RecordedStatus = r.Status
	}
	if j.Status.Live() {
		if m, err := r.VMM.Memory(); err == nil {
			j.Memory = &m
		}
	}
	d := inspectDoc{
		Id:           r.ID,
		Created:      r.Created,
		Args:         []string{},
		Image:        r.ImageID,
		ImageName:    r.Image,
		Name:         r.Name,
		RestartCount: r.Restarts,
		Mounts:       []inspectMount{},
		Fcvm:         j,
		NetworkSettings: inspectNetworkSettings{
			Ports: map[string][]inspectPortBinding{},
		},
		Config: inspectConfig{
			Image:       r.Image,
			Labels:      r.Labels,
			Env:         []string{},
			Cmd:         []string{},
			StopSignal:  uint(syscall.SIGTERM),
			StopTimeout: 10,
		},
	}
	if len(r.Cmd) > 0 {
		d.Path, d.Args = r.Cmd[0], r.Cmd[1:]
	}
	if r.StopSignal != 0 {
		d.Config.StopSignal = uint(r.StopSignal)
	}
	if r.StopTimeout != nil {
		d.Config.StopTimeout = uint(*r.StopTimeout)
	}
	if d.Config.Labels == nil {
		d.Config.Labels = map[string]string{}
	}
	if p := e.Plan(r); p != nil {
		d.Config.Hostname, d.Config.User, d.Config.WorkingDir = p.Hostname, p.User, p.Workdir
		d.Config.Env = append(d.Config.Env, p.Env...)
		d.Config.Cmd = append(d.Config.Cmd, p.Cmd...)
		d.Config.Entrypoint = strings.Join(p.Entrypoint, " ")
	}
	st := &d.State
	st.Status = string(j.Status)
	st.Pid = r.VMM.PID
	switch j.Status {
	case state.StatusRunning:
		st.Running = true
	case state.StatusPaused:
		st.Running, st.Paused = true, true
	case state.StatusStarting:
		st.Status = "created"
	case state.StatusDead:
		st.Status, st.Dead = "exited", true
	}
	if !st.Running {
		st.Pid = 0
	}
	if r.ExitCode != nil {
		st.ExitCode = *r.ExitCode
	}
	st.Error, st.StartedAt, st.FinishedAt = r.Error, r.Started, r.Finished
	if r.Health != "" {
		st.Health = &inspectHealth{Status: r.Health, Log: []any{}}
	}
	for _, p := range r.Network.Ports {
		k := strconv.Itoa(p.GuestPort) + "/" + p.Proto
		d.NetworkSettings.Ports[k] = append(d.NetworkSettings.Ports[k], inspectPortBinding{HostIp: p.HostIP, HostPort: strconv.Itoa(p.HostPort)})
	}
	for _, v := range r.Volumes {
		m := inspectMount{Type: "bind", Source: v.Host, Destination: v.Guest, Options: []string{"rbind"}, RW: !v.ReadOnly, Propagation: "rprivate"}
		if v.ReadOnly {
			m.Mode = "ro"
		}
		d.Mounts = append(d.Mounts, m)
	}
	return d
}

func runInspect(_ context.Context, env *Env, o inspectOptions) error {
	e := env.engine()
	if o.format != "" {
		// Fail on a bad template before printing anything.
		if _, err := template.New("format").Parse(o.format); err != nil {
			return fmt.Errorf("parse --format: %w", err)
		}
	}
	// Like podman: print what was found, fail for what was not.
	out := []inspectDoc{}
	var errs []error
	for _, name := range o.names {
		r, err := e.Inspect(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, newInspectDoc(e, r))
	}
	if o.format != "" {
		if err := writeTemplate(env.Stdout, o.format, out); err != nil {
			return err
		}
	} else if err := writeJSON(env.Stdout, out); err != nil {
		return err
	}
	return errors.Join(errs...)
}
