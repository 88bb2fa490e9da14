package fusepipe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var sampleRequests = []Request{
	{ID: 1, Op: OpLookup, Node: 1, Name: "hello"},
	{ID: 2, Op: OpWrite, Fh: 7, Off: 1 << 40, Data: bytes.Repeat([]byte("x"), 5000)},
	{ID: 3, Op: OpSetattr, Node: 9, Valid: SetMode | SetSize | SetMtime, Mode: 0o644, Len: 12,
		Mtime: Timespec{Sec: -5, Nsec: 999}, UID: 1, GID: 2},
	{ID: 4, Op: OpForget, Forgets: []Forget{{Node: 5, N: 1}, {Node: 6, N: 300}}},
	{ID: 5, Op: OpRename, Node: 1, Name: "a", Node2: 2, Name2: "b", Flags: 1},
	{ID: 6, Op: OpSetlk, Node: 3, Fh: 4, Owner: ^uint64(0), Lock: Lock{Start: 0, End: 1<<63 - 1, Type: 1, Pid: 42}, Flags: lkWait},
	{ID: 7, Op: OpCopyFileRange, Fh: 1, Off: 2, Fh2: 3, Off2: 4, Len: 5, Size: 6, Rdev: 7, Umask: 0o22, Atime: Timespec{1, 2}},
	{ID: 8, Op: OpCreate, Node: 1, Name: "f", Mode: 0o100644, Caller: Owner{UID: 1000, GID: 100}},
	{ID: ^uint64(0), Op: OpPing},
}

var sampleReplies = []Reply{
	{ID: 1, Entry: Entry{Node: 3, Attr: Attr{Ino: 4, Size: 5, Mode: 0o100644, Nlink: 1, Mtime: Timespec{6, 7}}}},
	{ID: 2, Errno: 2},
	{ID: 3, Data: []byte("read data"), Size: 9},
	{ID: 4, Fh: 8, Dirents: []Dirent{
		{Ino: 1, Off: 1, Type: 0o040000, Name: "."},
		{Ino: 9, Off: 2, Type: 0o100000, Name: "file", Entry: Entry{Node: 10, Attr: Attr{Ino: 9}}},
	}},
	{ID: 5, Statfs: Statfs{Blocks: 1, Bfree: 2, Bavail: 3, Files: 4, Ffree: 5, Bsize: 6, NameLen: 7, Frsize: 8}},
	{ID: 6, Lock: Lock{Start: 1, End: 2, Type: 1, Pid: 3}, Off: 77, Flags: 3, Attr: Attr{Blksize: 4096}},
}

func TestRequestRoundTrip(t *testing.T) {
	for _, want := range sampleRequests {
		frame := AppendRequest(nil, &want)
		if int(binary.LittleEndian.Uint32(frame)) != len(frame)-4 {
			t.Fatalf("%v: length prefix %d for %d bytes", want.Op, binary.LittleEndian.Uint32(frame), len(frame)-4)
		}
		var got Request
		if err := DecodeRequest(frame[4:], &got); err != nil {
			t.Fatalf("%v: %v", want.Op, err)
		}
		if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%v round trip (-want +got):\n%s", want.Op, d)
		}
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, want := range sampleReplies {
		frame := AppendReply(nil, &want)
		var got Reply
		if err := DecodeReply(frame[4:], &got); err != nil {
			t.Fatalf("reply %d: %v", want.ID, err)
		}
		if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("reply %d round trip (-want +got):\n%s", want.ID, d)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := AppendRequest(nil, &sampleRequests[1])[4:]
	for i := range len(good) {
		var r Request
		if err := DecodeRequest(good[:i], &r); !errors.Is(err, ErrFrame) {
			t.Fatalf("truncated to %d bytes: %v", i, err)
		}
	}
	var r Request
	if err := DecodeRequest(append(good, 0), &r); !errors.Is(err, ErrFrame) {
		t.Errorf("trailing byte: %v", err)
	}
	// A count claiming more elements than the frame holds.
	hostile := AppendRequest(nil, &Request{ID: 1, Op: OpForget, Forgets: []Forget{{1, 1}}})[4:]
	binary.LittleEndian.PutUint32(hostile[13:], 1<<31)
	if err := DecodeRequest(hostile, &r); !errors.Is(err, ErrFrame) {
		t.Errorf("huge count: %v", err)
	}
	// Unknown field bits.
	unknown := AppendRequest(nil, &Request{ID: 1, Op: OpPing})[4:]
	binary.LittleEndian.PutUint32(unknown[9:], 1<<31)
	if err := DecodeRequest(unknown, &r); !errors.Is(err, ErrFrame) {
		t.Errorf("unknown field: %v", err)
	}
}

func TestHello(t *testing.T) {
	b := appendHello(nil, helloReadOnly)
	if f, err := parseHello(b); err != nil || f != helloReadOnly {
		t.Fatalf("parseHello = %d, %v", f, err)
	}
	binary.LittleEndian.PutUint16(b[4:], Version+1)
	if _, err := parseHello(b); !errors.Is(err, ErrVersion) {
		t.Errorf("other version: %v", err)
	}
	binary.LittleEndian.PutUint32(b, 0)
	if _, err := parseHello(b); !errors.Is(err, ErrFrame) {
		t.Errorf("bad magic: %v", err)
	}
}

func TestReadFrameLimit(t *testing.T) {
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], MaxFrame+1)
	if _, err := readFrame(bytes.NewReader(hdr[:]), nil); !errors.Is(err, ErrFrame) {
		t.Errorf("oversized frame: %v", err)
	}
}

// FuzzDecode feeds arbitrary frame bodies to both decoders: they must not
// panic, and whatever decodes must encode back to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, r := range sampleRequests {
		f.Add(AppendRequest(nil, &r)[4:])
	}
	for _, r := range sampleReplies {
		f.Add(AppendReply(nil, &r)[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var rq Request
		if DecodeRequest(body, &rq) == nil {
			again := AppendRequest(nil, &rq)[4:]
			var rq2 Request
			if err := DecodeRequest(again, &rq2); err != nil {
				t.Fatalf("re-decode request: %v", err)
			}
			if d := cmp.Diff(rq, rq2, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("request changed on re-encode:\n%s", d)
			}
		}
		var rp Reply
		if DecodeReply(body, &rp) == nil {
			again := AppendReply(nil, &rp)[4:]
			var rp2 Reply
			if err := DecodeReply(again, &rp2); err != nil {
				t.Fatalf("re-decode reply: %v", err)
			}
			if d := cmp.Diff(rp, rp2, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("reply changed on re-encode:\n%s", d)
			}
		}
	})
}
