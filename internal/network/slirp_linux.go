package network

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/state"
)

// slirpHostLoopback reports whether slirp4netns maps 10.0.2.2 to the
// host's loopback (no --disable-host-loopback): when cfg.HostLoopback asks,
// and when a UDP port is published: libslirp gives a UDP datagram from a client on the host's
// loopback the source 10.0.2.2 and then refuses the reply sent there when
// host loopback is disabled, so those ports would be dead. Then the VM
// namespace's rule refusing the guest's packets to 10.0.2.2 is what keeps
// the host's loopback closed (the holder's UDP proxies, answering
// published-port clients, are the only other senders there).
func slirpHostLoopback(cfg Config) bool {
	if cfg.HostLoopback {
		return true
	}
	for _, p := range cfg.Ports {
		if p.Proto == "udp" {
			return true
		}
	}
	return false
}

// startSlirp attaches slirp4netns, the fallback when pasta is missing. Its
// default addresses are the uplink's (10.0.2.100/24, host loopback at
// 10.0.2.2, see slirpHostLoopback); published ports are added through its
// API socket, to nsPort(cfg.Ports, i) on the uplink address.
// --disable-dns: the guest's DNS goes through fcvm's forwarder like with
// pasta.
func startSlirp(cfg Config, n *Network, lv *live, path string) (func(context.Context) error, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	api := filepath.Join(cfg.RuntimeDir, "slirp.sock")
	os.Remove(api)
	logf, err := newHelperLog(filepath.Join(cfg.RuntimeDir, "slirp4netns.log"))
	if err != nil {
		readyW.Close()
		readyR.Close()
		return nil, fmt.Errorf("slirp4netns log: %w", err)
	}
	args := []string{"--configure", "--mtu=65520", "--disable-dns", "--ready-fd=3", "--api-socket=" + api}
	if !slirpHostLoopback(cfg) {
		args = append(args, "--disable-host-loopback")
	}
	args = append(args, "--netns-type=path", "--userns-path="+n.UserNS, n.NetNS, uplinkName)
	cmd := exec.Command(path, args...)
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.Stdout, cmd.Stderr = logf.w(), logf.w()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	readyW.Close()
	logf.closeW()
	if err != nil {
		readyR.Close()
		logf.drain()
		return nil, fmt.Errorf("start slirp4netns: %w", err)
	}
	lv.procs = append(lv.procs, cmd)
	lv.logs = append(lv.logs, logf)
	if p, err := state.ProcessOf(cmd.Process.Pid); err == nil {
		n.Helper = p
	}
	ready := make(chan struct{})
	go func() {
		b := make([]byte, 1)
		readyR.Read(b)
		readyR.Close()
		close(ready)
	}()
	return func(ctx context.Context) error { return slirpReady(ctx, cfg, n, ready, api, logf) }, nil
}

func slirpReady(ctx context.Context, cfg Config, n *Network, ready chan struct{}, api string, logf *helperLog) error {
	if err := waitReady(ctx, "slirp4netns", n.Helper, func() bool {
		select {
		case <-ready:
			return true
		default:
			return false
		}
	}, logf); err != nil {
		return err
	}
	for i, p := range cfg.Ports {
		host := p.HostIP
		if host == "" {
			host = "0.0.0.0"
		}
		if err := slirpCall(api, map[string]any{"execute": "add_hostfwd", "arguments": map[string]any{
			"proto": p.Proto, "host_addr": host, "host_port": p.HostPort, "guest_addr": uplinkIP, "guest_port": nsPort(cfg.Ports, i),
		}}); err != nil {
			return fmt.Errorf("publish %s through slirp4netns: %w", p, err)
		}
	}
	return nil
}

// slirpCall makes one request on slirp4netns's API socket.
func slirpCall(sock string, req any) error {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	c.(*net.UnixConn).CloseWrite()
	var resp struct {
		Error *struct {
			Desc string `json:"desc"`
		} `json:"error"`
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return fmt.Errorf("slirp4netns answer %q: %w", b, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("%s", resp.Error.Desc)
	}
	return nil
}
