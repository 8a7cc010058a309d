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
//
//	go run ./test/bench -shaped    # or: BENCH_FLAGS=-shaped make bench
//
// -shaped measures, instead of the loopback rows, interactive latency
// under load over a slow link: a user-space shaper (shaper.go: a rate, a
// one-way delay and a bounded queue per direction, shared by every
// connection over it) sits between client and server for the tunnel, and
// between the load generator and the services for direct. In each
// scenario (20 Mbit/s and 10 ms each way with 4 downloads, or with 2
// downloads and 2 uploads; 10 Mbit/s and 40 ms each way with 4
// downloads), 1-byte echoes spaced -echo-every apart measure the round
// trip on an idle link, then again while the bulk transfers fill it;
// the rows are the echo p50 and p99 idle and loaded, the goodput of the
// bulk transfers (every byte checked) and how evenly they share it.
// Without -transport it measures plain TCP only; a run takes about 3
// minutes per transport.
//
//	go run ./test/bench -bandwidth
//
// -bandwidth measures, instead of the loopback rows, a bandwidth limit
// (bandwidth.go): one client with a mapping limited to -bandwidth-limit
// MiB/s and an unlimited one; the limited mapping's rate with 4
// downloads at once against its limit, and the unlimited mapping's
// throughput beside it against the same mapping alone, in the same run.
// Without -transport it measures plain TCP only.
//
//	go run ./test/bench -cluster [-etcd http://127.0.0.1:2379]
//
// -cluster measures, instead of the loopback rows, what a fleet's
// registry costs (cluster.go): logins a second and register latency of a
// server alone against the same server with [cluster], in etcd (embedded
// in the benchmark unless -etcd names one).
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
	Transport string   `json:"transport"`
	Scenario  string   `json:"scenario,omitempty"` // a shaped link's
	Name      string   `json:"figure"`
	Unit      string   `json:"unit"`
	Direct    float64  `json:"direct,omitempty"`
	Tunnel    float64  `json:"tunnel"`
	Ratio     float64  `json:"ratio,omitempty"` // tunnel / direct
	Diff      *float64 `json:"diff,omitempty"`  // tunnel - direct
	Goal      string   `json:"goal"`
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

	shaped       bool
	bandwidth    bool
	udp          bool
	cluster      bool
	etcd         string
	bwLimitMiB   int
	shapedQueue  int
	shapedWarmup time.Duration
	shapedDur    time.Duration
	echoEvery    time.Duration
	idleEchoes   int
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
	flag.BoolVar(&o.shaped, "shaped", false, "measure latency under load over a shaped link instead of the loopback rows")
	flag.BoolVar(&o.bandwidth, "bandwidth", false, "measure a mapping's bandwidth limit instead of the loopback rows")
	flag.BoolVar(&o.udp, "udp", false, "measure UDP mappings with iperf3 -u (loss, jitter) instead of the loopback rows")
	flag.BoolVar(&o.cluster, "cluster", false, "measure logins a second and register latency of a server alone and in a fleet ([cluster], etcd) instead of the loopback rows")
	flag.StringVar(&o.etcd, "etcd", "", "with -cluster: etcd's client URL (default: an etcd embedded in the benchmark)")
	flag.IntVar(&o.bwLimitMiB, "bandwidth-limit", 20, "with -bandwidth: the limited mapping's bandwidth_limit, MiB/s")
	flag.IntVar(&o.shapedQueue, "shaped-queue", 64<<10, "with -shaped: the link's queue per direction, bytes")
	flag.DurationVar(&o.shapedWarmup, "shaped-warmup", 2*time.Second, "with -shaped: bulk transfers run this long before the loaded echoes")
	flag.DurationVar(&o.shapedDur, "shaped-d", 6*time.Second, "with -shaped: how long the loaded echoes (and the goodput measurement) run")
	flag.DurationVar(&o.echoEvery, "echo-every", 50*time.Millisecond, "with -shaped: the gap between two echoes")
	flag.IntVar(&o.idleEchoes, "idle-echoes", 20, "with -shaped: echoes on the idle link")
	flag.Parse()
	if o.shaped || o.bandwidth || o.udp || o.cluster {
		transportSet := false
		flag.Visit(func(f *flag.Flag) { transportSet = transportSet || f.Name == "transport" })
		if !transportSet {
			transports = "plain"
		}
	}
	if o.bwLimitMiB < 1 {
		fmt.Fprintln(os.Stderr, "bench: -bandwidth-limit must be at least 1 MiB/s")
		os.Exit(2)
	}
	if o.idleEchoes < 1 || o.echoEvery <= 0 || o.shapedDur < o.echoEvery || o.shapedQueue < mtu {
		fmt.Fprintln(os.Stderr, "bench: -idle-echoes, -echo-every, -shaped-d and -shaped-queue must leave at least one echo and one packet")
		os.Exit(2)
	}
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
	if !o.shaped && !o.bandwidth && !o.udp && !o.cluster {
		if be.web, err = startWeb(filepath.Join(dir, "web")); err != nil {
			fmt.Fprintf(os.Stderr, "bench: the small-requests row is skipped: %v\n", err)
		}
		defer be.web.stop()
	}
	for _, tr := range o.transports {
		start := time.Now()
		measureFn := measure
		switch {
		case o.shaped:
			measureFn = measureShaped
		case o.bandwidth:
			measureFn = measureBandwidth
		case o.udp:
			measureFn = measureUDP
		case o.cluster:
			measureFn = measureCluster
		}
		figs, err := measureFn(o, dir, tr, be)
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
	direct := map[string]string{"source": be.source.Addr().String(), "echo": be.echo.Addr().String()}
	mappings := [][2]string{{"source", direct["source"]}, {"echo", direct["echo"]}}
	if be.web != nil {
		direct["web"] = be.web.addr
		mappings = append(mappings, [2]string{"web", be.web.addr})
	}
	t, err := startTunnel(tunnelSpec{bin: o.bin, dir: tdir, transport: transport,
		mappings:   mappings,
		serverKeys: o.serverKeys, clientKeys: o.clientKeys, serverEnv: o.serverEnv, clientEnv: o.clientEnv})
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

	tunneled := t.addr
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
			if be.web != nil {
				rate, p99, err := smallRequests(addrs["web"], max(o.dur, webDuration))
				if err != nil {
					return nil, fmt.Errorf("small requests: %w", err)
				}
				add("web", i, rate)
				add("webp99", i, float64(p99.Microseconds())/1000)
			}
		}
		if err := t.alive(); err != nil {
			return nil, err
		}
	}
	med := func(name string, i int) float64 { return median(samples[name][i]) }
	ratio := func(name string) float64 { return med(name, 1) / med(name, 0) }
	row := func(name, unit string, direct, tunnel, ratio float64, goal string) figure {
		return figure{Transport: transport, Name: name, Unit: unit, Direct: direct, Tunnel: tunnel, Ratio: ratio, Goal: goal}
	}
	figs := []figure{
		row("1 connection, MiB/s", "MiB/s", med("1conn", 0), med("1conn", 1), ratio("1conn"), ">= 0.30x"),
		row("8 connections, MiB/s", "MiB/s", med("8conn", 0), med("8conn", 1), ratio("8conn"), ">= 0.35x"),
		row("1-byte round trip p50, us", "us", med("rtt", 0), med("rtt", 1), ratio("rtt"), "<= 4x"),
		row("new connections per second", "conn/s", med("connrate", 0), med("connrate", 1), ratio("connrate"), ">= 0.5x"),
		row("memory per idle visitor connection (both processes), KiB", "KiB", 0, perIdle, 0, "<= 32 KiB"),
		row("memory of both processes at start, MiB", "MiB", 0, float64(startRSS)/1024, 0, "<= 16 MiB"),
		row("  the same, shared binary pages counted once (PSS), MiB", "MiB", 0, float64(startPSS)/1024, 0, ""),
		row("CPU seconds (both processes) per GiB moved", "s/GiB", 0, cpuUsed.Seconds()/(float64(moved)/(1<<30)), 0, "<= 2.5"),
	}
	if be.web != nil {
		figs = append(figs,
			row(fmt.Sprintf("small requests (wrk, %d conns, nginx, 1 KiB page), req/s", webConns), "req/s", med("web", 0), med("web", 1), ratio("web"), ">= 0.5x"),
			row("  their p99 latency, ms", "ms", med("webp99", 0), med("webp99", 1), ratio("webp99"), ""))
	}
	return figs, nil
}

// idleCost opens n idle visitor connections through the tunnel and
// returns the growth of both processes' resident memory per connection.
func idleCost(t *tunnel, n int) (float64, error) {
	before := t.rssKiB()
	conns, err := idleConns(t.addr["echo"], n)
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
	switch {
	case o.bandwidth:
		fmt.Fprintf(out, "\ngotunnel-mux bench, transport %s, bandwidth limit: medians of %d rounds, %s each after a %s warm-up; one client, a mapping with bandwidth_limit = %d MiB/s and one without (%s)\n\n",
			transport, o.rounds, o.dur, bwWarmup, o.bwLimitMiB, took.Round(time.Second))
	case o.cluster:
		fmt.Fprintf(out, "\ngotunnel-mux bench, a fleet's registry: medians of %d interleaved rounds, logins for %s each; direct = a server alone, tunnel = the same server with [cluster] in etcd (%s)\n\n",
			o.rounds, o.dur, took.Round(time.Second))
	case o.shaped:
		fmt.Fprintf(out, "\ngotunnel-mux bench, transport %s, shaped link: medians of %d interleaved rounds; 1-byte echoes every %s, %d on the idle link, then for %s after the bulk transfers ran %s; direct = the same load over the same link straight to the local services (%s)\n",
			transport, o.rounds, o.echoEvery, o.idleEchoes, o.shapedDur, o.shapedWarmup, took.Round(time.Second))
	default:
		fmt.Fprintf(out, "\ngotunnel-mux bench, transport %s: medians of %d interleaved rounds, %s each; direct = the same load straight to the local service (%s)\n\n",
			transport, o.rounds, o.dur, took.Round(time.Second))
	}
	scenario := ""
	for i, f := range figs {
		if i == 0 || f.Scenario != scenario {
			scenario = f.Scenario
			if scenario != "" {
				fmt.Fprintf(out, "\n%s\n", scenario)
			}
			fmt.Fprintf(out, "%-58s %10s %10s %10s   %s\n", "figure", "direct", "tunnel", "ratio", "goal")
		}
		num := func(v float64) string {
			if f.Unit == "share" {
				return fmt.Sprintf("%.2f", v)
			}
			return fmt.Sprintf("%.1f", v)
		}
		d, r := "-", ""
		if f.Direct != 0 {
			d = num(f.Direct)
		}
		switch {
		case f.Diff != nil:
			r = fmt.Sprintf("%+.1f %s", *f.Diff, f.Unit)
		case f.Ratio != 0:
			r = fmt.Sprintf("%.2fx", f.Ratio)
		}
		fmt.Fprintf(out, "%-58s %10s %10s %10s   %s\n", f.Name, d, num(f.Tunnel), r, f.Goal)
	}
}
