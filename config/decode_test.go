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

// TestUnknownKeysBesideOtherErrors: the decoder stops at the first wrong
// value or duplicate key, before it would name the unknown keys; they are
// still reported, each at its own line, as the decoder's strict mode
// names them.
func TestUnknownKeysBesideOtherErrors(t *testing.T) {
	const head = "server_addr = 'h:7000'\ntoken = 't'\n" // a client file's lines 1 and 2
	tests := []struct {
		name   string
		client bool
		doc    string
		wants  []want
	}{
		{"after a wrong type", false, "token = 't'\nws_path = 1\nfoo = 2\n",
			[]want{{2, "ws_path", "want a string, got an integer"}, {3, "foo", "unknown key"}}},
		{"before a wrong type", false, "token = 't'\nfoo = 2\nws_path = 1\n",
			[]want{{2, "foo", "unknown key"}, {3, "ws_path", "want a string, got an integer"}}},
		{"in a table with a wrong type", false, "token = 't'\n[log]\nlevel = 1\ncolour = true\n",
			[]want{{3, "log.level", "want a string, got an integer"}, {4, "log.colour", "unknown key"}}},
		{"in an inline table", false, "token = 't'\nws_path = 1\nlog = { level = 'info', colour = true }\n",
			[]want{{2, "ws_path", "want a string"}, {3, "log.colour", "unknown key"}}},
		{"unknown table", false, "token = 't'\nws_path = 1\n[extras]\nport = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "extras", "unknown table"}}},
		{"unknown table under a known one", false, "token = 't'\nws_path = 1\n[log.sub]\nx = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "log.sub", "unknown table"}}},
		{"each header of an unknown table", false, "token = 't'\nws_path = 1\n[extras]\nport = 1\n[extras.sub]\nx = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "extras", "unknown table"}, {5, "extras.sub", "unknown table"}}},
		{"unknown table after a header under it", false, "token = 't'\nws_path = 1\n[x.foo]\ncolour = 1\n[x]\nbar = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "x.foo", "unknown table"}, {5, "x", "unknown table"}}},
		{"unknown array of tables", false, "token = 't'\nws_path = 1\n[[extras]]\nport = 1\n[[extras]]\nport = 2\n",
			[]want{{2, "ws_path", "want a string"}, {3, "extras[0]", "unknown table"}, {5, "extras[1]", "unknown table"}}},
		{"dotted keys", false, "token = 't'\nws_path = 1\nextras.port = 1\nlog.sub.x = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "extras.port", "unknown key"}, {4, "log.sub.x", "unknown key"}}},
		{"unknown key holding a table", false, "token = 't'\nws_path = 1\nextras = { port = 1 }\nproxies = [{ a = 1 }, [2]]\n",
			[]want{{2, "ws_path", "want a string"}, {3, "extras", "unknown key"}, {4, "proxies", "unknown key"}}},
		{"quoted key", false, "token = 't'\nws_path = 1\n\"a.b\".c = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, `"a.b".c`, "unknown key"}}},
		{"not a key of the file", false, "token = 't'\nws_path = 1\nPath = 'x'\nLimits = { max_stray_streams = 1 }\n",
			[]want{{2, "ws_path", "want a string"}, {3, "Path", "unknown key"}, {4, "Limits", "unknown key"}}},
		{"under a key in the wrong case", false, "token = 't'\nws_path = 1\n[Log]\ncolour = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "Log", `did you mean "log"`}, {4, "Log.colour", "unknown key"}}},
		{"after a duplicate key", false, "token = 't'\nbind_addr = ':1'\nbind_addr = ':2'\nfoo = 1\n",
			[]want{{3, "bind_addr", "already defined"}, {4, "foo", "unknown key"}}},
		{"after an integer too large", false, "token = 't'\nmax_conns_per_mapping = 99999999999999999999\nfoo = 1\n",
			[]want{{2, "max_conns_per_mapping", "too large"}, {3, "foo", "unknown key"}}},
		{"inside a value that is not a table", false, "token = 't'\nallow_ports = [{ a = 1 }]\n",
			[]want{{2, "allow_ports[0]", "want a port range string"}}},
		{"inside a value that is not a table, dotted", false, "token = 't'\nws_path = 1\nmux.window_size.x = 1\n",
			[]want{{2, "ws_path", "want a string"}, {3, "mux.window_size", "want a size"}}},
		{"in a mapping", true, head + "[[mappings]]\nlocal_addr = 'h:1'\nremote_port = 'x'\nfoo = 1\n[mappings.extra]\n",
			[]want{{5, "mappings[0].remote_port", "want an integer, got a string"},
				{6, "mappings[0].foo", "unknown key"}, {7, "mappings[0].extra", "unknown table"}}},
		{"array of tables written as a table", true, head + "[mappings.x]\nlocal_addr = 'h:1'\n",
			[]want{{3, "mappings", "want an array of tables, got a table"}}},
		{"in an inline mapping", true, head + "mappings = [{ local_addr = 'h:1', remote_port = 'x', foo = 1 }]\n",
			[]want{{3, "mappings[0].remote_port", "want an integer"}, {3, "mappings[0].foo", "unknown key"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseAs(tt.client, "f.toml", tt.doc, nil)
			checkErrors(t, fmt.Sprintf("parse(%q)", tt.doc), err, "f.toml", tt.wants)
		})
	}
}
