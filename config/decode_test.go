package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestDecodeErrorBeforeAnyKey: go-toml places an error in an array nested
// in an array at the start of the document, before its first key; the
// error is still named with its key, taken from the decoder.
func TestDecodeErrorBeforeAnyKey(t *testing.T) {
	doc := "\ntrusted_proxies = [[]]\n"
	_, err := ParseServer("s.toml", []byte(doc), nil)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("ParseServer(%q) = %v, want Errors", doc, err)
	}
	for _, e := range errs {
		if e.Key != "trusted_proxies" && e.Key != "trusted_proxies[0]" {
			t.Errorf("ParseServer(%q) = %v, want every error named trusted_proxies", doc, err)
		}
	}
}

// parseAs parses doc as a server file, or as a client file when client is
// set, and returns its error.
func parseAs(client bool, file, doc string, env Env) error {
	if client {
		_, err := ParseClient(file, []byte(doc), env)
		return err
	}
	_, err := ParseServer(file, []byte(doc), env)
	return err
}

// TestKeyInWrongCase: the decoder takes a key whose case differs from a
// field's as that field. Such a key gets the hint, and every other problem
// with it is told as for the key spelt right, at the line of the key as
// written, in the user's words.
func TestKeyInWrongCase(t *testing.T) {
	const head = "server_addr = 'h:7000'\ntoken = 't'\n" // a client file's lines 1 and 2
	tests := []struct {
		name   string
		client bool
		doc    string
		env    Env
		wants  []want
	}{
		{"bad address", false, "token = 't'\nBind_addr = 'x'\n", nil,
			[]want{{2, "Bind_addr", `unknown key; keys are case-sensitive: did you mean "bind_addr"?`},
				{2, "bind_addr", `bad address "x": want host:port`}}},
		{"wrong type", false, "token = 't'\nAllow_plain = 1\n", nil,
			[]want{{2, "Allow_plain", `did you mean "allow_plain"`},
				{2, "allow_plain", "want true or false, got an integer"}}},
		{"wrong type in a table", false, "token = 't'\n[log]\nLevel = 1\n", nil,
			[]want{{3, "log.Level", `did you mean "level"`},
				{3, "log.level", "want a string, got an integer"}}},
		{"table header, bad value", false, "token = 't'\n[Log]\nlevel = 'loud'\n", nil,
			[]want{{2, "Log", `did you mean "log"`},
				{3, "log.level", `bad log level "loud"`}}},
		{"dotted key, wrong type", false, "token = 't'\nLog.level = 1\n", nil,
			[]want{{2, "Log", `did you mean "log"`},
				{2, "log.level", "want a string, got an integer"}}},
		{"table missing a key", false, "token = 't'\n\n[TLS]\ncert_file = 'c'\n", nil,
			[]want{{3, "TLS", `did you mean "tls"`},
				{3, "tls.key_file", "missing (required)"}}},
		{"empty token", false, "Token = ''\n", noEnv,
			[]want{{1, "Token", `did you mean "token"`},
				{1, "token", "empty (required)"}}},
		{"spelt right and wrong", false, "token = 't'\nBind_addr = ':1'\nbind_addr = 'x'\n", nil,
			[]want{{2, "Bind_addr", `did you mean "bind_addr"`},
				{3, "bind_addr", `bad address "x"`}}},
		{"long s is not s to the decoder", false, "token = 't'\n\"ſtream_open_timeout\" = 1\n", nil,
			[]want{{2, `"ſtream_open_timeout"`, "unknown key"}}},
		{"array of tables", true, head + "[[Mappings]]\nlocal_addr = 'h'\n", nil,
			[]want{{3, "Mappings", `did you mean "mappings"`},
				{4, "mappings[0].local_addr", `bad address "h": want host:port`}}},
		{"key in a mapping, wrong type", true, head + "[[mappings]]\nlocal_addr = 'h:1'\nRemote_port = 'x'\n", nil,
			[]want{{5, "mappings[0].Remote_port", `did you mean "remote_port"`},
				{5, "mappings[0].remote_port", "want an integer, got a string"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseAs(tt.client, "f.toml", tt.doc, tt.env)
			call := fmt.Sprintf("parse(%q)", tt.doc)
			checkErrors(t, call, err, "f.toml", tt.wants)
			if err != nil && strings.Contains(err.Error(), "config.") {
				t.Errorf("%s = \n%v\nwant no Go type names", call, err)
			}
		})
	}
}

// TestHeaderUnderAValue: a [table] header under a key whose value is not a
// table is told in the user's words at the key's line, as for a dotted
// key; the decoder would say "cannot store a table in a string".
func TestHeaderUnderAValue(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		wants []want
	}{
		{"under a string", "token = 't'\n[ws_path.x]\n",
			[]want{{2, "ws_path", "want a string, got a table"}}},
		{"under a duration", "token = 't'\n\n[login_timeout.x]\na = 1\n",
			[]want{{3, "login_timeout", `want a duration string such as "10s", got a table`}}},
		{"under a table's own header", "token = 't'\n[tls.x]\n[tls]\ncert_file = 'c'\n",
			[]want{{2, "tls.x", "unknown table"}, {3, "tls.key_file", "missing (required)"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseServer("server.toml", []byte(tt.doc), nil)
			checkErrors(t, fmt.Sprintf("ParseServer(%q)", tt.doc), err, "server.toml", tt.wants)
		})
	}
}
