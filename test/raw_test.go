package test

import (
	"net"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// rawClient is a hand-driven client: a real yamux session and control
// stream, with no loops of its own, so that a test can make it misbehave
// (stop reading, go silent, send garbage).
type rawClient struct {
	conn net.Conn
	sess *mux.Session
	ctl  *mux.Stream
}

// dialRaw connects and opens the control stream; it does not log in.
func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return rawOn(t, c)
}

// rawOn opens a session and its control stream on c; it does not log in.
func rawOn(t *testing.T, c net.Conn) *rawClient {
	t.Helper()
	s, err := mux.Client(c, mux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := s.OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &rawClient{conn: c, sess: s, ctl: ctl}
}

func (r *rawClient) send(t *testing.T, m control.Message) {
	t.Helper()
	if err := control.WriteFrame(r.ctl, m); err != nil {
		t.Fatalf("send %s: %v", m.Type(), err)
	}
}

func (r *rawClient) recv(t *testing.T) control.Message {
	t.Helper()
	_ = r.ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := control.ReadFrame(r.ctl)
	if err != nil {
		t.Fatalf("read control frame: %v", err)
	}
	return m
}

// login logs in with name and registers maps; it fails the test unless
// every step succeeds, and returns the bound ports.
func (r *rawClient) login(t *testing.T, name string, maps ...control.Register) []int {
	t.Helper()
	r.send(t, &control.Login{Version: control.Version, Token: testToken, Name: name, ClientID: "raw"})
	if resp, ok := r.recv(t).(*control.LoginResp); !ok || resp.Status != control.StatusOK {
		t.Fatalf("login reply = %+v, want ok", resp)
	}
	var ports []int
	for _, m := range maps {
		m.Protocol = control.ProtocolTCP
		r.send(t, &m)
		resp, ok := r.recv(t).(*control.RegisterResp)
		if !ok || resp.Status != control.StatusOK {
			t.Fatalf("register %s reply = %+v, want ok", m.Name, resp)
		}
		ports = append(ports, resp.RemotePort)
	}
	return ports
}
