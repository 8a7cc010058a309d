package test

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestFiveThousandIdleVisitors: 5,000 idle visitor connections through one
// session stay alive, and the two processes (the plain binaries) stay
// under a memory budget of 48 KiB per visitor above their idle start. The
// figure is logged; docs/performance.md records it.
func TestFiveThousandIdleVisitors(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 5,000 connections")
	}
	leakCheck(t)
	const visitors = 5000
	const budgetKiB = 48
	be := startBackend(t, func(c net.Conn) {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	})
	bin := buildPlainBinary(t)
	scfg := writeFile(t, "server.toml", fmt.Sprintf("bind_addr = \"127.0.0.1:0\"\ntoken = %q\npublic_addr = \"127.0.0.1\"\n[log]\nformat = \"json\"\n", testToken))
	srv := startBinary(t, bin, nil, "server", "--config", scfg)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	ccfg := writeFile(t, "client.toml", fmt.Sprintf("server_addr = %q\ntoken = %q\n[log]\nformat = \"json\"\n[[mappings]]\nname = \"e\"\nlocal_addr = %q\nhealth_check = false\n", addr, testToken, be.addr))
	cli := startBinary(t, bin, nil, "client", "--config", ccfg)
	port := int(cli.waitLog(t, "mapping up", mappingLine("e"))["remote_port"].(float64))

	rss := func() int {
		a, _ := procMemory(t, srv.cmd.Process.Pid)
		b, _ := procMemory(t, cli.cmd.Process.Pid)
		return a + b
	}
	before := rss()
	conns := make([]net.Conn, 0, visitors)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	ping := func(c net.Conn, i int) {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b := []byte{byte(i)}
		if _, err := c.Write(b); err != nil {
			t.Fatalf("visitor %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			t.Fatalf("visitor %d: echo %v, %v", i, b, err)
		}
	}
	for i := range visitors {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", itoa(port)), 5*time.Second)
		if err != nil {
			t.Fatalf("visitor %d: %v", i, err)
		}
		conns = append(conns, c)
		ping(c, i)
	}
	time.Sleep(6 * time.Second) // idle: past one release of idle stream buffers
	after := rss()
	perVisitor := float64(after-before) / visitors
	t.Logf("%d idle visitors: server + client resident %d KiB -> %d KiB, %.1f KiB per visitor (budget %d); test process goroutines %d",
		visitors, before, after, perVisitor, budgetKiB, runtime.NumGoroutine())
	if perVisitor > budgetKiB {
		t.Errorf("%.1f KiB per idle visitor, over the budget of %d KiB", perVisitor, budgetKiB)
	}
	for i, c := range conns { // every one still works
		ping(c, i)
	}
}
