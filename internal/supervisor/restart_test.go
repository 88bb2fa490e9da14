package supervisor

import (
	"strings"
	"testing"
)

func TestParseRestart(t *testing.T) {
	for in, want := range map[string]RestartPolicy{
		"":               {Mode: "no"},
		"no":             {Mode: "no"},
		"always":         {Mode: "always"},
		"unless-stopped": {Mode: "always"},
		"on-failure":     {Mode: "on-failure"},
		"on-failure:3":   {Mode: "on-failure", Max: 3},
	} {
		if got, err := ParseRestart(in); err != nil || got != want {
			t.Errorf("ParseRestart(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"sometimes", "always:3", "on-failure:x", "on-failure:-1", "no:1"} {
		if _, err := ParseRestart(in); err == nil || !strings.Contains(err.Error(), "--restart") {
			t.Errorf("ParseRestart(%q) = %v, want an error naming --restart", in, err)
		}
	}
}

func TestValidHostname(t *testing.T) {
	for _, ok := range []string{"", "web", "web-1.example", strings.Repeat("a", 63)} {
		if err := validHostname(ok); err != nil {
			t.Errorf("validHostname(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"bad_host", "-web", "web-", "a..b", "a.", strings.Repeat("a", 65), "wéb"} {
		if err := validHostname(bad); err == nil {
			t.Errorf("validHostname(%q) accepted", bad)
		}
	}
}
