package network

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// proxy relays one published port from a host socket to the guest. Bridged
// mode uses it for what nftables cannot reach without route_localnet:
// connections to the host's loopback. It also holds the host port, so
// nothing else can bind it while the VM runs.
type proxy struct {
	ln   net.Listener   // tcp
	pc   net.PacketConn // udp
	to   string         // guest address as host:port
	log  *slog.Logger
	wg   sync.WaitGroup
	done chan struct{}
	// mu guards conns.
	mu    sync.Mutex
	conns map[io.Closer]struct{}
}

// udpIdle is how long a UDP flow without traffic keeps its upstream
// socket.
const udpIdle = 60 * time.Second

func newProxy(ln net.Listener, pc net.PacketConn, to string, log *slog.Logger) *proxy {
	p := &proxy{ln: ln, pc: pc, to: to, log: log, done: make(chan struct{}), conns: map[io.Closer]struct{}{}}
	p.wg.Add(1)
	if ln != nil {
		go p.serveTCP()
	} else {
		go p.serveUDP()
	}
	return p
}

func (p *proxy) track(c io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		c.Close()
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c io.Closer) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) serveTCP() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var d net.Dialer
			up, err := d.DialContext(ctx, "tcp4", p.to)
			cancel()
			if err != nil {
				p.log.Debug("proxy dial guest", "to", p.to, "err", err)
				return
			}
			if !p.track(up) {
				return
			}
			defer p.untrack(up)
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done
			<-done
		}()
	}
}

// serveUDP keeps one connected upstream socket per client address, so
// replies find their way back.
func (p *proxy) serveUDP() {
	defer p.wg.Done()
	flows := map[string]net.Conn{}
	var mu sync.Mutex // guards flows
	buf := make([]byte, 65536)
	for {
		n, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		key := from.String()
		mu.Lock()
		up, ok := flows[key]
		if !ok {
			up, err = net.Dial("udp4", p.to)
			if err != nil || !p.track(up) {
				mu.Unlock()
				continue
			}
			flows[key] = up
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer func() {
					mu.Lock()
					delete(flows, key)
					mu.Unlock()
					p.untrack(up)
				}()
				rb := make([]byte, 65536)
				for {
					up.SetReadDeadline(time.Now().Add(udpIdle))
					n, err := up.Read(rb)
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							return
						}
						return
					}
					p.pc.WriteTo(rb[:n], from)
				}
			}()
		}
		mu.Unlock()
		up.Write(buf[:n])
	}
}

// Close stops the proxy and every relayed connection, and waits for them.
func (p *proxy) Close() error {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return nil
	default:
	}
	close(p.done)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	var err error
	if p.ln != nil {
		err = p.ln.Close()
	} else {
		err = p.pc.Close()
	}
	p.wg.Wait()
	return err
}
