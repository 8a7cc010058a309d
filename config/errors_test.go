package config

import (
	"errors"
	"strings"
	"testing"
)

func TestErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"all parts", &Error{File: "server.toml", Line: 12, Key: "allow_ports[1]", Msg: `bad port range "10-x"`},
			`server.toml:12: allow_ports[1]: bad port range "10-x"`},
		{"no line", &Error{File: "client.toml", Key: "token", Msg: "missing (required)"}, "client.toml: token: missing (required)"},
		{"no file", &Error{Key: "server_addr", Msg: "missing (required)"}, "server_addr: missing (required)"},
		{"no file, a line", &Error{Line: 3, Key: "name", Msg: "bad"}, "line 3: name: bad"},
		{"no key", &Error{File: "x.toml", Msg: "has neither"}, "x.toml: has neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorsOrderAndAs(t *testing.T) {
	doc := "token = ''\n[log]\nlevel = 'x'\nzzz = 1\n"
	_, err := ParseServer("s.toml", []byte(doc), nil)
	want := "s.toml:1: token: empty (required); set it in the file or GOTUNNEL_TOKEN, or give each client its own in [[clients]]\n" +
		"s.toml:3: log.level: bad log level \"x\": want one of debug, info, warn, error\n" +
		"s.toml:4: log.zzz: unknown key"
	if err == nil || err.Error() != want {
		t.Errorf("ParseServer(%q) = %q, want %q", doc, err, want)
	}
	var one *Error
	if !errors.As(err, &one) || one.Key != "token" {
		t.Errorf("errors.As(%v, *Error) = %v, want the first problem", err, one)
	}
}

// TestTokenNeverShown checks that no error text quotes the token, whatever
// is wrong with it or around it.
func TestTokenNeverShown(t *testing.T) {
	const secret = "s3cr3t-Tok3n"
	docs := []struct {
		name string
		doc  string
	}{
		{"unknown key", "tokn = '" + secret + "'\n"},
		{"token with wrong type", "token = ['" + secret + "']\n"},
		{"token as a table", "[token]\nvalue = '" + secret + "'\n"},
		{"token twice", "token = 'x'\ntoken = '" + secret + "'\n"},
		{"bad escape in token", "token = \"" + secret + "\\q\"\n"},
		{"junk after token", "token = \"" + secret + "\"" + secret + "\n"},
		{"unterminated token", "token = \"" + secret + "\n"},
		{"multi-line token", "token = \"\"\"" + secret + "\n\\q\"\"\"\n"},
		{"token among other errors", "token = '" + secret + "'\nbind_addr = 1\nfoo = 2\n"},
		{"quoted token key", "\"token\" = \"" + secret + "\\x\"\n"},
	}
	for _, tt := range docs {
		t.Run(tt.name, func(t *testing.T) {
			_, serverErr := ParseServer("f.toml", []byte(tt.doc), nil)
			_, clientErr := ParseClient("f.toml", []byte(tt.doc), nil)
			_, kindErr := Kind("f.toml", []byte(tt.doc)) // may be nil
			if serverErr == nil || clientErr == nil {
				t.Fatalf("ParseServer, ParseClient(%q) = %v, %v; want errors", tt.doc, serverErr, clientErr)
			}
			for _, err := range []error{serverErr, clientErr, kindErr} {
				for _, part := range []string{secret, "s3c", "3cr", "Tok", "k3n"} {
					if err != nil && strings.Contains(err.Error(), part) {
						t.Errorf("parse(%q) = %q, want no part of the token", tt.doc, err)
					}
				}
			}
		})
	}
}

// TestWrongCaseTokenNeverShown: the decoder fills token from TOKEN too,
// so a syntax error in that value hides the value as it does for token:
// the escape character the parser would quote is one of the token's.
func TestWrongCaseTokenNeverShown(t *testing.T) {
	for _, doc := range []string{"TOKEN = \"s3cr3t\\q\"\n", "Token = \"s3cr3t\\q\"\n", "Proxy_URL = \"http://u:p\\q@h\"\n"} {
		_, err := ParseClient("f.toml", []byte(doc), nil)
		if err == nil || !strings.Contains(err.Error(), "not shown") || strings.Contains(err.Error(), "'q'") {
			t.Errorf("ParseClient(%q) = %v, want the value not shown", doc, err)
		}
	}
}

func TestTokenFromEnvNeverShown(t *testing.T) {
	const secret = "3nv-s3cr3t"
	doc := "token = 1\nserver_addr = 'h'\n"
	_, err := ParseClient("c.toml", []byte(doc), env(map[string]string{"GOTUNNEL_TOKEN": secret}))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("ParseClient(%q) = %v, want an error without the token", doc, err)
	}
}
