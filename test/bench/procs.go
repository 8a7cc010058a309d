package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a gotunnel-mux process started for the benchmark, with its JSON
// log lines.
type proc struct {
	cmd   *exec.Cmd
	lines chan map[string]any
	done  chan struct{}
}

func startProc(bin string, env []string, args ...string) (*proc, error) {
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan map[string]any, 256), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { // ends when the process exits; joined through done
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitLog returns the first log line for which match holds.
func (p *proc) waitLog(what string, match func(map[string]any) bool) (map[string]any, error) {
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-p.lines:
			if match(m) {
				return m, nil
			}
		case <-p.done:
			return nil, fmt.Errorf("%s exited before logging %s", p.cmd.Args[1], what)
		case <-timeout:
			return nil, fmt.Errorf("%s: no %s within 20s", p.cmd.Args[1], what)
		}
	}
}

// stop sends SIGTERM and waits up to 10 s, then kills.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rssKiB is the process's resident memory.
func (p *proc) rssKiB() int { return p.memKiB("status", "VmRSS:") }

// pssKiB is the process's proportional share of its resident memory:
// pages shared with the other process (the binary's) count half.
func (p *proc) pssKiB() int { return p.memKiB("smaps_rollup", "Pss:") }

func (p *proc) memKiB(file, key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.cmd.Process.Pid, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// cpu is the process's user plus system CPU time so far.
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / hz
}

// tunnel is a server and a client process with one mapping per local
// service.
type tunnel struct {
	server, client *proc
	addr           map[string]string // visitor address by mapping name
}

// tunnelSpec says how to start a tunnel.
type tunnelSpec struct {
	bin, dir, transport    string
	mappings               [][2]string       // name, local address
	mappingExtra           map[string]string // extra lines of a mapping's table, by name
	serverKeys, clientKeys string            // extra top-level config lines
	serverEnv, clientEnv   []string
	// via, if set, returns the address the client dials instead of the
	// server's (a shaped link in front of it).
	via func(serverAddr string) (string, error)
}

func startTunnel(spec tunnelSpec) (*tunnel, error) {
	const token = "bench-token-0123456789abcdef"
	serverTLS, clientTLS := "", ""
	if spec.transport == "tls" || spec.transport == "wss" {
		var err error
		if serverTLS, clientTLS, err = makePKI(spec.dir); err != nil {
			return nil, err
		}
	}
	scfg := filepath.Join(spec.dir, "server.toml")
	err := os.WriteFile(scfg, []byte(fmt.Sprintf(`bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"
%s
[log]
format = "json"
%s`, token, spec.serverKeys, serverTLS)), 0o600)
	if err != nil {
		return nil, err
	}
	t := &tunnel{addr: map[string]string{}}
	if t.server, err = startProc(spec.bin, spec.serverEnv, "server", "--config", scfg); err != nil {
		return nil, err
	}
	m, err := t.server.waitLog("server listening", func(m map[string]any) bool { return m["msg"] == "server listening" })
	if err != nil {
		t.stop()
		return nil, err
	}
	ccfg := filepath.Join(spec.dir, "client.toml")
	serverAddr := m["addr"].(string)
	if spec.via != nil {
		if serverAddr, err = spec.via(serverAddr); err != nil {
			t.stop()
			return nil, err
		}
	}
	switch spec.transport {
	case "ws", "wss":
		serverAddr = spec.transport + "://" + serverAddr + "/gotunnel"
	}
	var mappings strings.Builder
	for _, mp := range spec.mappings {
		fmt.Fprintf(&mappings, "[[mappings]]\nname = %q\nlocal_addr = %q\nhealth_check = false\n%s", mp[0], mp[1], spec.mappingExtra[mp[0]])
	}
	err = os.WriteFile(ccfg, []byte(fmt.Sprintf(`server_addr = %q
token = %q
name = "bench"
%s
[log]
format = "json"
%s
%s`, serverAddr, token, spec.clientKeys, clientTLS, mappings.String())), 0o600)
	if err != nil {
		t.stop()
		return nil, err
	}
	if t.client, err = startProc(spec.bin, spec.clientEnv, "client", "--config", ccfg); err != nil {
		t.stop()
		return nil, err
	}
	for range spec.mappings {
		m, err := t.client.waitLog("mapping up", func(m map[string]any) bool { _, ok := m["remote_port"]; return ok })
		if err != nil {
			t.stop()
			return nil, err
		}
		name, _ := m["mapping"].(string)
		t.addr[name] = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(m["remote_port"].(float64))))
	}
	return t, nil
}

func (t *tunnel) stop() {
	for _, p := range []*proc{t.client, t.server} {
		if p != nil {
			p.stop()
		}
	}
}

func (t *tunnel) rssKiB() int        { return t.server.rssKiB() + t.client.rssKiB() }
func (t *tunnel) pssKiB() int        { return t.server.pssKiB() + t.client.pssKiB() }
func (t *tunnel) cpu() time.Duration { return t.server.cpu() + t.client.cpu() }

// alive reports a process of the tunnel that exited.
func (t *tunnel) alive() error { return errors.Join(alive(t.server), alive(t.client)) }

func alive(p *proc) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited", p.cmd.Args[1])
	default:
		return nil
	}
}

// makePKI writes a CA and a server certificate for 127.0.0.1 into dir and
// returns the [tls] tables of both sides.
func makePKI(dir string) (serverTable, clientTable string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	files := map[string][]byte{
		"ca.crt":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return "", "", err
		}
	}
	return fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")),
		fmt.Sprintf("[tls]\nca_file = %q\n", filepath.Join(dir, "ca.crt")), nil
}
