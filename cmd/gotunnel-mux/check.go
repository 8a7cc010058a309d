package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/gotunnel-mux/gotunnel-mux/config"
)

// runCheck validates a server or a client file without touching the
// network: exit 0 when it is good, 2 with every problem otherwise.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", "--config FILE", stderr)
	path := fs.String("config", "", "configuration file to validate")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *path == "" && fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	if *path == "" {
		fmt.Fprintln(stderr, "usage: gotunnel-mux check --config FILE")
		return exitUsage
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		fmt.Fprintln(stderr, "gotunnel-mux:", err)
		return exitUsage
	}
	kind, err := config.Kind(*path, data)
	var summary []string
	if err == nil {
		summary, err = checkKind(kind, *path, data)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok (%s configuration)\n", *path, kind)
	for _, line := range summary {
		fmt.Fprintln(stdout, "  "+line)
	}
	return exitOK
}

// checkKind parses the file as a server or client configuration and loads
// the TLS files it names, as starting would. A good file's summary says
// what it sets up (checkreport.go).
func checkKind(kind, path string, data []byte) (summary []string, err error) {
	quiet := slog.New(slog.DiscardHandler)
	if kind == "server" {
		cfg, err := config.ParseServer(path, data, os.LookupEnv)
		if err == nil && cfg.TLS != nil {
			if _, _, err = serverTLS(cfg.TLS, quiet); err != nil {
				err = fmt.Errorf("%s: %w", path, err)
			}
		}
		if err != nil {
			return nil, err
		}
		return serverSummary(cfg), nil
	}
	cfg, err := config.ParseClient(path, data, os.LookupEnv)
	if err == nil {
		if _, err = clientTLS(cfg, quiet); err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if err != nil {
		return nil, err
	}
	return clientSummary(cfg), nil
}

// tokenBytes is the entropy of a generated token: 256 bits.
const tokenBytes = 32

// runToken prints a strong random token, URL-safe, for token or
// GOTUNNEL_TOKEN; with --hash, for a [[clients]] entry: the token for the
// client's file and its SHA-256 for the server's, as TOML lines.
func runToken(args []string, stdout, stderr io.Writer) int {
	hash := len(args) == 1 && (args[0] == "--hash" || args[0] == "-hash")
	if len(args) > 0 && !hash {
		fmt.Fprintln(stderr, "usage: gotunnel-mux token [--hash]")
		return exitUsage
	}
	b := make([]byte, tokenBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	tok := base64.RawURLEncoding.EncodeToString(b)
	if !hash {
		fmt.Fprintln(stdout, tok)
		return exitOK
	}
	sum := sha256.Sum256([]byte(tok))
	fmt.Fprintf(stdout, "token = %q          # client.toml (or GOTUNNEL_TOKEN)\ntoken_sha256 = %q   # server.toml, [[clients]]\n",
		tok, hex.EncodeToString(sum[:]))
	return exitOK
}
