package network

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listen binds a published port on the host: it is both the check that
// the port is free (before the VM boots) and, in bridged mode, the socket
// the proxy serves. A port without a host port (0) is bound to one the
// kernel picks, which listen writes into *p.
func listen(p *Port) (net.Listener, net.PacketConn, error) {
	ln, pc, err := bind(*p)
	if err == nil && p.HostPort == 0 {
		if ln != nil {
			p.HostPort = ln.Addr().(*net.TCPAddr).Port
		} else {
			p.HostPort = pc.LocalAddr().(*net.UDPAddr).Port
		}
	}
	return ln, pc, err
}

func bind(p Port) (net.Listener, net.PacketConn, error) {
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
	if p.HostIP == "" {
		addr = "0.0.0.0:" + strconv.Itoa(p.HostPort)
	}
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	if p.Proto == "udp" {
		pc, err = net.ListenPacket("udp4", addr)
	} else {
		ln, err = net.Listen("tcp4", addr)
	}
	if err == nil {
		return ln, pc, nil
	}
	if errors.Is(err, unix.EADDRINUSE) {
		pie := &PortInUseError{Port: p, Err: err}
		pie.PID, pie.Command = portHolder(p)
		return nil, nil, pie
	}
	if errors.Is(err, unix.EACCES) && p.HostPort < 1024 {
		return nil, nil, fmt.Errorf("publish %s: ports below 1024 need root (or net.ipv4.ip_unprivileged_port_start): %w", p, err)
	}
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil, nil, fmt.Errorf("publish %s: %s is not an address of this host: %w", p, p.HostIP, err)
	}
	return nil, nil, fmt.Errorf("publish %s: %w", p, err)
}

// checkFree binds and releases every port (rootless mode: pasta binds them
// for real right after), choosing the host ports not given. A chosen port
// taken in between makes pasta fail, and the setup with it.
func checkFree(ports []Port) error {
	for i := range ports {
		ln, pc, err := listen(&ports[i])
		if err != nil {
			return err
		}
		if ln != nil {
			ln.Close()
		} else {
			pc.Close()
		}
	}
	return nil
}

// portHolder finds the process holding a port: the socket's inode from
// /proc/net/{tcp,udp}{,6}, then the process with an fd on that inode.
func portHolder(p Port) (int, string) {
	inodes := map[string]bool{}
	for _, f := range []string{p.Proto, p.Proto + "6"} {
		b, err := os.ReadFile("/proc/net/" + f)
		if err != nil {
			continue
		}
		for _, ino := range socketInodes(b, p.HostPort, p.Proto == "tcp") {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0, ""
	}
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", d.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
				comm, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
				return pid, strings.TrimSpace(string(comm))
			}
		}
	}
	return 0, ""
}

// socketInodes reads a /proc/net/{tcp,udp}[6] table and returns the inodes
// of sockets bound to local port port (listening ones only for TCP).
func socketInodes(table []byte, port int, tcp bool) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(n) != port {
			continue
		}
		if tcp && f[3] != "0A" { // TCP_LISTEN
			continue
		}
		if f[9] != "0" {
			out = append(out, f[9])
		}
	}
	return out
}
