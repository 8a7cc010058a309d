package test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
)

// tlsServer runs a server that requires TLS with a certificate from ca;
// with clientCA set, it requires client certificates signed by it.
func tlsServer(t *testing.T, ca, clientCA *testCA) (*testServer, *logStore) {
	t.Helper()
	cert := ca.issue(t, "tunnel server", false, time.Time{})
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert.tls}}
	if clientCA != nil {
		cfg.ClientCAs = clientCA.pool()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	opts := fastServer()
	opts.TLS = cfg
	logger, rec := recordingLogger(t)
	opts.Logger = logger
	return startServer(t, opts), rec
}

// failingClient runs a client expected to fail every attempt and returns
// its log once it has failed twice (so it also retried).
func failingClient(t *testing.T, opts client.Options) *logStore {
	t.Helper()
	logger, rec := recordingLogger(t)
	opts.Logger = logger
	opts.Reconnect = client.ReconnectOptions{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond, Factor: 2}
	cl := startClientOpts(t, opts)
	if err := pollFor(10*time.Second, func() bool { return rec.count("disconnected") >= 2 }); err != nil {
		t.Fatalf("client did not fail (and retry) within 10s")
	}
	if n := countEvents(cl.events, client.EventSessionUp); n != 0 {
		t.Errorf("a failing client logged in %d times", n)
	}
	_ = cl.stop(t)
	return rec
}

// lastFailure is the err text of the first "disconnected" line, checking
// its code.
func lastFailure(t *testing.T, rec *logStore, code string) string {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.recs {
		if r.Msg == "disconnected" {
			if r.Attrs["code"] != code {
				t.Errorf("failure logged with code %s, want %s: %s", r.Attrs["code"], code, r.Attrs["err"])
			}
			return r.Attrs["err"]
		}
	}
	t.Fatal("no failure logged")
	return ""
}

func TestTLSWithTheCA(t *testing.T) {
	leakCheck(t)
	ca := newCA(t, "test CA")
	srv, _ := tlsServer(t, ca, nil)
	be := startBackend(t, echo)
	opts := fastClient(srv.addr, "tls", client.Mapping{Name: "e", LocalAddr: be.addr})
	opts.TLS = &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}
	cl := startClientOpts(t, opts)
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 1, 4<<20); err != nil {
		t.Fatal(err)
	}
}

func TestTLSFailuresAreExplained(t *testing.T) {
	ca := newCA(t, "test CA")
	cases := []struct {
		name     string
		tls      *tls.Config // nil: a plain client
		plainSrv bool
		want     string
	}{
		{"unknown CA", &tls.Config{}, false, "set [tls] ca_file"},
		{"wrong server name", &tls.Config{RootCAs: ca.pool(), ServerName: "tunnel.example.com"}, false, "set [tls] server_name"},
		{"plain client, TLS server", nil, false, "this server requires TLS"},
		{"TLS client, plain server", &tls.Config{RootCAs: ca.pool()}, true, "is [tls] set on the server"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			var addr string
			var srvRec *logStore
			if tc.plainSrv {
				logger, rec := recordingLogger(t)
				opts := fastServer()
				opts.Logger = logger
				addr, srvRec = startServer(t, opts).addr, rec
			} else {
				var srv *testServer
				srv, srvRec = tlsServer(t, ca, nil)
				addr = srv.addr
			}
			opts := fastClient(addr, "doubtful")
			opts.TLS = tc.tls
			// Each case fails at once; a handshake slower than fastClient's
			// second (a loaded machine, the race detector) must not turn the
			// failure into a timeout.
			opts.HandshakeTimeout = 10 * time.Second
			start := time.Now()
			rec := failingClient(t, opts)
			if err := lastFailure(t, rec, "1010"); !strings.Contains(err, tc.want) {
				t.Errorf("failure %q does not say %q", err, tc.want)
			}
			t.Logf("two failed attempts in %s", time.Since(start).Round(time.Millisecond))
			if srvRec.has("client logged in") {
				t.Error("the server logged a client in")
			}
			if tc.plainSrv && !srvRec.has("login failed: the client speaks TLS") {
				t.Error("the plain server did not say that the client speaks TLS")
			}
		})
	}
}

func TestMutualTLS(t *testing.T) {
	leakCheck(t)
	ca, clientCA, otherCA := newCA(t, "server CA"), newCA(t, "client CA"), newCA(t, "stranger CA")
	srv, srvRec := tlsServer(t, ca, clientCA)
	be := startBackend(t, echo)

	// Without a certificate, and with one from another CA: refused before login.
	for _, c := range []struct {
		name  string
		certs []tls.Certificate
		want  string
	}{
		{"no certificate", nil, "set [tls] cert_file and key_file"},
		// Go's client does not offer a certificate the server's CA list
		// does not name, so this too reads "requires a client certificate".
		{"foreign certificate", []tls.Certificate{otherCA.issue(t, "stranger", true, time.Time{}).tls}, "signed by its client_ca_file"},
	} {
		opts := fastClient(srv.addr, "mtls")
		opts.TLS = &tls.Config{RootCAs: ca.pool(), Certificates: c.certs}
		rec := failingClient(t, opts)
		if err := lastFailure(t, rec, "1010"); !strings.Contains(err, c.want) {
			t.Errorf("%s: failure %q does not say %q", c.name, err, c.want)
		}
	}
	if srvRec.has("client logged in") {
		t.Fatal("a client without a valid certificate reached login")
	}

	opts := fastClient(srv.addr, "mtls", client.Mapping{Name: "e", LocalAddr: be.addr})
	opts.TLS = &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{clientCA.issue(t, "laptop", true, time.Time{}).tls}}
	cl := startClientOpts(t, opts)
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 2, 1<<20); err != nil {
		t.Fatal(err)
	}
}

func TestTLSExpiredServerCertificate(t *testing.T) {
	leakCheck(t)
	ca := newCA(t, "test CA")
	expired := ca.issue(t, "old", false, time.Now().Add(-time.Hour))
	opts := fastServer()
	opts.TLS = &tls.Config{Certificates: []tls.Certificate{expired.tls}}
	srv := startServer(t, opts)
	copts := fastClient(srv.addr, "late")
	copts.TLS = &tls.Config{RootCAs: ca.pool()}
	rec := failingClient(t, copts)
	if err := lastFailure(t, rec, "1010"); !strings.Contains(err, "expired") {
		t.Errorf("failure %q does not say the certificate expired", err)
	}
}
