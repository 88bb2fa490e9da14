package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/state"
)

type lsOptions struct {
	all     bool
	json    bool
	quiet   bool
	noTrunc bool
	format  string
	filters []string  // KEY=VALUE, see lsFilter
	now     time.Time // "3 seconds ago" is relative to this; tests fix it
}

func newLsCmd(env *Env) *cobra.Command {
	var o lsOptions
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"ps"},
		Short:   "List VMs",
		Long: `List VMs, oldest first, like podman ps.

Without -a only VMs that should be running are shown: starting, running,
stopping, and dead ones (their supervisor is gone; reclaim them with fcvm rm
or fcvm gc). -a adds created and exited VMs.

--json prints a stable array of objects (keys in snake_case; see the lsJSON
type in the source). --format takes "json" or a Go template over the table's
columns: {{.ID}} {{.Image}} {{.Command}} {{.Created}} {{.Status}} {{.Health}}
{{.Ports}} {{.Names}} {{.Snapshot}}.

--filter KEY=VALUE (repeatable; different keys must all match, repeats of
one key are alternatives, as in podman): id=PREFIX, name=REGEXP,
status=STATUS (implies -a), label=KEY or label=KEY=VALUE, health=STATE,
snapshot=TAG.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.now = time.Now()
			return runLs(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.all, "all", "a", false, "show all VMs, not only running ones")
	f.BoolVar(&o.json, "json", false, "print JSON")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print IDs only")
	f.BoolVar(&o.noTrunc, "no-trunc", false, "do not shorten IDs and commands")
	f.StringArrayVarP(&o.filters, "filter", "f", nil, "show only VMs that match, e.g. status=exited or label=app=web")
	f.StringVar(&o.format, "format", "", `"json" or a Go template, e.g. '{{.Names}} {{.Status}}'`)
	return cmd
}

func runLs(_ context.Context, env *Env, o lsOptions) error {
	match, all, err := lsFilter(o.filters)
	if err != nil {
		return err
	}
	recs, err := env.engine().List()
	if err != nil {
		var re *state.RecordError
		if !errors.As(err, &re) {
			return err
		}
		// One bad file must not hide every other VM.
		for _, e := range unjoin(err) {
			fmt.Fprintf(env.Stderr, "fcvm: warning: skipping %v\n", e)
		}
	}
	var shown []*state.Record
	var statuses []state.Status
	for _, r := range recs {
		s := r.Effective()
		if (o.all || all || s.Live() || s == state.StatusDead) && match(r, s) {
			shown = append(shown, r)
			statuses = append(statuses, s)
		}
	}

	switch {
	case o.json || o.format == "json":
		out := make([]lsJSON, len(shown))
		for i, r := range shown {
			out[i] = newLsJSON(r, statuses[i])
		}
		return writeJSON(env.Stdout, out)
	case o.quiet:
		bw := bufio.NewWriter(env.Stdout)
		for _, r := range shown {
			fmt.Fprintln(bw, o.id(r))
		}
		return bw.Flush()
	case o.format != "":
		rows := make([]lsRow, len(shown))
		for i, r := range shown {
			rows[i] = o.row(r, statuses[i])
		}
		return writeTemplate(env.Stdout, o.format, rows)
	}

	var withHealth, withSnapshot bool
	for _, r := range shown {
		withHealth = withHealth || r.Health != ""
		withSnapshot = withSnapshot || r.Snapshot != ""
	}
	// tabwriter writes cell by cell: buffer, or a terminal gets
	// thousands of tiny writes.
	bw := bufio.NewWriter(env.Stdout)
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
	line := func(cols ...string) {
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	cols := func(id, image, command, created, status, health, ports, snapshot, names string) []string {
		c := []string{id, image, command, created, status}
		if withHealth {
			c = append(c, health)
		}
		c = append(c, ports)
		if withSnapshot {
			c = append(c, snapshot)
		}
		return append(c, names)
	}
	line(cols("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "HEALTH", "PORTS", "SNAPSHOT", "NAMES")...)
	for i, r := range shown {
		w := o.row(r, statuses[i])
		line(cols(w.ID, w.Image, w.Command, w.Created, w.Status, w.Health, w.Ports, w.Snapshot, w.Names)...)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return bw.Flush()
}

// lsFilter compiles --filter flags into a predicate. all is true when a
// status filter makes -a implicit.
func lsFilter(filters []string) (match func(*state.Record, state.Status) bool, all bool, err error) {
	byKey := map[string][]func(*state.Record, state.Status) bool{}
	for _, f := range filters {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, false, fmt.Errorf("parse --filter %q: want KEY=VALUE", f)
		}
		var m func(*state.Record, state.Status) bool
		switch key {
		case "id":
			m = func(r *state.Record, _ state.Status) bool { return strings.HasPrefix(r.ID, val) }
		case "name":
			re, err := regexp.Compile(val)
			if err != nil {
				return nil, false, fmt.Errorf("parse --filter %q: %w", f, err)
			}
			m = func(r *state.Record, _ state.Status) bool { return re.MatchString(r.Name) }
		case "status":
			switch state.Status(val) {
			case state.StatusCreated, state.StatusStarting, state.StatusRunning, state.StatusPaused, state.StatusStopping, state.StatusExited, state.StatusDead:
			default:
				return nil, false, fmt.Errorf("parse --filter %q: status is one of created, starting, running, paused, stopping, exited, dead", f)
			}
			all = true
			m = func(_ *state.Record, s state.Status) bool { return s == state.Status(val) }
		case "label":
			k, v, hasValue := strings.Cut(val, "=")
			m = func(r *state.Record, _ state.Status) bool {
				got, ok := r.Labels[k]
				return ok && (!hasValue || got == v)
			}
		case "health":
			m = func(r *state.Record, _ state.Status) bool { return r.Health == val }
		case "snapshot":
			m = func(r *state.Record, _ state.Status) bool { return r.Snapshot == val }
		default:
			return nil, false, fmt.Errorf("parse --filter %q: unknown key %q: use id, name, status, label, health or snapshot", f, key)
		}
		byKey[key] = append(byKey[key], m)
	}
	return func(r *state.Record, s state.Status) bool {
		for _, alts := range byKey {
			if !slices.ContainsFunc(alts, func(m func(*state.Record, state.Status) bool) bool { return m(r, s) }) {
				return false
			}
		}
		return true
	}, all, nil
}

// lsRow is one line of the table, and what --format templates see.
type lsRow struct {
	ID, Image, Command, Created, Status, Health, Ports, Names, Snapshot string
}

func (o lsOptions) row(r *state.Record, s state.Status) lsRow {
	cmd := strings.Join(r.Cmd, " ")
	if !o.noTrunc && len(cmd) > 20 {
		cmd = cmd[:17] + "..."
	}
	return lsRow{
		ID:       o.id(r),
		Image:    r.Image,
		Command:  cmd,
		Created:  humanDuration(o.now.Sub(r.Created)) + " ago",
		Status:   humanStatus(r, s, o.now),
		Health:   r.Health,
		Ports:    formatPorts(r.Network.Ports),
		Names:    r.Name,
		Snapshot: r.Snapshot,
	}
}

func (o lsOptions) id(r *state.Record) string {
	if o.noTrunc {
		return r.ID
	}
	return r.ShortID()
}

// humanStatus is podman's STATUS column: "Up 3 minutes", "Exited (7) 2
// seconds ago".
func humanStatus(r *state.Record, s state.Status, now time.Time) string {
	switch s {
	case state.StatusRunning:
		since := r.Started
		if since.IsZero() {
			since = r.Created
		}
		return "Up " + humanDuration(now.Sub(since))
	case state.StatusExited:
		out := "Exited"
		if r.ExitCode != nil {
			out += " (" + strconv.Itoa(*r.ExitCode) + ")"
		}
		if !r.Finished.IsZero() {
			out += " " + humanDuration(now.Sub(r.Finished)) + " ago"
		}
		return out
	case "":
		return "Unknown"
	default:
		// Created, Starting, Stopping, Dead.
		return strings.ToUpper(string(s[:1])) + string(s[1:])
	}
}

// formatPorts is podman's PORTS column: "127.0.0.1:8080->80/tcp, ...".
func formatPorts(ports []state.Port) string {
	out := make([]string, len(ports))
	for i, p := range ports {
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		proto := p.Proto
		if proto == "" {
			proto = "tcp"
		}
		out[i] = fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.GuestPort, proto)
	}
	return strings.Join(out, ", ")
}

// lsJSON is one VM in the output of fcvm ls --json, which is an array of
// these, oldest first. The schema is stable: keys are only ever added.
// Every key is always present; times are RFC 3339, null when the event has
// not happened.
//
//	id         full ID, 64 hex digits
//	name       the VM's name
//	image      the image reference as given to fcvm run
//	image_id   the image's manifest digest ("" if not yet pulled)
//	command    the command run in the container (array)
//	status     created, starting, running, stopping, exited or dead (the
//	           supervisor died; fcvm rm or fcvm gc reclaim it)
//	exit_code  the container's exit code, null unless exited with one
//	error      why the VM failed, "" if it did not
//	created, started, finished
//	pid        the supervisor's PID as recorded (0 if none)
//	vmm_pid    the VMM's PID as recorded (0 if none)
//	driver     qemu or firecracker
//	ports      published ports: [{host_ip, host_port, guest_port, proto}]
//	network    {mode, host_ip, guest_ip}: mode is rootless, bridged or none
//	health     "", starting, healthy or unhealthy
//	snapshot   for a clone, the snapshot tag it came from, else ""
//	serve_pid  for a clone, the memory server's PID, else 0
//	labels     {key: value}, {} if none
type lsJSON struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Image    string            `json:"image"`
	ImageID  string            `json:"image_id"`
	Command  []string          `json:"command"`
	Status   state.Status      `json:"status"`
	ExitCode *int              `json:"exit_code"`
	Error    string            `json:"error"`
	Created  time.Time         `json:"created"`
	Started  *time.Time        `json:"started"`
	Finished *time.Time        `json:"finished"`
	PID      int               `json:"pid"`
	VMMPID   int               `json:"vmm_pid"`
	Driver   string            `json:"driver"`
	Ports    []state.Port      `json:"ports"`
	Network  lsNetwork         `json:"network"`
	Health   string            `json:"health"`
	Snapshot string            `json:"snapshot"`
	ServePID int               `json:"serve_pid"`
	Labels   map[string]string `json:"labels"`
}

type lsNetwork struct {
	Mode    string `json:"mode"`
	HostIP  string `json:"host_ip"`
	GuestIP string `json:"guest_ip"`
}

func newLsJSON(r *state.Record, s state.Status) lsJSON {
	j := lsJSON{
		ID: r.ID, Name: r.Name, Image: r.Image, ImageID: r.ImageID,
		Command: r.Cmd, Status: s, ExitCode: r.ExitCode, Error: r.Error,
		Created: r.Created, Started: timeOrNil(r.Started), Finished: timeOrNil(r.Finished),
		PID: r.Supervisor.PID, VMMPID: r.VMM.PID, Driver: r.Driver,
		Ports:   r.Network.Ports,
		Network: lsNetwork{Mode: r.Network.Mode, HostIP: r.Network.HostIP, GuestIP: r.Network.GuestIP},
		Health:  r.Health, Snapshot: r.Snapshot, ServePID: r.ServePID, Labels: r.Labels,
	}
	if j.Command == nil {
		j.Command = []string{}
	}
	if j.Ports == nil {
		j.Ports = []state.Port{}
	}
	if j.Labels == nil {
		j.Labels = map[string]string{}
	}
	return j
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
