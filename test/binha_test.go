package test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// haServerBinary starts a server binary on bind (host:port, port 0: any)
// whose mapping ports are on public, and returns it and its address.
func haServerBinary(t *testing.T, bind, public string) (*proc, string) {
	t.Helper()
	p := startProc(t, nil, "server", "--config", writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = %q
token = %q
public_addr = %q
heartbeat_timeout = "2s"
heartbeat_check_interval = "200ms"

[log]
format = "json"
`, bind, testToken, public)))
	return p, p.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
}

// TestBinaryHAAll: the real binaries, ha = "all" over two servers, the
// same fixed port on each. Eight downloads run through the second when
// the first is killed with SIGKILL: all eight arrive intact; a visitor to
// the dead one's port is refused at once; a new first server on the same
// address has the mapping again within the backoff.
func TestBinaryHAAll(t *testing.T) {
	leakCheck(t)
	const size = 16 << 20
	be, want := sourceOf(t, 43, size)
	a, aAddr := haServerBinary(t, "127.0.0.1:0", "127.0.0.1")
	_, bAddr := haServerBinary(t, "127.0.0.1:0", "127.0.0.2")
	port := freeOnBoth(t)
	cli := clientBinary(t, "", fmt.Sprintf("server_addrs = [%q, %q]\nha = \"all\"\n", aAddr, bAddr),
		fmt.Sprintf("[[mappings]]\nname = \"dl\"\nlocal_addr = %q\nremote_port = %d\nhealth_check = false\n", be.addr, port))
	up := map[string]bool{}
	for len(up) < 2 {
		m := cli.waitLog(t, "dl up on both servers", mappingLine("dl"))
		up[m["server"].(string)] = true
	}

	viaB := net.JoinHostPort("127.0.0.2", strconv.Itoa(port))
	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for i := range 8 {
		wg.Go(func() {
			signal := sync.OnceFunc(func() { started <- struct{}{} })
			defer signal() // a download that failed early
			v, err := net.DialTimeout("tcp", viaB, 5*time.Second)
			if err != nil {
				t.Errorf("download %d: %v", i, err)
				return
			}
			defer v.Close()
			_ = v.SetDeadline(time.Now().Add(60 * time.Second))
			first := make([]byte, 1<<20)
			if _, err := io.ReadFull(v, first); err != nil {
				t.Errorf("download %d: first MiB: %v", i, err)
				return
			}
			signal()
			n, sum, err := drain(io.MultiReader(bytes.NewReader(first), v))
			if err != nil || n != size || sum != want {
				t.Errorf("download %d: %d bytes (err %v, sum match %v), want %d intact", i, n, err, sum == want, size)
			}
		})
	}
	for range 8 {
		<-started
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	start := time.Now()
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second); err == nil {
		_ = c.Close()
		t.Error("the killed server's port still took a visitor")
	} else if took := time.Since(start); took > time.Second {
		t.Errorf("a visitor to the killed server's port took %s to fail", took)
	}
	wg.Wait()

	_, again := haServerBinary(t, aAddr, "127.0.0.1")
	m := cli.waitLog(t, "dl up again on the first server", func(m map[string]any) bool {
		return mappingLine("dl")(m) && m["server"] == again
	})
	if int(m["remote_port"].(float64)) != port {
		t.Errorf("dl came back on port %v, want %d", m["remote_port"], port)
	}
	timedDownload(t, port, size, want)
}
