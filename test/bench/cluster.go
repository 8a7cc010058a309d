package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// -cluster measures what a fleet's registry costs a server (cluster.go):
// logins a second (4 clients logging in and out as fast as they can,
// each with a name of its own) and the latency of one register (a
// remote_port 0 mapping, then its unregister), against a server alone
// ("direct" column) and the same server with [cluster] ("tunnel"
// column), in interleaved rounds. etcd is embedded in this process
// unless -etcd names one (such as Debian's etcd-server).

const benchToken = "bench-token-0123456789abcdef"

// startBenchEtcd starts a one-member etcd on loopback in dir; stop ends it.
func startBenchEtcd(dir string) (endpoint string, stop func(), err error) {
	zero, _ := url.Parse("http://127.0.0.1:0")
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = "bench", filepath.Join(dir, "etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*zero}, []url.URL{*zero}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*zero}, []url.URL{*zero}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		return "", nil, errors.New("embedded etcd not ready within 20s")
	}
	return "http://" + e.Clients[0].Addr().String(), e.Close, nil
}

// startBenchServer starts a server binary, with cluster as its
// [cluster] table ("" for none), and returns it and its address.
func startBenchServer(o options, dir, name, cluster string) (*proc, string, error) {
	cfg := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"
max_unauthenticated_per_ip = 256
%s
[log]
format = "json"
level = "info"
%s`, benchToken, o.serverKeys, cluster)), 0o600); err != nil {
		return nil, "", err
	}
	p, err := startProc(o.bin, o.serverEnv, "server", "--config", cfg)
	if err != nil {
		return nil, "", err
	}
	m, err := p.waitLog("server listening", func(m map[string]any) bool { return m["msg"] == "server listening" })
	if err != nil {
		p.stop()
		return nil, "", err
	}
	return p, m["addr"].(string), nil
}

func measureCluster(o options, dir, _ string, _ *backends) ([]figure, error) {
	endpoint := o.etcd
	if endpoint == "" {
		ep, stop, err := startBenchEtcd(dir)
		if err != nil {
			return nil, fmt.Errorf("etcd: %w", err)
		}
		defer stop()
		endpoint = ep
	}
	alone, aloneAddr, err := startBenchServer(o, dir, "alone", "")
	if err != nil {
		return nil, err
	}
	defer alone.stop()
	fleet, fleetAddr, err := startBenchServer(o, dir, "fleet", fmt.Sprintf("[cluster]\netcd_endpoints = [%q]\nname = \"bench\"\npublic_host = \"127.0.0.1\"\nprefix = \"/gotunnel-mux-bench/\"\n", endpoint))
	if err != nil {
		return nil, err
	}
	defer fleet.stop()
	// The fleet's server logs in clients once it has its lease.
	for deadline := time.Now().Add(20 * time.Second); ; {
		r, err := rawLogin(fleetAddr, "bench-ready")
		if err == nil {
			_ = r.sess.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the fleet's server logs no client in: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rates [2][]float64
	var p50s, p99s [2][]float64
	for range o.rounds {
		for i, addr := range []string{aloneAddr, fleetAddr} {
			rate, err := loginRate(addr, 4, o.dur)
			if err != nil {
				return nil, fmt.Errorf("logins: %w", err)
			}
			rates[i] = append(rates[i], rate)
			p50, p99, err := registerLatency(addr, 300)
			if err != nil {
				return nil, fmt.Errorf("registers: %w", err)
			}
			p50s[i] = append(p50s[i], float64(p50.Microseconds()))
			p99s[i] = append(p99s[i], float64(p99.Microseconds()))
		}
		if err := errors.Join(alive(alone), alive(fleet)); err != nil {
			return nil, err
		}
	}
	row := func(name, unit string, v [2][]float64, goal string) figure {
		a, f := median(v[0]), median(v[1])
		return figure{Transport: "plain", Name: name, Unit: unit, Direct: a, Tunnel: f, Ratio: f / a, Goal: goal}
	}
	return []figure{
		row("logins per second (4 clients)", "logins/s", rates, ">= 0.3x"),
		row("register reply p50, us", "us", p50s, ""),
		row("register reply p99, us", "us", p99s, ""),
	}, nil
}

// rawSession is a logged-in session written by hand: a yamux session and
// its control stream.
type rawSession struct {
	sess *mux.Session
	ctl  *mux.Stream
}

func rawLogin(addr, name string) (*rawSession, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	s, err := mux.Client(c, mux.Options{})
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	r := &rawSession{sess: s}
	if r.ctl, err = s.OpenControl(); err == nil {
		err = control.WriteFrame(r.ctl, &control.Login{Version: control.Version, Token: benchToken, Name: name, ClientID: "bench"})
	}
	var m control.Message
	if err == nil {
		m, err = control.ReadFrame(r.ctl)
	}
	if resp, ok := m.(*control.LoginResp); err == nil && (!ok || resp.Status != control.StatusOK) {
		err = fmt.Errorf("login refused: %+v", m)
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return r, nil
}

// loginRate is how many logins a second workers clients manage for d,
// each logging in under a name of its own and closing at once.
func loginRate(addr string, workers int, d time.Duration) (float64, error) {
	var n atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for w := range workers {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				r, err := rawLogin(addr, fmt.Sprintf("bench-%d-%d", w, i))
				if err != nil {
					once.Do(func() { first = err })
					return
				}
				_ = r.sess.Close()
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds(), first
}

// registerLatency registers a remote_port 0 mapping n times in one
// session, unregistering it each time, and returns the median and 99th
// percentile of register to register_resp.
func registerLatency(addr string, n int) (p50, p99 time.Duration, err error) {
	r, err := rawLogin(addr, "bench-register")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = r.sess.Close() }()
	lat := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := control.WriteFrame(r.ctl, &control.Register{Name: "m", Protocol: control.ProtocolTCP, LocalAddr: "127.0.0.1:1", Online: true}); err != nil {
			return 0, 0, err
		}
		m, err := control.ReadFrame(r.ctl)
		if err != nil {
			return 0, 0, err
		}
		if resp, ok := m.(*control.RegisterResp); !ok || resp.Status != control.StatusOK {
			return 0, 0, fmt.Errorf("register refused: %+v", m)
		}
		lat = append(lat, time.Since(start))
		if err := control.WriteFrame(r.ctl, &control.Unregister{Name: "m"}); err != nil {
			return 0, 0, err
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}
