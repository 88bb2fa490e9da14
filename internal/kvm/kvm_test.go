package kvm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fixture(t *testing.T, flags string, pvm bool) Host {
	t.Helper()
	dir := t.TempDir()
	h := Host{Device: filepath.Join(dir, "kvm"), CPUInfo: filepath.Join(dir, "cpuinfo"), SysModPVM: filepath.Join(dir, "kvm_pvm")}
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: " + flags + "\n\nprocessor\t: 1\nflags\t\t: " + flags + "\n"
	if err := os.WriteFile(h.CPUInfo, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	if pvm {
		if err := os.Mkdir(h.SysModPVM, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestHardware(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flags  string
		pvm    bool
		usable bool
		detail string
	}{
		{"intel", "fpu vme vmx sse2 hypervisor", false, true, "VMX"},
		{"amd", "fpu svm sse2", false, true, "SVM"},
		{"no hardware virtualisation", "fpu sse2 hypervisor avx2", false, false, "neither VMX nor SVM"},
		{"pvm", "fpu sse2 hypervisor", true, false, "PVM"},
		{"pvm even with vmx", "fpu vmx", true, false, "PVM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fixture(t, tc.flags, tc.pvm).hardware()
			if s.Usable != tc.usable || !strings.Contains(s.Detail, tc.detail) {
				t.Errorf("got %+v; want usable %v, detail saying %q", s, tc.usable, tc.detail)
			}
			if !s.Usable && s.Fix == "" {
				t.Errorf("not usable and no fix: %+v", s)
			}
		})
	}
}

func TestProbeDevice(t *testing.T) {
	h := fixture(t, "vmx", false)
	s := h.Probe()
	if s.Usable || !strings.Contains(s.Detail, "does not exist") {
		t.Errorf("missing device: %+v", s)
	}
	// A file that is not KVM opens but does not answer the ioctl.
	if err := os.WriteFile(h.Device, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s = h.Probe()
	if s.Usable || !strings.Contains(s.Detail, "KVM_GET_API_VERSION") {
		t.Errorf("not a KVM device: %+v", s)
	}
}

// On the machine running the tests, Probe and the machine agree: usable
// only with VMX or SVM and without PVM.
func TestProbeThisHost(t *testing.T) {
	s := Probe()
	t.Logf("this host: %+v", s)
	vt, err := hardwareVirt(DefaultHost.CPUInfo)
	if err != nil {
		t.Fatal(err)
	}
	_, pvmErr := os.Stat(DefaultHost.SysModPVM)
	if s.Usable && (vt == "" || pvmErr == nil) {
		t.Errorf("usable with cpu virtualisation %q and kvm_pvm loaded %v", vt, pvmErr == nil)
	}
}

func TestAccel(t *testing.T) {
	for _, want := range []string{AccelKVM, AccelTCG} {
		if got, err := Accel(want); err != nil || got != want {
			t.Errorf("Accel(%q) = %q, %v", want, got, err)
		}
	}
	auto, err := Accel("")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{true: AccelKVM, false: AccelTCG}[Probe().Usable]; auto != want {
		t.Errorf("Accel(\"\") = %q, want %q", auto, want)
	}
	if _, err := Accel("hvf"); err == nil || !strings.Contains(err.Error(), AccelEnv) {
		t.Errorf("Accel(hvf): %v, want an error naming %s", err, AccelEnv)
	}
}
