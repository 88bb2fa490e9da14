package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/state"
)

func TestParseVolumes(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	good := []struct {
		specs []string
		want  []state.Volume
	}{
		{[]string{dir + ":/data"}, []state.Volume{{Host: dir, Guest: "/data"}}},
		{[]string{dir + ":/data:ro"}, []state.Volume{{Host: dir, Guest: "/data", ReadOnly: true}}},
		{[]string{dir + ":/data:rw"}, []state.Volume{{Host: dir, Guest: "/data"}}},
		{[]string{dir + ":/data:ro,z"}, []state.Volume{{Host: dir, Guest: "/data", ReadOnly: true}}},
		{[]string{dir + ":/data:Z,ro,ro"}, []state.Volume{{Host: dir, Guest: "/data", ReadOnly: true}}},
		{[]string{dir + ":/data:z"}, []state.Volume{{Host: dir, Guest: "/data"}}},
		// Relative host paths resolve against the working directory;
		// container paths are cleaned.
		{[]string{"./sub:/a/b/../c/", ".:/d"}, []state.Volume{
			{Host: filepath.Join(dir, "sub"), Guest: "/a/c"},
			{Host: dir, Guest: "/d"},
		}},
		{[]string{dir + ":/x", other + ":/y:ro", dir + ":/z"}, []state.Volume{
			{Host: dir, Guest: "/x"},
			{Host: other, Guest: "/y", ReadOnly: true},
			{Host: dir, Guest: "/z"},
		}},
		{nil, nil},
	}
	for _, tc := range good {
		got, err := parseVolumes(tc.specs)
		if err != nil {
			t.Errorf("parseVolumes(%q): %v", tc.specs, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseVolumes(%q) (-want +got):\n%s", tc.specs, diff)
		}
	}

	bad := []struct {
		specs []string
		want  string // in the error
	}{
		{[]string{dir + "/nosuch:/data"}, dir + "/nosuch does not exist"},
		{[]string{file + ":/data"}, file + " is not a directory"},
		{[]string{dir + ":data"}, `"data" is not absolute`},
		{[]string{dir + ":"}, "is not absolute"},
		{[]string{dir + ":/"}, "container's root"},
		{[]string{dir + ":/data", other + ":/data/"}, "/data is already a volume"},
		{[]string{dir + ":/data:rx"}, `option "rx" is not supported`},
		{[]string{dir + ":/data:ro,noexec"}, `option "noexec" is not supported`},
		{[]string{dir + ":/data:ro,rw"}, "conflict"},
		{[]string{dir + ":/data:"}, "empty option"},
		{[]string{dir + ":/data:ro:z"}, "want HOST-DIR:CONTAINER-DIR"},
		{[]string{dir}, "want HOST-DIR:CONTAINER-DIR"},
		{[]string{":/data"}, "no host directory"},
		{[]string{"cache:/data"}, "named volumes are not supported"},
	}
	for _, tc := range bad {
		_, err := parseVolumes(tc.specs)
		if err == nil {
			t.Errorf("parseVolumes(%q) succeeded; want an error with %q", tc.specs, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseVolumes(%q) = %q; want it to contain %q", tc.specs, err, tc.want)
		}
		if !strings.HasPrefix(err.Error(), "-v ") {
			t.Errorf("parseVolumes(%q) = %q; want it to name the flag", tc.specs, err)
		}
	}
}

func TestParseMount(t *testing.T) {
	for spec, want := range map[string][2]string{
		"type=bind,source=/a,target=/b":                           {"/a:/b", ""},
		"type=bind,src=./a,dst=/b,ro":                             {"./a:/b:ro", ""},
		"type=bind,source=/a,destination=/b,readonly":             {"/a:/b:ro", ""},
		"type=bind,source=/a,target=/b,ro=false,relabel=private":  {"/a:/b", ""},
		"type=tmpfs,target=/t":                                    {"", "/t"},
		"type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1777": {"", "/t:size=1m,mode=1777"},
	} {
		if v, tmpfs, err := parseMount(spec); err != nil || v != want[0] || tmpfs != want[1] {
			t.Errorf("parseMount(%q) = %q, %q, %v; want %q", spec, v, tmpfs, err, want)
		}
	}
	for spec, has := range map[string]string{
		"type=volume,source=v,target=/t":         "type \"volume\" is not supported",
		"source=/a,target=/b":                    "type \"\"",
		"type=bind,target=/b":                    "source=HOST-DIR",
		"type=tmpfs,source=/a,target=/t":         "type=tmpfs,target",
		"type=bind,source=/a,target=/b,ro=maybe": "want true or false",
		"type=bind,source=/a,target=/b,size=1":   "option \"size\"",
	} {
		if _, _, err := parseMount(spec); err == nil || !strings.Contains(err.Error(), has) {
			t.Errorf("parseMount(%q) = %v, want an error with %q", spec, err, has)
		}
	}
}
