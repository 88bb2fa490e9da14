package firecracker

import (
	"encoding/json"
	"net/http"
	"net/url"
)

// Request is one API call before it is sent: what the contract tests
// validate and what the client sends are the same value.
type Request struct {
	Method string
	Path   string
	// Body is marshalled to JSON; nil means no body.
	Body any
}

// JSON returns the request body as sent, or nil.
func (r Request) JSON() ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return json.Marshal(r.Body)
}

func (r Request) String() string { return r.Method + " " + r.Path }

func put(path string, body any) Request { return Request{http.MethodPut, path, body} }
func patch(path string, body any) Request {
	return Request{http.MethodPatch, path, body}
}
func get(path string) Request { return Request{Method: http.MethodGet, Path: path} }

// PutMachineConfig sets vCPUs and memory. Pre-boot only.
func PutMachineConfig(c MachineConfig) Request { return put("/machine-config", c) }

// GetMachineConfig reads the machine configuration.
func GetMachineConfig() Request { return get("/machine-config") }

// PutBootSource sets kernel, initrd and kernel command line. Pre-boot only.
func PutBootSource(b BootSource) Request { return put("/boot-source", b) }

// PutDrive adds or replaces a block device. Pre-boot only.
func PutDrive(d Drive) Request { return put("/drives/"+url.PathEscape(d.DriveID), d) }

// PatchDrive changes a running VM's drive backing file or rate limiter.
func PatchDrive(d PartialDrive) Request { return patch("/drives/"+url.PathEscape(d.DriveID), d) }

// PutNetworkInterface adds a network interface. Pre-boot only.
func PutNetworkInterface(n NetworkInterface) Request {
	return put("/network-interfaces/"+url.PathEscape(n.IfaceID), n)
}

// PatchNetworkInterface changes a running VM's interface rate limiters.
func PatchNetworkInterface(n PartialNetworkInterface) Request {
	return patch("/network-interfaces/"+url.PathEscape(n.IfaceID), n)
}

// PutVsock adds the vsock device. Pre-boot only.
func PutVsock(v Vsock) Request { return put("/vsock", v) }

// PutMMDSConfig enables MMDS on the given interfaces. Pre-boot only.
func PutMMDSConfig(c MMDSConfig) Request { return put("/mmds/config", c) }

// PutMMDS replaces the MMDS data store with doc, a JSON object.
func PutMMDS(doc json.RawMessage) Request { return put("/mmds", doc) }

// PatchMMDS merges doc into the MMDS data store (JSON merge patch).
func PatchMMDS(doc json.RawMessage) Request { return patch("/mmds", doc) }

// GetMMDS reads the MMDS data store.
func GetMMDS() Request { return get("/mmds") }

// PutLogger points Firecracker's log at a file.
func PutLogger(l Logger) Request { return put("/logger", l) }

// PutMetrics points Firecracker's metrics at a file.
func PutMetrics(m Metrics) Request { return put("/metrics", m) }

// PutBalloon adds the balloon device. Pre-boot only.
func PutBalloon(b Balloon) Request { return put("/balloon", b) }

// PatchBalloon sets a running balloon's target size.
func PatchBalloon(b BalloonUpdate) Request { return patch("/balloon", b) }

// GetBalloon reads the balloon configuration.
func GetBalloon() Request { return get("/balloon") }

// GetBalloonStats reads the balloon statistics.
func GetBalloonStats() Request { return get("/balloon/statistics") }

// PutEntropy adds a virtio-rng device. Pre-boot only.
func PutEntropy(e EntropyDevice) Request { return put("/entropy", e) }

// Action performs a synchronous action.
func Action(a ActionType) Request { return put("/actions", instanceAction{a}) }

// PatchVM pauses or resumes the VM.
func PatchVM(s VMState) Request { return patch("/vm", vmBody{s}) }

// CreateSnapshot writes the VM's state and memory. The VM must be paused.
func CreateSnapshot(s SnapshotCreate) Request { return put("/snapshot/create", s) }

// LoadSnapshot restores a VM. Only a fresh process accepts it, and only
// the logger and metrics may be configured before it.
func LoadSnapshot(s SnapshotLoad) Request { return put("/snapshot/load", s) }

// GetInstanceInfo reads the instance state.
func GetInstanceInfo() Request { return get("/") }

// GetVersion reads the Firecracker version.
func GetVersion() Request { return get("/version") }

// GetVMConfig reads the full VM configuration.
func GetVMConfig() Request { return get("/vm/config") }
