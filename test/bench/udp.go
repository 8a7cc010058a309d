package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The UDP rows (-udp): iperf3 (Debian's package) in UDP mode at fixed
// offered rates, straight to an iperf3 server and through a UDP mapping,
// with the loss and jitter iperf3 reports. iperf3 talks to one port over
// both TCP (its control connection) and UDP (the datagrams), so the
// tunnel carries two mappings on the same remote port: a TCP one and a
// UDP one. Datagrams of 1,400 bytes, as a VPN's would be. iperf3 runs
// with 2 MiB socket buffers (-w 2M): with the kernel's default its own
// receiving socket overflows whenever it is not scheduled for a
// millisecond, direct or not, and the row would measure iperf3.

const udpDatagram = 1400

// udpRates are the offered rates, Mbit/s.
var udpRates = []int{100, 500, 1000}

// iperfResult is what the rows take from iperf3's JSON report: the
// receiver's side of the UDP test.
type iperfResult struct {
	End struct {
		Sum iperfSum `json:"sum"`
	} `json:"end"`
	Error string `json:"error"`
}

type iperfSum struct {
	BitsPerSecond float64 `json:"bits_per_second"`
	JitterMs      float64 `json:"jitter_ms"`
	LostPercent   float64 `json:"lost_percent"`
	Packets       int64   `json:"packets"`
}

// measureUDP runs the UDP rows for one transport.
func measureUDP(o options, dir, transport string, _ *backends) ([]figure, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, errors.New("iperf3 is not installed (apt-get install iperf3)")
	}
	tdir := filepath.Join(dir, transport+"-udp")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return nil, err
	}
	iperfPort, err := freePort()
	if err != nil {
		return nil, err
	}
	srv := exec.Command("iperf3", "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(iperfPort))
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(iperfPort))
	if err := waitListen(local); err != nil {
		return nil, err
	}
	remote, err := freePort()
	if err != nil {
		return nil, err
	}
	t, err := startTunnel(tunnelSpec{bin: o.bin, dir: tdir, transport: transport,
		mappings: [][2]string{{"iperf-tcp", local}, {"iperf-udp", local}},
		mappingExtra: map[string]string{
			"iperf-tcp": fmt.Sprintf("remote_port = %d\n", remote),
			"iperf-udp": fmt.Sprintf("remote_port = %d\nprotocol = \"udp\"\n", remote),
		},
		serverKeys: o.serverKeys, clientKeys: o.clientKeys, serverEnv: o.serverEnv, clientEnv: o.clientEnv})
	if err != nil {
		return nil, err
	}
	defer t.stop()
	secs := max(int(o.dur.Round(time.Second)/time.Second), 2)
	var figs []figure
	for _, rate := range udpRates {
		var dRate, tRate, dLoss, tLoss, dJit, tJit []float64
		for range o.rounds {
			d, err := iperfUDP(iperfPort, rate, secs)
			if err != nil {
				return nil, fmt.Errorf("direct: %w", err)
			}
			tu, err := iperfUDP(remote, rate, secs)
			if err != nil {
				return nil, fmt.Errorf("tunnel: %w", err)
			}
			dRate, tRate = append(dRate, d.delivered()), append(tRate, tu.delivered())
			dLoss, tLoss = append(dLoss, d.LostPercent), append(tLoss, tu.LostPercent)
			dJit, tJit = append(dJit, d.JitterMs*1000), append(tJit, tu.JitterMs*1000)
			if err := t.alive(); err != nil {
				return nil, err
			}
		}
		name := fmt.Sprintf("UDP %d Mbit/s offered, %d-byte datagrams", rate, udpDatagram)
		lossDiff, jitDiff := median(tLoss)-median(dLoss), median(tJit)-median(dJit)
		figs = append(figs,
			figure{Transport: transport, Name: name + ": delivered, Mbit/s", Unit: "Mbit/s",
				Direct: median(dRate), Tunnel: median(tRate), Ratio: median(tRate) / median(dRate), Goal: "report"},
			figure{Transport: transport, Name: name + ": lost, %", Unit: "%",
				Direct: median(dLoss), Tunnel: median(tLoss), Diff: &lossDiff, Goal: "report"},
			figure{Transport: transport, Name: name + ": jitter, µs", Unit: "µs",
				Direct: median(dJit), Tunnel: median(tJit), Diff: &jitDiff, Goal: "report"})
	}
	return figs, nil
}

// delivered is the rate that reached the receiver, Mbit/s: the offered
// rate less what was lost.
func (s *iperfSum) delivered() float64 { return s.BitsPerSecond / 1e6 * (1 - s.LostPercent/100) }

// iperfUDP runs one iperf3 UDP test against port on loopback and returns
// the receiver's figures.
func iperfUDP(port, mbits, secs int) (*iperfSum, error) {
	out, err := exec.Command("iperf3", "-c", "127.0.0.1", "-p", strconv.Itoa(port), "-u",
		"-b", strconv.Itoa(mbits)+"M", "-l", strconv.Itoa(udpDatagram), "-t", strconv.Itoa(secs), "-w", "2M", "--json").Output()
	var r iperfResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return nil, fmt.Errorf("iperf3: %w: %s", errors.Join(err, jerr), out)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", r.Error)
	}
	return &r.End.Sum, nil
}

// freePort is a loopback port free for TCP and UDP a moment ago.
func freePort() (int, error) {
	for range 16 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = ln.Close()
		if err == nil {
			_ = pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

// waitListen waits up to 5 s for addr to accept TCP connections.
func waitListen(addr string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling for a process we do not control
	}
	return fmt.Errorf("nothing listens on %s after 5 s", addr)
}
