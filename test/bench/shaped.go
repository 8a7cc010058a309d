package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The shaped rows (-shaped): interactive latency while bulk transfers
// fill a slow link. For the tunnel the link sits between client and
// server (the client's server_addr is the shaper); for direct, between
// the load generator and the services. Visitors reach the server on
// loopback, unshaped.

// scenario is one loaded-latency measurement.
type scenario struct {
	name       string
	mbit       float64       // the link's rate, each direction, 10^6 bit/s
	delay      time.Duration // one way, each direction
	downs, ups int           // bulk downloads and uploads
}

var scenarios = []scenario{
	{"20 Mbit/s, 10 ms each way, 4 downloads", 20, 10 * time.Millisecond, 4, 0},
	{"20 Mbit/s, 10 ms each way, 2 downloads + 2 uploads", 20, 10 * time.Millisecond, 2, 2},
	{"10 Mbit/s, 40 ms each way, 4 downloads", 10, 40 * time.Millisecond, 4, 0},
}

// shapedResult is one run of a scenario, direct or through the tunnel.
type shapedResult struct {
	idle50, idle99, load50, load99 float64 // echo round trips, ms
	down, up                       float64 // goodput, Mbit/s
	shareMin, shareMax             float64 // a bulk connection's bytes / its direction's fair share
}

// measureShaped runs every scenario for one transport.
func measureShaped(o options, dir, transport string, be *backends) ([]figure, error) {
	var figs []figure
	for i, sc := range scenarios {
		sdir := filepath.Join(dir, fmt.Sprintf("%s-shaped-%d", transport, i))
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			return nil, err
		}
		f, err := measureScenario(o, sdir, transport, be, sc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		figs = append(figs, f...)
	}
	return figs, nil
}

func measureScenario(o options, dir, transport string, be *backends, sc scenario) ([]figure, error) {
	cfg := laneConfig{rate: sc.mbit * 1e6 / 8, delay: sc.delay, queue: o.shapedQueue}
	// Two links of the same shape: the tunnel's control traffic never
	// crosses direct's link.
	links := [2]*link{newLink(cfg, cfg), newLink(cfg, cfg)}
	defer links[1].close()
	defer links[0].close()
	direct := map[string]string{}
	for name, ln := range map[string]net.Listener{"source": be.source, "echo": be.echo, "sink": be.sink} {
		addr, err := links[0].forward(ln.Addr().String())
		if err != nil {
			return nil, err
		}
		direct[name] = addr
	}
	t, err := startTunnel(tunnelSpec{bin: o.bin, dir: dir, transport: transport,
		mappings: [][2]string{
			{"source", be.source.Addr().String()}, {"echo", be.echo.Addr().String()}, {"sink", be.sink.Addr().String()},
		},
		serverKeys: o.serverKeys, clientKeys: o.clientKeys, serverEnv: o.serverEnv, clientEnv: o.clientEnv,
		via: links[1].forward})
	if err != nil {
		return nil, err
	}
	defer t.stop()
	time.Sleep(500 * time.Millisecond) // let the processes settle

	var res [2][]shapedResult
	for range o.rounds {
		for i, addrs := range []map[string]string{direct, t.addr} {
			r, err := loadedRun(o, be, sc, addrs)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", [2]string{"direct", "tunnel"}[i], err)
			}
			res[i] = append(res[i], r)
			// The next run starts on an empty link.
			links[i].waitQuiet(300*time.Millisecond, 10*time.Second)
		}
		if err := t.alive(); err != nil {
			return nil, err
		}
	}

	med := func(i int, get func(shapedResult) float64) float64 {
		v := make([]float64, len(res[i]))
		for k, r := range res[i] {
			v[k] = get(r)
		}
		return median(v)
	}
	name := fmt.Sprintf("%s (queue %d KiB per direction)", sc.name, o.shapedQueue>>10)
	diff := func(fig string, get func(shapedResult) float64, goal string) figure {
		d, tn := med(0, get), med(1, get)
		delta := tn - d
		return figure{Transport: transport, Scenario: name, Name: fig, Unit: "ms", Direct: d, Tunnel: tn, Diff: &delta, Goal: goal}
	}
	ratio := func(fig string, get func(shapedResult) float64, goal string) figure {
		d, tn := med(0, get), med(1, get)
		return figure{Transport: transport, Scenario: name, Name: fig, Unit: "Mbit/s", Direct: d, Tunnel: tn, Ratio: tn / d, Goal: goal}
	}
	share := func(fig string, get func(shapedResult) float64, goal string) figure {
		return figure{Transport: transport, Scenario: name, Name: fig, Unit: "share", Direct: med(0, get), Tunnel: med(1, get), Goal: goal}
	}
	figs := []figure{
		diff("idle echo round trip p50, ms", func(r shapedResult) float64 { return r.idle50 }, ""),
		diff("idle echo round trip p99, ms", func(r shapedResult) float64 { return r.idle99 }, ""),
		diff("loaded echo round trip p50, ms", func(r shapedResult) float64 { return r.load50 }, "<= +15 ms"),
		diff("loaded echo round trip p99, ms", func(r shapedResult) float64 { return r.load99 }, "<= +30 ms"),
		ratio("goodput (every byte checked), Mbit/s", func(r shapedResult) float64 { return r.down + r.up }, ">= 0.95x"),
	}
	if sc.downs > 0 && sc.ups > 0 {
		figs = append(figs,
			ratio("  of it downloads, Mbit/s", func(r shapedResult) float64 { return r.down }, ""),
			ratio("  of it uploads, Mbit/s", func(r shapedResult) float64 { return r.up }, ""))
	}
	return append(figs,
		share("bulk connection's bytes / fair share, lowest", func(r shapedResult) float64 { return r.shareMin }, ">= 0.90"),
		share("bulk connection's bytes / fair share, highest", func(r shapedResult) float64 { return r.shareMax }, "<= 1.10"),
	), nil
}

// loadedRun measures one scenario once through addrs: idle echoes, then
// the bulk transfers, and once they have filled the link, echoes again
// while the bulk bytes are counted.
func loadedRun(o options, be *backends, sc scenario, addrs map[string]string) (shapedResult, error) {
	var r shapedResult
	c, err := net.DialTimeout("tcp", addrs["echo"], 5*time.Second)
	if err != nil {
		return r, err
	}
	defer func() { _ = c.Close() }()
	// One echo first, not counted: through the tunnel the stream is set
	// up only now.
	if _, err := echoes(c, 1, 0, nil); err != nil {
		return r, fmt.Errorf("first echo: %w", err)
	}
	idle, err := echoes(c, o.idleEchoes, o.echoEvery, nil)
	if err != nil {
		return r, fmt.Errorf("idle echoes: %w", err)
	}
	r.idle50, r.idle99 = percentileMs(idle, 50), percentileMs(idle, 99)

	var wg sync.WaitGroup
	var downs, ups []*bulk
	stopAll := func() error {
		var errs []error
		for _, b := range slices.Concat(downs, ups) {
			b.stop()
		}
		wg.Wait()
		for _, b := range slices.Concat(downs, ups) {
			errs = append(errs, b.error())
		}
		for _, b := range ups {
			be.uploads.Delete(b.id)
		}
		downs, ups = nil, nil
		return errors.Join(errs...)
	}
	defer func() { _ = stopAll() }()
	for range sc.downs {
		b, err := startDownload(addrs["source"], &wg)
		if err != nil {
			return r, fmt.Errorf("download: %w", err)
		}
		downs = append(downs, b)
	}
	for range sc.ups {
		b, err := startUpload(addrs["sink"], be, &wg)
		if err != nil {
			return r, fmt.Errorf("upload: %w", err)
		}
		ups = append(ups, b)
	}
	time.Sleep(o.shapedWarmup) // the bulk transfers fill the queues

	d0, u0, t0 := counts(downs), counts(ups), time.Now()
	var d1, u1 []int64
	var t1 time.Time
	n := int(o.shapedDur/o.echoEvery) + 1
	loaded, err := echoes(c, n, o.echoEvery, func() { d1, u1, t1 = counts(downs), counts(ups), time.Now() })
	if err != nil {
		return r, fmt.Errorf("loaded echoes: %w", err)
	}
	if err := stopAll(); err != nil {
		return r, err
	}
	r.load50, r.load99 = percentileMs(loaded, 50), percentileMs(loaded, 99)
	secs := t1.Sub(t0).Seconds()
	r.shareMin, r.shareMax = 1, 1
	for k, d := range []struct {
		from, to []int64
		rate     *float64
	}{{d0, d1, &r.down}, {u0, u1, &r.up}} {
		if len(d.from) == 0 {
			continue
		}
		moved := make([]float64, len(d.from))
		var sum float64
		for j := range moved {
			moved[j] = float64(d.to[j] - d.from[j])
			sum += moved[j]
		}
		if sum == 0 {
			return r, fmt.Errorf("the %s moved nothing in %.1fs", [2]string{"downloads", "uploads"}[k], secs)
		}
		*d.rate = sum * 8 / 1e6 / secs
		fair := sum / float64(len(moved))
		r.shareMin = min(r.shareMin, slices.Min(moved)/fair)
		r.shareMax = max(r.shareMax, slices.Max(moved)/fair)
	}
	return r, nil
}

// echoes sends n one-byte echoes on c, one every gap without waiting
// for the answers (keystrokes), and returns each one's round trip. sent,
// if set, runs right after the last one is sent.
func echoes(c net.Conn, n int, gap time.Duration, sent func()) ([]time.Duration, error) {
	_ = c.SetDeadline(time.Now().Add(time.Duration(n)*gap + 30*time.Second))
	times := make(chan time.Time, n)
	werr := make(chan error, 1)
	go func() { // joined through werr
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
			times <- time.Now()
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				werr <- err
				return
			}
		}
		if sent != nil {
			sent()
		}
		werr <- nil
	}()
	rtts := make([]time.Duration, 0, n)
	b := make([]byte, 1)
	var rerr error
	for i := range n {
		if _, err := io.ReadFull(c, b); err != nil {
			rerr = err
			break
		}
		rtts = append(rtts, time.Since(<-times))
		if b[0] != byte(i) {
			rerr = fmt.Errorf("echo %d came back as %d", i, b[0])
			break
		}
	}
	if rerr != nil {
		_ = c.SetDeadline(time.Now()) // the writer stops too
	}
	if err := <-werr; rerr == nil {
		rerr = err
	}
	return rtts, rerr
}

func percentileMs(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[min(len(s)-1, len(s)*p/100)]) / float64(time.Millisecond)
}

// bulk is one bulk transfer; n counts the bytes its receiving end has
// checked against the pattern.
type bulk struct {
	id      uint64 // an upload's, for the sink
	c       net.Conn
	n       atomic.Int64
	stopped atomic.Bool
	mu      sync.Mutex
	err     error
}

// count reads c until it ends, checking every byte against the pattern
// from its start and counting it; a wrong byte fails b (what names the
// direction). It returns the read error that ended it, nil after a wrong
// byte.
func (b *bulk) count(c net.Conn, what string) error {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if cerr := checkPattern(buf[:n], off); cerr != nil {
				b.fail(fmt.Errorf("%s: %w", what, cerr))
				return nil
			}
			off += int64(n)
			b.n.Add(int64(n))
		}
		if err != nil {
			return err
		}
	}
}

func (b *bulk) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil && !b.stopped.Load() {
		b.err = err
	}
}

func (b *bulk) error() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// stop ends the transfer; errors after it do not count.
func (b *bulk) stop() {
	b.stopped.Store(true)
	_ = b.c.Close()
}

func counts(bs []*bulk) []int64 {
	n := make([]int64, len(bs))
	for i, b := range bs {
		n[i] = b.n.Load()
	}
	return n
}

// startDownload reads the source through addr until stopped, checking
// every byte.
func startDownload(addr string, wg *sync.WaitGroup) (*bulk, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	b := &bulk{c: c}
	wg.Go(func() {
		if err := b.count(c, "download"); err != nil {
			b.fail(fmt.Errorf("download: %w", err))
		}
	})
	return b, nil
}

var uploadIDs atomic.Uint64

// startUpload sends the pattern to the sink through addr until stopped;
// the sink checks and counts what arrives.
func startUpload(addr string, be *backends, wg *sync.WaitGroup) (*bulk, error) {
	b := &bulk{id: uploadIDs.Add(1)}
	be.uploads.Store(b.id, b)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		be.uploads.Delete(b.id)
		return nil, err
	}
	b.c = c
	wg.Go(func() {
		var id [8]byte
		binary.BigEndian.PutUint64(id[:], b.id)
		if _, err := c.Write(id[:]); err != nil {
			b.fail(fmt.Errorf("upload: %w", err))
			return
		}
		for off := 0; ; off = (off + 64<<10) % len(pattern) {
			if _, err := c.Write(pattern[off : off+64<<10]); err != nil {
				b.fail(fmt.Errorf("upload: %w", err))
				return
			}
		}
	})
	return b, nil
}
