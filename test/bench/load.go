package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// pattern is what the source backend sends, over and over; readers check
// every byte against it.
var pattern = func() []byte {
	b := make([]byte, 1<<20)
	_, _ = rand.Read(b)
	return b
}()

// backends are the local services behind the tunnel: a source that
// streams the pattern until the reader leaves, an echo, and a sink that
// checks and counts what an upload sends.
type backends struct {
	source, echo, sink net.Listener
	uploads            sync.Map // upload id (uint64) -> *bulk, for the sink to count into
	web                *web     // nginx, for the small-requests row; nil without it
	wg                 sync.WaitGroup
	mu                 sync.Mutex
	conns              map[net.Conn]struct{}
}

func startBackends() (*backends, error) {
	b := &backends{conns: map[net.Conn]struct{}{}}
	var err error
	if b.source, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if b.echo, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if b.sink, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	b.wg.Go(func() { b.serve(b.source, sourceConn) })
	b.wg.Go(func() { b.serve(b.echo, echoConn) })
	b.wg.Go(func() { b.serve(b.sink, b.sinkConn) })
	return b, nil
}

func (b *backends) serve(ln net.Listener, h func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Go(func() {
			h(c)
			b.mu.Lock()
			delete(b.conns, c)
			b.mu.Unlock()
			_ = c.Close()
		})
	}
}

func (b *backends) close() {
	_ = b.source.Close()
	_ = b.echo.Close()
	_ = b.sink.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func sourceConn(c net.Conn) {
	for {
		if _, err := c.Write(pattern); err != nil {
			return
		}
	}
}

func echoConn(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// sinkConn reads an upload: its 8-byte id, then the pattern from its
// start, every byte checked and counted into the upload's bulk.
func (b *backends) sinkConn(c net.Conn) {
	var id [8]byte
	if _, err := io.ReadFull(c, id[:]); err != nil {
		return
	}
	v, ok := b.uploads.Load(binary.BigEndian.Uint64(id[:]))
	if !ok {
		return
	}
	_ = v.(*bulk).count(c, "upload") // ends at the uploader's FIN or reset
}

// download reads the source through addr for d and returns the bytes read,
// checking every byte against the pattern.
func download(addr string, d time.Duration) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	buf := make([]byte, 256<<10)
	var n int64
	deadline := time.Now().Add(d)
	_ = c.SetReadDeadline(deadline)
	for {
		m, err := c.Read(buf)
		if m > 0 {
			if err := checkPattern(buf[:m], n); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return n, nil
			}
			return n, err
		}
	}
}

// checkPattern checks that b is the pattern from offset off on.
func checkPattern(b []byte, off int64) error {
	for len(b) > 0 {
		p := int(off % int64(len(pattern)))
		k := min(len(b), len(pattern)-p)
		if !bytes.Equal(b[:k], pattern[p:p+k]) {
			return fmt.Errorf("data corrupted at byte %d", off)
		}
		b, off = b[k:], off+int64(k)
	}
	return nil
}

// throughput runs conns downloads at once for d and returns MiB/s over all.
func throughput(addr string, conns int, d time.Duration) (float64, int64, error) {
	var total atomic.Int64
	errs := make(chan error, conns)
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			n, err := download(addr, d)
			total.Add(n)
			errs <- err
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, total.Load(), err
		}
	}
	return float64(total.Load()) / (1 << 20) / elapsed.Seconds(), total.Load(), nil
}

// roundTrips measures n one-byte echoes on one connection and returns the
// median and the 99th percentile.
func roundTrips(addr string, n int) (p50, p99 time.Duration, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	b := []byte{'x'}
	lat := make([]time.Duration, 0, n)
	for i := range n + n/10 {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, 0, err
		}
		if i >= n/10 { // the first tenth warms up
			lat = append(lat, time.Since(start))
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// connRate opens, uses (one echoed byte) and closes connections from
// workers at once for d, and returns connections per second.
func connRate(addr string, workers int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var done atomic.Int64
	errs := make(chan error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			b := []byte{'y'}
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					errs <- err
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Write(b)
				if err == nil {
					_, err = io.ReadFull(c, b)
				}
				_ = c.Close()
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return 0, err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// idleConns opens n connections to addr, each with one echoed byte, and
// returns them open.
func idleConns(addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	b := []byte{'z'}
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			return conns, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return conns, err
		}
		_ = c.SetDeadline(time.Time{})
	}
	return conns, nil
}
