package cli

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/image"
)

type imageLsOptions struct {
	json    bool
	quiet   bool
	noTrunc bool
	now     time.Time // "3 days ago" is relative to this; tests fix it
}

func newImageLsCmd(env *Env) *cobra.Command {
	var o imageLsOptions
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List cached images",
		Long: `List cached images, newest first, one line per name (an image without
names shows <none>), with podman's columns: REPOSITORY TAG IMAGE ID CREATED
SIZE. SIZE is the image's disk.

--json prints a stable array, one object per image:
  {"id": "sha256:...", "names": ["docker.io/library/busybox:latest"],
   "digest": "sha256:...", "disk": "/var/lib/fcvm/images/<hex>/disk.ext4",
   "size": 7340032, "created": "2024-01-01T00:00:00Z",
   "config": {"entrypoint": [...], "cmd": [...], "env": [...],
              "working_dir": "", "user": "", "stop_signal": "",
              "exposed_ports": ["80/tcp"], "labels": {...}}}
Keys are always present; empty lists are [] and empty maps {}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.now = time.Now()
			return runImageLs(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "print JSON")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print image IDs only")
	f.BoolVar(&o.noTrunc, "no-trunc", false, "print full image IDs")
	return cmd
}

// imageJSON is the stable --json form of one image.
type imageJSON struct {
	ID      string          `json:"id"`
	Names   []string        `json:"names"`
	Digest  string          `json:"digest"`
	Disk    string          `json:"disk"`
	Size    int64           `json:"size"`
	Created time.Time       `json:"created"`
	Config  imageConfigJSON `json:"config"`
}

type imageConfigJSON struct {
	Entrypoint   []string          `json:"entrypoint"`
	Cmd          []string          `json:"cmd"`
	Env          []string          `json:"env"`
	WorkingDir   string            `json:"working_dir"`
	User         string            `json:"user"`
	StopSignal   string            `json:"stop_signal"`
	ExposedPorts []string          `json:"exposed_ports"`
	Labels       map[string]string `json:"labels"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func newImageJSON(img image.Image) imageJSON {
	c := img.Config
	labels := c.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return imageJSON{
		ID: img.ID, Names: nonNil(img.Refs), Digest: img.Digest, Disk: img.Disk,
		Size: img.Size, Created: img.Created.UTC(),
		Config: imageConfigJSON{
			Entrypoint: nonNil(c.Entrypoint), Cmd: nonNil(c.Cmd), Env: nonNil(c.Env),
			WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal,
			ExposedPorts: nonNil(c.ExposedPorts), Labels: labels,
		},
	}
}

func runImageLs(_ context.Context, env *Env, o imageLsOptions) error {
	s, err := openImageStore(env)
	if err != nil {
		return err
	}
	imgs, err := s.List()
	if err != nil {
		return err
	}
	if o.json {
		out := make([]imageJSON, len(imgs))
		for i, img := range imgs {
			out[i] = newImageJSON(img)
		}
		return writeJSON(env.Stdout, out)
	}
	bw := bufio.NewWriter(env.Stdout)
	id := func(img image.Image) string {
		if o.noTrunc {
			return img.ID
		}
		return strings.TrimPrefix(img.ID, "sha256:")[:12]
	}
	if o.quiet {
		for _, img := range imgs {
			fmt.Fprintln(bw, id(img))
		}
		return bw.Flush()
	}
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
	for _, img := range imgs {
		created := humanDuration(o.now.Sub(img.Created)) + " ago"
		if img.Created.IsZero() {
			created = "<unknown>"
		}
		names := img.Refs
		if len(names) == 0 {
			names = []string{""}
		}
		for _, n := range names {
			repo, tag := splitImageName(n)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", repo, tag, id(img), created, humanBytes(img.Size))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return bw.Flush()
}

// splitImageName splits a canonical name into podman's REPOSITORY and TAG
// columns; a digest name has tag <none>, and no name is <none> <none>.
func splitImageName(s string) (repo, tag string) {
	if s == "" {
		return "<none>", "<none>"
	}
	if r, _, ok := strings.Cut(s, "@"); ok {
		return r, "<none>"
	}
	slash := strings.LastIndex(s, "/")
	if colon := strings.LastIndex(s, ":"); colon > slash {
		return s[:colon], s[colon+1:]
	}
	return s, "latest"
}

// humanBytes is podman's SIZE: decimal units, three significant digits.
func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB"} {
		f /= 1000
		if f < 1000 {
			return fmt.Sprintf("%.3g %s", f, u)
		}
	}
	return fmt.Sprintf("%.3g PB", f/1000)
}
