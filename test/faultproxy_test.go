package test

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy sits between the client and the server and breaks the link on
// demand: a black hole (bytes vanish, both sockets stay open), a bandwidth
// limit on the uplink (client to server), latency, or cutting every link.
type faultProxy struct {
	ln       net.Listener
	upstream string
	addr     string

	blackhole atomic.Bool
	uplinkBps atomic.Int64 // bytes per second client->server; 0: unlimited
	latency   atomic.Int64 // one-way delay in nanoseconds, each direction

	mu     sync.Mutex // guards links and closed
	links  map[*proxyLink]struct{}
	closed bool
	wg     sync.WaitGroup
}

type proxyLink struct {
	down, up net.Conn // client side, server side
}

func startFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	p := &faultProxy{ln: listen(t), upstream: upstream, links: map[*proxyLink]struct{}{}}
	p.addr = p.ln.Addr().String()
	p.wg.Go(p.acceptLoop)
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &proxyLink{down: c, up: up}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(l, l.up, l.down, true) })
		p.wg.Go(func() { p.pump(l, l.down, l.up, false) })
	}
}

// pump copies src to dst through the faults. uplink is client->server.
func (p *faultProxy) pump(l *proxyLink, dst, src net.Conn, uplink bool) {
	defer p.drop(l)
	type chunk struct {
		at   time.Time
		data []byte
	}
	// The delay line holds what is "on the wire". A rate-limited direction
	// keeps it, and the socket buffer before it, small, as a slow link
	// does; otherwise it holds up to 32 MiB, enough for latency at
	// loopback speed.
	limited := uplink && p.uplinkBps.Load() > 0
	depth, size := 1024, 32<<10
	if limited {
		depth, size = 4, 4<<10
		if tc, ok := src.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(16 << 10)
		}
	}
	line := make(chan chunk, depth)
	silent := false // a black hole swallows the close too
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // the writer end of the delay line
		start, sent := time.Now(), int64(0)
		for c := range line {
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d) // emulated propagation delay
			}
			if bps := p.uplinkBps.Load(); uplink && bps > 0 {
				sent += int64(len(c.data))
				if ahead := time.Duration(sent*int64(time.Second)/bps) - time.Since(start); ahead > 0 {
					time.Sleep(ahead) // emulated bandwidth
				}
			} else {
				start, sent = time.Now(), 0
			}
			if _, err := dst.Write(c.data); err != nil {
				p.cut(l)
				for range line {
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok && !silent {
			_ = tc.CloseWrite()
		}
	})
	for {
		buf := make([]byte, size)
		n, err := src.Read(buf)
		if n > 0 && !p.blackhole.Load() {
			line <- chunk{at: time.Now().Add(time.Duration(p.latency.Load())), data: buf[:n]}
		}
		if err != nil {
			silent = p.blackhole.Load()
			if !errors.Is(err, io.EOF) && !silent {
				p.cut(l)
			}
			close(line)
			return
		}
	}
}

// cut closes both sockets of a link.
func (p *faultProxy) cut(l *proxyLink) {
	l.down.Close()
	l.up.Close()
}

func (p *faultProxy) drop(l *proxyLink) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// cutAll closes every live link, as a crashed middlebox would.
func (p *faultProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		p.cut(l)
	}
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cutAll()
	p.wg.Wait()
}
