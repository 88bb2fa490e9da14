package artifacts

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// FallbackMirror is used when the host names no Debian mirror.
const FallbackMirror = "http://deb.debian.org/debian"

// DefaultMirror returns the first Debian archive URI in the host's apt
// sources (/etc/apt/sources.list, then sources.list.d/*.list and *.sources
// in name order), so setup uses whatever mirror or caching proxy the host
// already uses. It returns FallbackMirror when there is none.
func DefaultMirror() string { return defaultMirror("/etc/apt") }

func defaultMirror(etcApt string) string {
	files := []string{filepath.Join(etcApt, "sources.list")}
	more, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*"))
	sort.Strings(more)
	files = append(files, more...)
	for _, f := range files {
		var uris []string
		switch {
		case strings.HasSuffix(f, ".list"):
			uris = oneLineURIs(f)
		case strings.HasSuffix(f, ".sources"):
			uris = deb822URIs(f)
		}
		for _, u := range uris {
			if isDebianArchive(u) {
				return strings.TrimRight(u, "/")
			}
		}
	}
	return FallbackMirror
}

// isDebianArchive accepts the main archive (…/debian), not
// debian-security, ports or third-party repositories.
func isDebianArchive(u string) bool {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return false
	}
	return strings.HasSuffix(strings.TrimRight(u, "/"), "/debian")
}

// oneLineURIs reads "deb [options] URI suite components" lines.
func oneLineURIs(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var uris []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		if strings.HasPrefix(fields[0], "[") {
			for len(fields) > 0 && !strings.HasSuffix(fields[0], "]") {
				fields = fields[1:]
			}
			if len(fields) > 0 {
				fields = fields[1:]
			}
		}
		if len(fields) > 0 {
			uris = append(uris, fields[0])
		}
	}
	return uris
}

// deb822URIs reads the URIs of the stanzas whose Types include deb and
// that are not disabled.
func deb822URIs(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var uris []string
	for _, stanza := range strings.Split(string(b), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		uris = append(uris, strings.Fields(fields["uris"])...)
	}
	return uris
}
