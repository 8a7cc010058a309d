// Command bench measures gotunnel-mux end to end against a direct loopback
// connection in the same run: it starts local services, the real server
// and client binaries with real config files, and a load generator, all on
// 127.0.0.1, and prints one table per transport (plain TCP, TLS, WebSocket,
// WebSocket over TLS).
//
//	go run ./test/bench            # or: make bench
//	go run ./test/bench -json      # one JSON object per figure
//
// Every row is measured in several interleaved rounds (direct, tunnel,
// direct, tunnel, ...) and the median is printed. Downloaded bytes are
// checked against what the source sent.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type figure struct {
	Transport string  `json:"transport"`
	Name      string  `json:"figure"`
	Unit      string  `json:"unit"`
	Direct    float64 `json:"direct,omitempty"`
	Tunnel    float64 `json:"tunnel"`
	Ratio     float64 `json:"ratio,omitempty"` // tunnel / direct
	Goal      string  `json:"goal"`
}

type options struct {
	bin        string
	rounds     int
	dur        time.Duration
	rtts       int
	idle       int
	transports []string
	json       bool
	serverKeys string
	clientKeys string
	serverEnv  []string
	clientEnv  []string
}

func main() {
	var o options
	var transports string
	flag.StringVar(&o.bin, "bin", "", "gotunnel-mux binary (default: build one)")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds per figure")
	flag.DurationVar(&o.dur, "d", 1500*time.Millisecond, "duration of each throughput and connection-rate measurement")
	flag.IntVar(&o.rtts, "rtts", 2000, "round trips per latency measurement")
	flag.IntVar(&o.idle, "idle", 1000, "idle visitor connections for the memory figure")
	flag.StringVar(&transports, "transport", "plain,tls,ws,wss", "transports to measure, comma-separated: plain, tls, ws, wss")
	flag.BoolVar(&o.json, "json", false, "print JSON lines instead of tables")
	flag.StringVar(&o.serverKeys, "server-toml", "", "extra top-level lines for server.toml (tuning experiments)")
	flag.StringVar(&o.clientKeys, "client-toml", "", "extra top-level lines for client.toml")
	var procEnv, serverEnv, clientEnv string
	flag.StringVar(&procEnv, "proc-env", "", "extra environment for the two processes, comma-separated (GOMAXPROCS=1,GOGC=200)")
	flag.StringVar(&serverEnv, "server-env", "", "extra environment for the server only")
	flag.StringVar(&clientEnv, "client-env", "", "extra environment for the client only")
	flag.Parse()
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	o.serverEnv = append(split(procEnv), split(serverEnv)...)
	o.clientEnv = append(split(procEnv), split(clientEnv)...)
	o.transports = strings.Split(transports, ",")
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options, out io.Writer) error {
	dir, err := os.MkdirTemp("", "gotunnel-mux-bench")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if o.bin == "" {
		o.bin = filepath.Join(dir, "gotunnel-mux")
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", o.bin, "./cmd/gotunnel-mux")
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build does
		if b, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %w\n%s", err, b)
		}
	}
	be, err := startBackends()
	if err != nil {
		return err
	}
	defer be.close()
	for _, tr := range o.transports {
		start := time.Now()
		figs, err := measure(o, dir, tr, be)
		if err != nil {
			return fmt.Errorf("%s: %w", tr, err)
		}
		report(out, o, tr, figs, time.Since(start))
	}
	return nil
}

// measure runs every figure for one transport.
func measure(o options, dir, transport string, be *backends) ([]figure, error) {
	tdir := filepath.Join(dir, transport)
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return nil, err
	}
	t, err := startTunnel(o.bin, tdir, transport, be, o.serverKeys, o.clientKeys, o.serverEnv, o.clientEnv)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	time.Sleep(500 * time.Millisecond) // let the processes settle before the first reading
	startRSS, startPSS := t.rssKiB(), t.pssKiB()
	// Idle connections first, on fresh processes: later, memory that bulk
	// transfers made resident would hide their cost.
	perIdle, err := idleCost(t, o.idle)
	if err != nil {
		return nil, fmt.Errorf("idle connections: %w", err)
	}

	direct := map[string]string{"source": be.source.Addr().String(), "echo": be.echo.Addr().String()}
	tunneled := map[string]string{"source": t.source, "echo": t.echo}
	samples := map[string][2][]float64{}
	add := func(name string, i int, v float64) {
		s := samples[name]
		s[i] = append(s[i], v)
		samples[name] = s
	}
	var cpuUsed time.Duration
	var moved int64
	for range o.rounds {
		for i, addrs := range []map[string]string{direct, tunneled} {
			cpu0 := t.cpu()
			v, n1, err := throughput(addrs["source"], 1, o.dur)
			if err != nil {
				return nil, fmt.Errorf("1 connection: %w", err)
			}
			add("1conn", i, v)
			v, n8, err := throughput(addrs["source"], 8, o.dur)
			if err != nil {
				return nil, fmt.Errorf("8 connections: %w", err)
			}
			add("8conn", i, v)
			if i == 1 {
				cpuUsed += t.cpu() - cpu0
				moved += n1 + n8
			}
			p50, _, err := roundTrips(addrs["echo"], o.rtts)
			if err != nil {
				return nil, fmt.Errorf("round trips: %w", err)
			}
			add("rtt", i, float64(p50.Microseconds()))
			rate, err := connRate(addrs["echo"], 4, o.dur)
			if err != nil {
				return nil, fmt.Errorf("connection rate: %w", err)
			}
			add("connrate", i, rate)
		}
		if err := t.alive(); err != nil {
			return nil, err
		}
	}
	med := func(name string, i int) float64 { return median(samples[name][i]) }
	ratio := func(name string) float64 { return med(name, 1) / med(name, 0) }
	return []figure{
		{transport, "1 connection, MiB/s", "MiB/s", med("1conn", 0), med("1conn", 1), ratio("1conn"), ">= 0.30x"},
		{transport, "8 connections, MiB/s", "MiB/s", med("8conn", 0), med("8conn", 1), ratio("8conn"), ">= 0.35x"},
		{transport, "1-byte round trip p50, us", "us", med("rtt", 0), med("rtt", 1), ratio("rtt"), "<= 4x"},
		{transport, "new connections per second", "conn/s", med("connrate", 0), med("connrate", 1), ratio("connrate"), ">= 0.5x"},
		{transport, "memory per idle visitor connection (both processes), KiB", "KiB", 0, perIdle, 0, "<= 32 KiB"},
		{transport, "memory of both processes at start, MiB", "MiB", 0, float64(startRSS) / 1024, 0, "<= 16 MiB"},
		{transport, "  the same, shared binary pages counted once (PSS), MiB", "MiB", 0, float64(startPSS) / 1024, 0, ""},
		{transport, "CPU seconds (both processes) per GiB moved", "s/GiB", 0, cpuUsed.Seconds() / (float64(moved) / (1 << 30)), 0, "<= 2.5"},
	}, nil
}

// idleCost opens n idle visitor connections through the tunnel and
// returns the growth of both processes' resident memory per connection.
func idleCost(t *tunnel, n int) (float64, error) {
	before := t.rssKiB()
	conns, err := idleConns(t.echo, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if err != nil {
		return 0, err
	}
	// Idle means a steady state: both processes release an idle stream's
	// receive buffer every 5 s.
	time.Sleep(6 * time.Second)
	return float64(t.rssKiB()-before) / float64(n), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(out io.Writer, o options, transport string, figs []figure, took time.Duration) {
	if o.json {
		enc := json.NewEncoder(out)
		for _, f := range figs {
			_ = enc.Encode(f)
		}
		return
	}
	fmt.Fprintf(out, "\ngotunnel-mux bench, transport %s: medians of %d interleaved rounds, %s each; direct = the same load straight to the local service (%s)\n\n",
		transport, o.rounds, o.dur, took.Round(time.Second))
	fmt.Fprintf(out, "%-58s %10s %10s %8s   %s\n", "figure", "direct", "tunnel", "ratio", "goal")
	for _, f := range figs {
		d, r := "-", ""
		if f.Direct != 0 {
			d, r = fmt.Sprintf("%.1f", f.Direct), fmt.Sprintf("%.2fx", f.Ratio)
		}
		fmt.Fprintf(out, "%-58s %10s %10.1f %8s   %s\n", f.Name, d, f.Tunnel, r, f.Goal)
	}
}
