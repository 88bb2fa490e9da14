package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/containerlog"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"10m":                  now.Add(-10 * time.Minute),
		"2024-05-01T11:00:00Z": now.Add(-time.Hour),
		"2024-05-01":           time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseSince("soon", now); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("parseSince(soon): %v", err)
	}
}

func TestTimestampsOnEveryLine(t *testing.T) {
	var b bytes.Buffer
	r := containerlog.Record{Time: time.Date(2024, 5, 1, 12, 0, 0, 5, time.UTC), Data: []byte("one\ntwo\nthr")}
	if err := writeLogRecord(&b, r, true); err != nil {
		t.Fatal(err)
	}
	ts := "2024-05-01T12:00:00.000000005Z "
	if want := ts + "one\n" + ts + "two\n" + ts + "thr"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
