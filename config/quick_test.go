package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseMap(t *testing.T) {
	tests := []struct {
		spec    string
		want    Mapping
		wantErr string
	}{
		{"10022:127.0.0.1:22", Mapping{LocalAddr: "127.0.0.1:22", RemotePort: 10022}, ""},
		{"ssh=10022:127.0.0.1:22", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022}, ""},
		{"0:localhost:8080", Mapping{LocalAddr: "localhost:8080"}, ""},
		{"web=0:[::1]:8080", Mapping{Name: "web", LocalAddr: "[::1]:8080"}, ""},
		{"a.b_c-1=65535:db.internal:5432", Mapping{Name: "a.b_c-1", LocalAddr: "db.internal:5432", RemotePort: 65535}, ""},
		{"", Mapping{}, "want [NAME=]REMOTE_PORT:LOCAL_ADDR"},
		{"10022", Mapping{}, "want [NAME=]REMOTE_PORT:LOCAL_ADDR"},
		{"ssh=10022", Mapping{}, "want [NAME=]REMOTE_PORT:LOCAL_ADDR"},
		{"x:127.0.0.1:22", Mapping{}, `bad remote port "x"`},
		{"-1:127.0.0.1:22", Mapping{}, `bad remote port "-1"`},
		{"65536:127.0.0.1:22", Mapping{}, `bad remote port "65536"`},
		{"10022:127.0.0.1", Mapping{}, `bad address "127.0.0.1"`},
		{"10022:127.0.0.1:0", Mapping{}, "want a port number 1..65535"},
		{"10022::22", Mapping{}, "the host is missing"},
		{"my ssh=10022:127.0.0.1:22", Mapping{}, `bad name "my ssh"`},
		{"=10022:127.0.0.1:22", Mapping{}, `bad name ""`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseMap(tt.spec)
			if !errMatches(err, tt.wantErr) || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseMap(%q) = %+v, %v; want %+v, %q", tt.spec, got, err, tt.want, tt.wantErr)
			}
			if err == nil {
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Key != "--map" || !strings.HasPrefix(err.Error(), "--map: \""+tt.spec+"\": ") {
				t.Errorf("ParseMap(%q) = %v, want an *Error naming --map and the value", tt.spec, err)
			}
		})
	}
}
