package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// sinkPrefix marks a datagram the UDP echo service reads and never
// answers.
var sinkPrefix = []byte("SINK")

// udpService is a local UDP service on loopback that answers each
// datagram with what answer returns (nil: no answer). It runs until the
// test ends.
func udpService(t *testing.T, answer func(d []byte) []byte) string {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadBuffer(4 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if a := answer(buf[:n]); a != nil {
				_, _ = pc.WriteToUDPAddrPort(a, from)
			}
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return pc.LocalAddr().String()
}

// udpEchoService is a udpService that sends each datagram back to its
// sender, but for those that start with sinkPrefix, which it drops.
func udpEchoService(t *testing.T) string {
	return udpService(t, func(d []byte) []byte {
		if bytes.HasPrefix(d, sinkPrefix) {
			return nil
		}
		return d
	})
}

// udpDeafService is a UDP socket that never reads: its kernel buffer fills
// and drops what comes after. It stays bound until the test ends.
func udpDeafService(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc.LocalAddr().String()
}

// udpFlowStats is what one echo flow saw.
type udpFlowStats struct {
	resent int // datagrams sent again after no answer in 500 ms
}

// udpEchoFlow is one visitor flow: n datagrams of random sizes (8 to 1,400
// bytes, seq and id first) to port, each waited for before the next and
// sent again when its echo is late. Every echo must be exactly a datagram
// sent (neither split nor merged with another); the hash of the sent
// datagrams must equal that of the first echo of each.
func udpEchoFlow(port, id, n int) (udpFlowStats, error) {
	var st udpFlowStats
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return st, err
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	sent, got := sha256.New(), sha256.New()
	buf := make([]byte, 1<<16)
	var past [][]byte // every datagram sent, by seq
	deadline := time.Now().Add(60 * time.Second)
	for seq := range n {
		d := make([]byte, 8+rng.IntN(1400-8+1))
		binary.BigEndian.PutUint16(d, uint16(id))
		binary.BigEndian.PutUint32(d[2:], uint32(seq))
		for i := 8; i < len(d); i++ {
			d[i] = byte(rng.Uint32())
		}
		past = append(past, d)
		sent.Write(d)
		for answered := false; !answered; {
			if time.Now().After(deadline) {
				return st, fmt.Errorf("flow %d: datagram %d not echoed within 60 s in all", id, seq)
			}
			if _, err := c.Write(d); err != nil {
				return st, fmt.Errorf("flow %d: write: %w", id, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				k, err := c.Read(buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					st.resent++
					break
				}
				if err != nil {
					return st, fmt.Errorf("flow %d: read: %w", id, err)
				}
				if k < 8 || binary.BigEndian.Uint16(buf) != uint16(id) {
					return st, fmt.Errorf("flow %d: a %d-byte datagram that is not this flow's", id, k)
				}
				s := int(binary.BigEndian.Uint32(buf[2:]))
				if s > seq || !bytes.Equal(buf[:k], past[s]) {
					return st, fmt.Errorf("flow %d: echo of %d is %d bytes and not the %d sent: split or merged", id, s, k, len(past[min(s, seq)]))
				}
				if s == seq {
					got.Write(buf[:k])
					answered = true
					break
				}
				// a late echo of a datagram sent twice: already counted
			}
		}
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return st, fmt.Errorf("flow %d: the echoes' hash differs from the datagrams'", id)
	}
	return st, nil
}

// udpFlood sends perMs datagrams of size to port every millisecond until
// stop is closed, and counts them. It is a flood the tunnel must carry
// beside the other flows, not a denial of service on the port: a socket
// flooded at full speed loses other visitors' datagrams in the kernel,
// before any program reads them.
func udpFlood(port, size, perMs int, prefix []byte, stop <-chan struct{}, sent *atomic.Int64) error {
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return err
	}
	defer c.Close()
	d := bytes.Repeat([]byte{'z'}, size)
	copy(d, prefix)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		for range perMs {
			if _, err := c.Write(d); err == nil {
				sent.Add(1)
			}
		}
	}
}

// runUDPFlows runs flows concurrent echo flows of n datagrams each.
func runUDPFlows(t *testing.T, port, flows, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, flows)
	var resent atomic.Int64
	for id := range flows {
		wg.Go(func() {
			st, err := udpEchoFlow(port, id, n)
			resent.Add(int64(st.resent))
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d flows x %d datagrams echoed intact; %d sent again after 500 ms without an echo", flows, n, resent.Load())
}

// TestUDPMapping: the engines in process. Flows echo through a UDP
// mapping intact; idle flows end on both sides and free their streams;
// the mapping's status says udp.
func TestUDPMapping(t *testing.T) {
	leakCheck(t)
	svc := udpEchoService(t)
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "u", client.Mapping{Name: "dns", LocalAddr: svc, UDP: true, UDPIdleTimeout: 300 * time.Millisecond})
	port := cl.waitUp(t, "dns")["dns"]
	runUDPFlows(t, port, 8, 200)
	var ms server.MappingStatus
	for _, c := range srv.Status().Clients {
		for _, m := range c.Mappings {
			ms = m
		}
	}
	if ms.Protocol != control.ProtocolUDP || ms.Visitors < 8 {
		t.Errorf("server status of the mapping %+v, want protocol udp and at least 8 visitors", ms)
	}
	// Idle flows end (300 ms) and free their streams on both sides.
	deadline := time.Now().Add(10 * time.Second)
	for srv.ActiveVisitors() != 0 || cl.ActiveVisitors() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("live flows 10 s after the last datagram: server %d, client %d", srv.ActiveVisitors(), cl.ActiveVisitors())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A flow after the end of the others starts afresh.
	runUDPFlows(t, port, 1, 10)
	if st := cl.Status(); st.Mappings[0].Protocol != control.ProtocolUDP || st.Mappings[0].BytesIn == 0 {
		t.Errorf("client status %+v, want protocol udp and bytes in", st.Mappings[0])
	}
}

// TestUDPMappingOldServer: a server that does not name the udp feature is
// not sent the mapping (it would take it for a malformed register and end
// the session); the client refuses it with 1013 and keeps the others.
func TestUDPMappingOldServer(t *testing.T) {
	leakCheck(t)
	ln, registers := startOldServer(t)
	cl := startClient(t, ln.Addr().String(), "old",
		client.Mapping{Name: "dns", LocalAddr: "127.0.0.1:53", UDP: true},
		client.Mapping{Name: "plain", LocalAddr: "127.0.0.1:1"})
	e := cl.waitEvent(t, client.EventMappingFailed, "dns")
	var re *control.RejectError
	if !errors.As(e.Err, &re) || re.Code != control.CodeFeatureMissing || !strings.Contains(re.Reason, "UDP") {
		t.Errorf("dns failed with %v, want code 1013 naming UDP", e.Err)
	}
	cl.waitUp(t, "plain")
	if r := <-registers; r.Name != "plain" || r.Protocol != control.ProtocolTCP {
		t.Errorf("the old server got a register for %q (%s), want only plain", r.Name, r.Protocol)
	}
	select {
	case r := <-registers:
		t.Errorf("the old server got a second register, for %q (%s)", r.Name, r.Protocol)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestBinaryUDPFlows drives the real binaries: 64 concurrent flows each
// echo 1,000 datagrams of random sizes, intact and none split or merged,
// while two other flows are flooded (up to 2,000 datagrams a second
// each): one whose datagrams the echo service reads and never answers,
// and one on a second mapping whose local service never reads at all. Then every echo flow ends after its idle
// timeout: the server's access log has a clean end for each.
func TestBinaryUDPFlows(t *testing.T) {
	leakCheck(t)
	echoSvc, deafSvc := udpEchoService(t), udpDeafService(t)
	srv, addr := serverBinary(t, "", "")
	cli := clientBinary(t, addr, "", fmt.Sprintf(`
[[mappings]]
name = "echo"
protocol = "udp"
local_addr = %q
udp_idle_timeout = "1s"

[[mappings]]
name = "deaf"
protocol = "udp"
local_addr = %q
`, echoSvc, deafSvc))
	ports := map[string]int{}
	for len(ports) < 2 {
		m := cli.waitLog(t, "both mappings up", mappingLine(""))
		ports[m["mapping"].(string)] = int(m["remote_port"].(float64))
	}

	stop := make(chan struct{})
	var sunk, deaf atomic.Int64
	var floods sync.WaitGroup
	floods.Go(func() { _ = udpFlood(ports["echo"], 1400, 2, sinkPrefix, stop, &sunk) })
	floods.Go(func() { _ = udpFlood(ports["deaf"], 1400, 2, nil, stop, &deaf) })
	runUDPFlows(t, ports["echo"], 64, 1000)
	close(stop)
	floods.Wait()
	t.Logf("meanwhile %d datagrams flooded into a flow never answered, %d into a service that never reads", sunk.Load(), deaf.Load())

	// 65 flows of echo (64 and the sink) end after 1 s of quiet, cleanly.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ended := 0
		for _, line := range strings.Split(srv.output(), "\n") {
			if strings.Contains(line, `"msg":"visitor closed"`) && strings.Contains(line, `"mapping":"echo"`) && strings.Contains(line, `"end":"closed"`) {
				ended++
			}
		}
		if ended >= 65 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d echo flows ended cleanly 20 s after the last datagram, want 65", ended)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBinaryUDPDNS: dig asks a real DNS server (dnsmasq, Debian's
// dnsmasq-base) through a UDP mapping 1,000 questions, each from a
// socket of its own (so 1,000 flows), and every answer is right.
func TestBinaryUDPDNS(t *testing.T) {
	dnsmasq := program(t, "CI_REQUIRE_DNS", "no dnsmasq (Debian package dnsmasq-base): TestBinaryUDPDNS skipped", "dnsmasq", "/usr/sbin/dnsmasq")
	dig := program(t, "CI_REQUIRE_DNS", "no dig (Debian package dnsutils or bind9-dnsutils): TestBinaryUDPDNS skipped", "dig")
	leakCheck(t)
	const names = 1000
	dir := t.TempDir()
	var hosts, queries strings.Builder
	for i := range names {
		fmt.Fprintf(&hosts, "10.77.%d.%d h%d.tunnel.test\n", i/256, i%256, i)
	}
	hostsFile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	dnsPort := startDnsmasq(t, dnsmasq, dig, hostsFile)

	_, addr := serverBinary(t, "", "")
	cli := clientBinary(t, addr, "", fmt.Sprintf(`
[[mappings]]
name = "dns"
protocol = "udp"
local_addr = "127.0.0.1:%d"
udp_idle_timeout = "2s"
`, dnsPort))
	port := upPort(t, cli, "dns")

	// One dig in batch mode: a query per line, each from a new socket.
	for i := range names {
		fmt.Fprintf(&queries, "@127.0.0.1 -p %d h%d.tunnel.test A +noall +answer +tries=3 +time=2\n", port, i)
	}
	qf := filepath.Join(dir, "queries")
	if err := os.WriteFile(qf, []byte(queries.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Bounded: dig waits up to 6 s for each answer that does not come.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, dig, "-f", qf).CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	answers := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[3] == "A" {
			answers[strings.TrimSuffix(f[0], ".")] = f[4]
		}
	}
	wrong := 0
	for i := range names {
		name, want := fmt.Sprintf("h%d.tunnel.test", i), fmt.Sprintf("10.77.%d.%d", i/256, i%256)
		if answers[name] != want {
			if wrong < 5 {
				t.Errorf("%s answered %q, want %s", name, answers[name], want)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d answers wrong or missing", wrong, names)
	}
}

// startDnsmasq runs dnsmasq on a loopback UDP port with hostsFile's names
// until the test ends, and returns the port once it answers. The port is
// found free, then given to dnsmasq, which may lose it to another program
// meanwhile: then it exits, and another port is tried.
func startDnsmasq(t *testing.T, dnsmasq, dig, hostsFile string) int {
	t.Helper()
	for range 3 {
		port := freeUDPPort(t)
		dm := exec.Command(dnsmasq, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--addn-hosts="+hostsFile,
			"--listen-address=127.0.0.1", "--bind-interfaces", "--port="+strconv.Itoa(port), "--pid-file=",
			"--user=root", "--cache-size=0", "--log-facility=-")
		var out bytes.Buffer
		dm.Stdout, dm.Stderr = &out, &out
		if err := dm.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = dm.Wait(); close(exited) }() // joined through exited
		deadline := time.Now().Add(10 * time.Second)
		for {
			select {
			case <-exited:
				t.Logf("dnsmasq on port %d exited at once: %s", port, out.String())
			default:
				a, _ := exec.Command(dig, "@127.0.0.1", "-p", strconv.Itoa(port), "h0.tunnel.test", "A", "+short", "+tries=1", "+time=1").Output()
				if strings.TrimSpace(string(a)) == "10.77.0.0" {
					t.Cleanup(func() {
						_ = dm.Process.Kill()
						<-exited
						if t.Failed() {
							t.Logf("dnsmasq:\n%s", out.String())
						}
					})
					return port
				}
				if time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond) // polling a program we do not control
					continue
				}
				_ = dm.Process.Kill()
				<-exited
				t.Fatalf("dnsmasq on port %d did not answer within 10 s: %s", port, out.String())
			}
			break
		}
	}
	t.Fatal("dnsmasq could not keep a port in three tries")
	return 0
}

// freeUDPPort is a loopback UDP port free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// TestUDPMappingProxyProtocol: with proxy_protocol v2, every datagram the
// service gets starts with the UDP form of the header, which
// go-proxyproto parses: the visitor's own address and port as the
// source, the server's public address and the mapping's port as the
// destination; the datagram follows intact.
func TestUDPMappingProxyProtocol(t *testing.T) {
	leakCheck(t)
	type seen struct {
		hdr     *proxyproto.Header
		payload []byte
		err     error
	}
	got := make(chan seen, 16)
	svc := udpService(t, func(d []byte) []byte {
		r := bufio.NewReader(bytes.NewReader(d))
		h, err := proxyproto.Read(r)
		rest, _ := io.ReadAll(r)
		got <- seen{h, rest, err}
		return rest
	})

	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "pp", client.Mapping{Name: "wg", LocalAddr: svc, UDP: true,
		ProxyProtocol: client.ProxyProtocolV2})
	port := cl.waitUp(t, "wg")["wg"]
	v, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for i := range 3 {
		msg := []byte(fmt.Sprintf("datagram %d", i))
		if _, err := v.Write(msg); err != nil {
			t.Fatal(err)
		}
		var s seen
		select {
		case s = <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("the service got no datagram in 5 s")
		}
		if s.err != nil {
			t.Fatalf("datagram %d: go-proxyproto: %v", i, s.err)
		}
		want := fmt.Sprintf("127.0.0.1:%d", port)
		if s.hdr.TransportProtocol != proxyproto.UDPv4 || s.hdr.SourceAddr.String() != v.LocalAddr().String() || s.hdr.DestinationAddr.String() != want {
			t.Errorf("datagram %d: header %v %s -> %s, want UDPv4 %s -> %s", i, s.hdr.TransportProtocol, s.hdr.SourceAddr, s.hdr.DestinationAddr, v.LocalAddr(), want)
		}
		if !bytes.Equal(s.payload, msg) {
			t.Errorf("datagram %d after the header: %q, want %q", i, s.payload, msg)
		}
		_ = v.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := v.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("echo %d: %q, %v", i, buf[:n], err)
		}
	}
}

// udpAsk sends one datagram to port from src and waits up to wait for an
// answer; ok is false when none came.
func udpAsk(t *testing.T, src netip.Addr, port int, msg string, wait time.Duration) (string, bool) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

// TestUDPMappingDoor: a UDP mapping's flows pass the same door as TCP
// visitors: the server's deny list and the mapping's allow list (no
// stream is opened for a flow turned away), max_udp_flows_per_mapping;
// and removing the mapping frees its UDP port at once.
func TestUDPMappingDoor(t *testing.T) {
	leakCheck(t)
	svc := udpEchoService(t)
	srv := startServer(t, server.Options{DenyIPs: []netip.Prefix{netip.PrefixFrom(visitorBanned, 32)}, MaxUDPFlowsPerMapping: 2})
	m := client.Mapping{Name: "dns", LocalAddr: svc, UDP: true, AllowIPs: visitorAllowed, UDPIdleTimeout: 200 * time.Millisecond}
	cl := startClient(t, srv.addr, "door", m)
	port := cl.waitUp(t, "dns")["dns"]
	status := func() server.MappingStatus {
		for _, c := range srv.Status().Clients {
			for _, m := range c.Mappings {
				return m
			}
		}
		return server.MappingStatus{}
	}
	if got, ok := udpAsk(t, visitorIn, port, "in", 5*time.Second); !ok || got != "in" {
		t.Fatalf("an allowed visitor got %q, %v", got, ok)
	}
	for _, src := range []netip.Addr{visitorOut, visitorBanned} {
		if got, ok := udpAsk(t, src, port, "out", 300*time.Millisecond); ok {
			t.Errorf("visitor %s was answered %q", src, got)
		}
	}
	if st := status(); st.Denied != 2 || st.Visitors != 1 {
		t.Errorf("status %+v: want 2 denied and 1 visitor (one stream opened)", st)
	}
	// Two live flows at most: a third address waits for one to idle out.
	hold := make([]*net.UDPConn, 2)
	for i := range hold {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: visitorIn.AsSlice()}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hold[i] = c
	}
	stopHold := make(chan struct{})
	var holding sync.WaitGroup
	for _, c := range hold {
		holding.Go(func() { // keeps its flow alive past the idle timeout
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				_, _ = c.Write([]byte("keep"))
				select {
				case <-stopHold:
					return
				case <-tick.C:
				}
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.ActiveVisitors() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d live flows, want the 2 held", srv.ActiveVisitors())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, ok := udpAsk(t, visitorIn, port, "third", 300*time.Millisecond); ok {
		t.Errorf("a third flow was answered %q past max_udp_flows_per_mapping = 2", got)
	}
	if st := status(); st.Resets == 0 {
		t.Errorf("status %+v: want the third flow counted as reset", st)
	}
	close(stopHold)
	holding.Wait()
	deadline = time.Now().Add(5 * time.Second)
	for {
		if got, ok := udpAsk(t, visitorIn, port, "later", 200*time.Millisecond); ok && got == "later" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no flow admitted after the held ones idled out")
		}
	}
	// Removing the mapping frees the port at once.
	if _, err := cl.SetMappings(nil); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err == nil {
			_ = pc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("UDP port %d still bound 5 s after the mapping was removed: %v", port, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUDPMappingClientShutdown: a stopping client ends its live UDP flows
// at once (a flow has nothing to finish) instead of waiting out their
// idle timeouts; its Shutdown returns without cutting anything off.
func TestUDPMappingClientShutdown(t *testing.T) {
	leakCheck(t)
	svc := udpEchoService(t)
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "bye", client.Mapping{Name: "dns", LocalAddr: svc, UDP: true, UDPIdleTimeout: time.Hour})
	port := cl.waitUp(t, "dns")["dns"]
	runUDPFlows(t, port, 4, 10)
	if n := cl.ActiveVisitors(); n != 4 {
		t.Fatalf("%d live flows on the client, want 4 (an hour's idle timeout)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want the flows ended cleanly", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.ActiveVisitors() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d flows still live on the server after the client stopped", srv.ActiveVisitors())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
