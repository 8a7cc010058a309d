package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The bandwidth rows (-bandwidth): one client with two mappings of the
// same source, "limited" (bandwidth_limit = -bandwidth-limit) and
// "source" (no limit). Each round measures the unlimited mapping alone,
// then both at once: bwConns downloads of the limited mapping, which
// share its one limit, beside one download of the unlimited mapping.

// bwConns is how many downloads share the limited mapping.
const bwConns = 4

// bwWarmup is how long a limited download runs before it is measured:
// the limiter starts with a full burst (a tenth of a second's worth),
// and the sockets' buffers fill.
const bwWarmup = time.Second

// measureBandwidth runs the bandwidth rows for one transport.
func measureBandwidth(o options, dir, transport string, be *backends) ([]figure, error) {
	tdir := filepath.Join(dir, transport+"-bandwidth")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return nil, err
	}
	limit := int64(o.bwLimitMiB) << 20
	src := be.source.Addr().String()
	t, err := startTunnel(tunnelSpec{bin: o.bin, dir: tdir, transport: transport,
		mappings:     [][2]string{{"source", src}, {"limited", src}},
		mappingExtra: map[string]string{"limited": fmt.Sprintf("bandwidth_limit = %d\n", limit)},
		serverKeys:   o.serverKeys, clientKeys: o.clientKeys, serverEnv: o.serverEnv, clientEnv: o.clientEnv})
	if err != nil {
		return nil, err
	}
	defer t.stop()
	var alone, beside, limited []float64
	for range o.rounds {
		v, _, err := throughput(t.addr["source"], 1, o.dur)
		if err != nil {
			return nil, fmt.Errorf("unlimited alone: %w", err)
		}
		alone = append(alone, v)
		var wg sync.WaitGroup
		var lim float64
		var limErr error
		wg.Go(func() { lim, limErr = limitedRate(t.addr["limited"], bwConns, o.dur) })
		time.Sleep(bwWarmup) // the unlimited download runs while the limited ones are measured
		v, _, err = throughput(t.addr["source"], 1, o.dur)
		wg.Wait()
		if err = errors.Join(err, limErr); err != nil {
			return nil, fmt.Errorf("both at once: %w", err)
		}
		beside = append(beside, v)
		limited = append(limited, lim)
		if err := t.alive(); err != nil {
			return nil, err
		}
	}
	lmiB := float64(o.bwLimitMiB)
	return []figure{
		{Transport: transport, Name: fmt.Sprintf("limited mapping (%d downloads), MiB/s; direct = its limit", bwConns), Unit: "MiB/s",
			Direct: lmiB, Tunnel: median(limited), Ratio: median(limited) / lmiB, Goal: "0.90x..1.10x"},
		{Transport: transport, Name: "unlimited mapping beside it, MiB/s; direct = it alone", Unit: "MiB/s",
			Direct: median(alone), Tunnel: median(beside), Ratio: median(beside) / median(alone), Goal: ">= 0.90x"},
	}, nil
}

// limitedRate runs conns downloads of addr at once for bwWarmup + d and
// returns MiB/s over all of them in the last d only.
func limitedRate(addr string, conns int, d time.Duration) (float64, error) {
	var mu sync.Mutex
	var total int64
	var errs []error
	var wg sync.WaitGroup
	from := time.Now().Add(bwWarmup)
	for range conns {
		wg.Go(func() {
			n, err := downloadAfter(addr, from, d)
			mu.Lock()
			defer mu.Unlock()
			total += n
			errs = append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(total) / (1 << 20) / d.Seconds(), nil
}

// downloadAfter reads the source through addr until from + d, checking
// every byte, and returns the bytes read after from.
func downloadAfter(addr string, from time.Time, d time.Duration) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	buf := make([]byte, 256<<10)
	var n, counted int64
	_ = c.SetReadDeadline(from.Add(d))
	for {
		m, err := c.Read(buf)
		if m > 0 {
			if err := checkPattern(buf[:m], n); err != nil {
				return counted, err
			}
			n += int64(m)
			if time.Now().After(from) {
				counted += int64(m)
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return counted, nil
			}
			return counted, err
		}
	}
}
