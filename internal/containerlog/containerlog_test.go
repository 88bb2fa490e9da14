package containerlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteReadRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 20 {
		s := Stdout
		if i%2 == 1 {
			s = Stderr
		}
		if err := w.Write(Record{Time: time.Unix(0, int64(i)), Stream: s, Data: []byte(fmt.Sprintf("rec %02d\n", i))}); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := ReadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	// 20-byte records, 200-byte files: at most two files' worth is kept,
	// the newest last and in order.
	if len(recs) == 0 || len(recs) > 20 {
		t.Fatalf("%d records", len(recs))
	}
	last := recs[len(recs)-1]
	if string(last.Data) != "rec 19\n" || last.Stream != Stderr || last.Time.UnixNano() != 19 {
		t.Errorf("last record %+v", last)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.UnixNano() != recs[i-1].Time.UnixNano()+1 {
			t.Errorf("records out of order at %d: %v then %v", i, recs[i-1].Time.UnixNano(), recs[i].Time.UnixNano())
		}
	}
}

func TestFollowSeesNewRecordsAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "container.log")
	w, err := Create(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(Record{Time: time.Now(), Stream: Stdout, Data: []byte("old\n")})
	done := make(chan struct{})
	got := make(chan string, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- Follow(path, 1, done, func(r Record) error { got <- string(r.Data); return nil })
	}()
	var want bytes.Buffer
	for i := range 30 {
		line := fmt.Sprintf("line %03d %s\n", i, bytes.Repeat([]byte("x"), 50))
		want.WriteString(line)
		if err := w.Write(Record{Time: time.Now(), Stream: Stdout, Data: []byte(line)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	close(got)
	var all bytes.Buffer
	for s := range got {
		all.WriteString(s)
	}
	if all.String() != want.String() {
		t.Errorf("followed %d bytes, want %d:\n%s", all.Len(), want.Len(), all.String())
	}
}

// FuzzReadRecords: a log file is read while its writer appends, and may be
// cut or corrupted by a crash; reading never panics, never returns more
// data than the input holds, and stops at the last whole record.
func FuzzReadRecords(f *testing.F) {
	var good bytes.Buffer
	dir := f.TempDir()
	w, err := Create(filepath.Join(dir, "seed.log"), 0)
	if err != nil {
		f.Fatal(err)
	}
	w.Write(Record{Time: time.Unix(1, 2), Stream: Stdout, Data: []byte("hello\n")})
	w.Write(Record{Time: time.Unix(3, 4), Stream: Stderr, Data: nil})
	w.Close()
	b, _ := os.ReadFile(filepath.Join(dir, "seed.log"))
	good.Write(b)
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:good.Len()-3])
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		recs, off, _ := readRecords(bytes.NewReader(in))
		if off > int64(len(in)) {
			t.Fatalf("offset %d past %d bytes", off, len(in))
		}
		var n int64
		for _, r := range recs {
			n += headerSize + int64(len(r.Data))
		}
		if n != off {
			t.Fatalf("records span %d bytes, offset %d", n, off)
		}
	})
}
