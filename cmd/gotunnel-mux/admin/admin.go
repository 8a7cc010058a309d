// Package admin is the admin HTTP API of both sides of gotunnel-mux:
// health, readiness, Prometheus metrics, the status document, reload and
// a live dashboard (docs/operations.md). It is the cmd side's: the
// engines (control/server, control/client) know nothing of HTTP; they
// give a Status snapshot and an Observer for events, and this package
// turns them into metrics and JSON.
//
//	m := admin.NewServerMetrics(version, srv.Status)
//	a, err := admin.Listen(admin.Options{Addr: "127.0.0.1:9100", Registry: m.Registry,
//		Status: func() any { return admin.NewServerDoc(version, srv.Status()) }, ...})
//	go a.Serve()
//	defer a.Close()
//
// It does not choose the address or the token: config does, and refuses
// a non-loopback address without a token.
package admin

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	_ "embed" // the dashboard
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure the API.
type Options struct {
	Addr  string      // host:port to listen on
	Token string      // bearer token for every endpoint but /healthz, /readyz and the page itself; "" none
	TLS   *tls.Config // nil: plain HTTP
	// Ready is nil when the process does all it should (GET /readyz
	// answers 200), else why not (503 with the reason).
	Ready func() error
	// Status is the document GET /api/v1/status answers.
	Status func() any
	// Reload re-reads the configuration for POST /api/v1/reload; nil: the
	// endpoint answers 404. Its error is the body of a 422.
	Reload   func() error
	Registry *prometheus.Registry // what GET /metrics serves
	Logger   *slog.Logger         // nil discards
}

// Server is a listening admin API.
type Server struct {
	opts Options
	ln   net.Listener
	http *http.Server
}

//go:embed dashboard.html
var dashboard []byte

// Listen binds the API's address; Serve then answers on it.
func Listen(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	if o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	s := &Server{opts: o, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.authorized(promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{})))
	mux.Handle("GET /api/v1/status", s.authorized(http.HandlerFunc(s.status)))
	if o.Reload != nil {
		mux.Handle("POST /api/v1/reload", s.authorized(http.HandlerFunc(s.reload)))
	}
	mux.HandleFunc("GET /{$}", s.page)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the API's base URL, such as http://127.0.0.1:9100.
func (s *Server) URL() string {
	scheme := "http"
	if s.opts.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// Serve answers requests until Close; it returns nil then.
func (s *Server) Serve() error {
	s.opts.Logger.Info("admin api listening", "addr", s.URL())
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the API: it lets requests under way finish for up to a
// second, then drops them.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		return s.http.Close()
	}
	return nil
}

// authorized answers 401 unless the request carries the bearer token.
func (s *Server) authorized(h http.Handler) http.Handler {
	if s.opts.Token == "" {
		return h
	}
	want := []byte("Bearer " + s.opts.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gotunnel-mux"`)
			http.Error(w, "401 unauthorized: send Authorization: Bearer <admin token>", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.opts.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.opts.Status())
}

// ReloadResult is the body of POST /api/v1/reload.
type ReloadResult struct {
	Status string `json:"status"` // "ok" or "fail"
	Error  string `json:"error,omitempty"`
}

func (s *Server) reload(w http.ResponseWriter, _ *http.Request) {
	if err := s.opts.Reload(); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, ReloadResult{Status: "fail", Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, ReloadResult{Status: "ok"})
}

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Nothing but this page and its own API: no external assets.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(dashboard)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
