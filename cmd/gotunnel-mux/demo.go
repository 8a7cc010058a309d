package main

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// runDemo runs a server, a client and a small web service on loopback,
// prints the URL that reaches the service through the tunnel, and serves
// until a signal.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "[--port N] [--log-level LEVEL]", stderr)
	port := fs.Int("port", 0, "public port for the demo mapping (0: the server picks one)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	gate := &gateWriter{w: stderr}
	log, err := newLogger(gate, *level, "text")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	stop := newStopper()
	defer stop.stop()
	d, err := startDemo(stop.ctx, log, *port)
	if err != nil {
		gate.open()
		log.Error("demo failed to start", "err", err)
		return exitFailure
	}
	defer d.close()
	select {
	case e := <-d.up:
		if e.Kind != client.EventMappingUp {
			gate.open()
			log.Error("demo mapping refused", "err", e.Err)
			return exitFailure
		}
		fmt.Fprint(stdout, d.banner(e.RemotePort))
	case <-stop.ctx.Done():
		return exitOK
	case <-time.After(15 * time.Second):
		gate.open()
		log.Error("demo mapping did not come up within 15s")
		return exitFailure
	}
	gate.open()
	<-stop.ctx.Done()
	log.Info("demo stopping")
	return exitOK
}

// demo is the three parts of the demo and their goroutines.
type demo struct {
	web    *http.Server
	webLn  net.Listener
	srv    *server.Server
	srvLn  net.Listener
	cancel context.CancelFunc
	up     chan client.Event
	wg     sync.WaitGroup
}

func startDemo(ctx context.Context, log *slog.Logger, port int) (*demo, error) {
	d := &demo{up: make(chan client.Event, 1)}
	var err error
	if d.webLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if d.srvLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		_ = d.webLn.Close()
		return nil, err
	}
	token := randomToken()
	d.web = &http.Server{Handler: demoPage(), ReadHeaderTimeout: 10 * time.Second}
	d.srv = server.New(server.Options{Token: token, PublicAddr: "127.0.0.1", Logger: log.With("side", "server")})
	cl, err := client.New(client.Options{
		ServerAddr: d.srvLn.Addr().String(), Token: token, Name: "demo",
		Mappings: []client.Mapping{{Name: "web", LocalAddr: d.webLn.Addr().String(), RemotePort: port, HealthCheck: true}},
		Logger:   log.With("side", "client"),
		OnEvent: func(e client.Event) {
			if e.Kind == client.EventMappingUp || e.Kind == client.EventMappingFailed {
				select {
				case d.up <- e:
				default:
				}
			}
		},
	})
	if err != nil {
		_ = d.webLn.Close()
		_ = d.srvLn.Close()
		return nil, err
	}
	ctx, d.cancel = context.WithCancel(ctx)
	d.wg.Go(func() { _ = d.web.Serve(d.webLn) })
	d.wg.Go(func() { _ = d.srv.Serve(d.srvLn) })
	d.wg.Go(func() { _ = cl.Run(ctx) })
	return d, nil
}

func (d *demo) banner(port int) string {
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	return fmt.Sprintf(`
  gotunnel-mux demo is running.

  Open:     %s
  Try:      curl %s

  Your request goes: visitor -> server's public port 127.0.0.1:%d
            -> the one tunnel connection to the server at %s
            -> client -> demo web service at %s

  Ctrl-C stops it.

`, url, url, port, d.srvLn.Addr(), d.webLn.Addr())
}

// close stops the client, the server and the web service, and waits.
func (d *demo) close() {
	d.cancel()
	_ = d.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.web.Shutdown(ctx)
	d.wg.Wait()
}

func demoPage() http.Handler {
	var hits atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html>
<title>gotunnel-mux demo</title>
<h1>It works.</h1>
<p>This page came from a web service on a private loopback port, through the
gotunnel-mux server and client, over one multiplexed connection.</p>
<p>Request %d, path <code>%s</code>, served at %s.</p>
`, n, html.EscapeString(r.URL.Path), time.Now().Format(time.TimeOnly))
	})
}

func randomToken() string {
	var b bytes.Buffer
	_ = runToken(nil, &b, io.Discard)
	return string(bytes.TrimSpace(b.Bytes()))
}

// gateWriter holds what is written until open, so that the demo's banner
// comes first; then it writes through.
type gateWriter struct {
	mu     sync.Mutex
	w      io.Writer
	held   bytes.Buffer
	opened bool
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.opened {
		return g.w.Write(p)
	}
	return g.held.Write(p)
}

func (g *gateWriter) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened {
		g.opened = true
		_, _ = g.w.Write(g.held.Bytes())
		g.held.Reset()
	}
}
