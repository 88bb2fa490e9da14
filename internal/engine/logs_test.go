package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/containerlog"
)

func logRecs(parts ...string) []containerlog.Record {
	var recs []containerlog.Record
	for i, p := range parts {
		recs = append(recs, containerlog.Record{Time: time.Unix(int64(i), 0), Stream: containerlog.Stdout, Data: []byte(p)})
	}
	return recs
}

func joined(recs []containerlog.Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.Write(r.Data)
	}
	return b.String()
}

func TestTailLines(t *testing.T) {
	recs := logRecs("a\nb\n", "c\n", "d\ne\n", "partial")
	for _, tc := range []struct {
		n    int
		want string
	}{
		{-1, "a\nb\nc\nd\ne\npartial"},
		{0, "partial"},
		{1, "e\npartial"},
		{2, "d\ne\npartial"},
		{4, "b\nc\nd\ne\npartial"},
		{5, "a\nb\nc\nd\ne\npartial"},
		{50, "a\nb\nc\nd\ne\npartial"},
	} {
		if got := joined(tailLines(recs, tc.n)); got != tc.want {
			t.Errorf("tail %d: %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := joined(tailLines(logRecs("x\n", "y\n"), 1)); got != "y\n" {
		t.Errorf("tail 1 of complete lines: %q", got)
	}
}
