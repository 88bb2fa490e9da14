package channel

import (
	"strings"
	"testing"
)

func TestShapeValidate(t *testing.T) {
	ok := Shape{
		CapAdd: []string{"net_raw", "CAP_SYS_ADMIN", "all"}, CapDrop: []string{"ALL"},
		Tmpfs: []string{"/tmp", "/x:size=1m,mode=1777"}, Ulimits: []string{"nofile=1024:2048", "core=-1", "nproc=10"},
		AddHosts: []string{"db:10.0.0.5", "v6:::1"}, DNS: []string{"1.1.1.1", "2001:db8::1"},
		DNSSearch: []string{"svc.cluster.local", "."}, DNSOptions: []string{"ndots:5", "edns0"},
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    Shape
		flag string
	}{
		{Shape{CapAdd: []string{"CAP_NOPE"}}, "--cap-add"},
		{Shape{CapDrop: []string{""}}, "--cap-drop"},
		{Shape{Tmpfs: []string{"rel/dir"}}, "--tmpfs"},
		{Shape{Ulimits: []string{"nofile"}}, "--ulimit"},
		{Shape{Ulimits: []string{"bogus=1"}}, "--ulimit"},
		{Shape{Ulimits: []string{"nofile=x"}}, "--ulimit"},
		{Shape{Ulimits: []string{"nofile=10:5"}}, "--ulimit"},
		{Shape{AddHosts: []string{"db"}}, "--add-host"},
		{Shape{AddHosts: []string{"db:notanip"}}, "--add-host"},
		{Shape{AddHosts: []string{"a b:10.0.0.1"}}, "--add-host"},
		{Shape{DNS: []string{"dns.example"}}, "--dns"},
		{Shape{DNS: make([]string, maxShapeEntries+1)}, "--dns"},
		{Shape{DNSSearch: []string{"a b"}}, "--dns-search"},
		{Shape{DNSSearch: []string{""}}, "--dns-search"},
		{Shape{DNSOptions: []string{"ndots:5\nnameserver 6.6.6.6"}}, "--dns-option"},
	} {
		err := tc.s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: want a one-line error naming %s, got %v", tc.s, tc.flag, err)
		}
	}
}
