package server

import (
	"crypto/sha256"
	"reflect"
	"strings"
	"testing"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// TestPolicyAdmit pins who logs in under which name.
func TestPolicyAdmit(t *testing.T) {
	o := Options{Token: "shared", Clients: []Credential{
		{Name: "a", TokenSHA256: sha256.Sum256([]byte("tok-a")), AllowPorts: []PortRange{{2000, 3000}}},
		{Name: "b", TokenSHA256: sha256.Sum256([]byte("tok-b"))},
	}}.WithDefaults()
	p := newPolicy(&o)
	for _, tc := range []struct {
		name, token, cred, refusal string
	}{
		{"a", "tok-a", "a", ""},
		{"b", "tok-b", "b", ""},
		{"other", "shared", "", ""},
		{"b", "tok-a", "", `not valid for the name "b"`},
		{"a", "shared", "", `"a" has a token of its own`},
		{"other", "tok-a", "", `not valid for the name "other"`},
		{"a", "wrong", "", "bad token"},
	} {
		cred, re := p.admit(tc.name, sha256.Sum256([]byte(tc.token)))
		gotCred := ""
		if cred != nil {
			gotCred = cred.Name
		}
		switch {
		case tc.refusal == "" && (re != nil || gotCred != tc.cred):
			t.Errorf("admit(%q, %q) = %q, %v; want %q", tc.name, tc.token, gotCred, re, tc.cred)
		case tc.refusal != "" && (re == nil || re.Code != control.CodeBadToken || !strings.Contains(re.Reason, tc.refusal)):
			t.Errorf("admit(%q, %q) = %v; want 1002 %q", tc.name, tc.token, re, tc.refusal)
		}
	}
	if got, want := p.ports(p.named["a"]), []PortRange{{2000, 3000}}; !reflect.DeepEqual(got, want) {
		t.Errorf("a's ports = %v, want %v", got, want)
	}
	if got, want := p.ports(p.named["b"]), o.AllowPorts; !reflect.DeepEqual(got, want) {
		t.Errorf("b's ports = %v, want the server's %v", got, want)
	}
	if got, want := intersect([]PortRange{{1, 10}, {20, 30}}, []PortRange{{5, 25}}), []PortRange{{5, 10}, {20, 25}}; !reflect.DeepEqual(got, want) {
		t.Errorf("intersect = %v, want %v", got, want)
	}
}
