package config

import (
	"os"
	"testing"
)

func TestKind(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    string
		wantErr string
	}{
		{"server", "bind_addr = ':7000'\ntoken = 't'\n", "server", ""},
		{"client", "server_addr = 'h:7000'\n", "client", ""},
		{"client of several servers", "server_addrs = ['a:7000', 'b:7000']\n", "client", ""},
		{"client with a bind_addr below the top", "server_addr = 'h:1'\n[x]\nbind_addr = 1\n", "client", ""},
		{"both", "bind_addr = ':1'\nserver_addr = 'h:1'\n", "", "x.toml: has both bind_addr (a server file) and server_addr or server_addrs (a client file)"},
		{"both, several servers", "bind_addr = ':1'\nserver_addrs = ['h:1']\n", "", "x.toml: has both bind_addr"},
		{"neither", "token = 't'\n", "", "x.toml: has neither bind_addr (a server file) nor server_addr or server_addrs (a client file)"},
		{"empty", "", "", "x.toml: has neither"},
		{"syntax error", "bind_addr = \n", "", "x.toml:1: bind_addr: syntax error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Kind("x.toml", []byte(tt.doc))
			if got != tt.want || !errMatches(err, tt.wantErr) {
				t.Errorf("Kind(%q) = %q, %v; want %q, %q", tt.doc, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestKindExamples(t *testing.T) {
	for file, want := range map[string]string{"testdata/server.toml": "server", "testdata/client.toml": "client"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Kind(file, data); got != want || err != nil {
			t.Errorf("Kind(%s) = %q, %v; want %q", file, got, err, want)
		}
	}
}
