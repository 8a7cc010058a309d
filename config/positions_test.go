package config

import (
	"testing"

	"github.com/pelletier/go-toml/v2/unstable"
)

func TestScanPositions(t *testing.T) {
	doc := `# a comment
bind_addr = ":1"                      # line 2
reconnect.min = "1s"                  # line 3: dotted key
allow_ports = [
  "1-2",                              # line 5
  "3",
]
log = { level = "info", format = "text" }   # line 8
nested = [[1, 2], [3]]                # line 9

[health]                              # line 11
interval = "1s"

[[mappings]]                          # line 14
name = "a"
"quoted key" = 1

[[mappings]]                          # line 18
local_addr = "h:1"
[mappings.extra]                      # line 20
x = 1
[[mappings.sub]]                      # line 22
y = 2
[[mappings]]                          # line 24
sub = [{z = 3}]                       # line 25
`
	pos, err := scanPositions([]byte(doc))
	if err != nil {
		t.Fatalf("scanPositions() = %v", err)
	}
	tests := []struct {
		path string
		line int
		kind unstable.Kind
	}{
		{"bind_addr", 2, unstable.String},
		{"reconnect", 3, unstable.Table},
		{"reconnect.min", 3, unstable.String},
		{"allow_ports", 4, unstable.Array},
		{"allow_ports[0]", 5, unstable.String},
		{"allow_ports[1]", 6, unstable.String},
		{"log", 8, unstable.InlineTable},
		{"log.format", 8, unstable.String},
		{"nested[1]", 9, unstable.Array},
		{"nested[1][0]", 9, unstable.Integer},
		{"health", 11, unstable.Table},
		{"health.interval", 12, unstable.String},
		{"mappings", 14, unstable.ArrayTable},
		{"mappings[0]", 14, unstable.Table},
		{"mappings[0].name", 15, unstable.String},
		{`mappings[0]."quoted key"`, 16, unstable.Integer},
		{"mappings[1]", 18, unstable.Table},
		{"mappings[1].local_addr", 19, unstable.String},
		{"mappings[1].extra", 20, unstable.Table},
		{"mappings[1].extra.x", 21, unstable.Integer},
		{"mappings[1].sub[0]", 22, unstable.Table},
		{"mappings[1].sub[0].y", 23, unstable.Integer},
		{"mappings[2]", 24, unstable.Table},
		{"mappings[2].sub[0].z", 25, unstable.Integer},
		{"absent", 0, unstable.Invalid},
		{"mappings[3]", 0, unstable.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := pos.line(tt.path); got != tt.line {
				t.Errorf("line(%q) = %d, want %d", tt.path, got, tt.line)
			}
			kind := unstable.Invalid
			if i, ok := pos.index[tt.path]; ok {
				kind = pos.spots[i].kind
			}
			if kind != tt.kind {
				t.Errorf("kind of %q = %v, want %v", tt.path, kind, tt.kind)
			}
		})
	}
}

func TestPositionsAt(t *testing.T) {
	doc := "a = 1\nb = { c = 1, d = [1, 2] }\n"
	pos, _ := scanPositions([]byte(doc))
	tests := []struct {
		line, col int
		want      string
	}{
		{1, 1, "a"},
		{1, 5, "a"},
		{2, 1, "b"},
		{2, 11, "b.c"},
		{2, 18, "b.d"},
		{2, 19, "b.d[0]"},
		{2, 22, "b.d[1]"},
	}
	for _, tt := range tests {
		if got := pos.at(tt.line, tt.col).path; got != tt.want {
			t.Errorf("at(%d, %d) = %q, want %q", tt.line, tt.col, got, tt.want)
		}
	}
	var none *positions
	if none.has("a") || none.line("a") != 0 {
		t.Errorf("nil positions know a key")
	}
}

func TestFailingKey(t *testing.T) {
	tests := []struct {
		rest, want string
	}{
		{"token = \"x", "token"},
		{"\n  # comment\n\ntoken=", "token"},
		{"]\nreconnect . min = 1", "reconnect.min"},
		{`"token" = "x`, "token"},
		{`'a.b'.c = 1`, `"a.b".c`},
		{`"a=b" = "x`, `"a=b"`},
		{`"tok\u0065n" = "x`, "token"}, // the key as the decoder reads it, so the token stays hidden
		{"[table", ""},
		{"just words", ""},
	}
	for _, tt := range tests {
		if got := joinPath(failingKey([]byte(tt.rest))); got != tt.want {
			t.Errorf("failingKey(%q) = %q, want %q", tt.rest, got, tt.want)
		}
	}
}

// TestHeaderImpliesTables: a header's dotted key implies the tables above
// it, as a dotted key = value does, so that their values are checked too;
// a table's own header, even after a header under it, gives its line.
func TestHeaderImpliesTables(t *testing.T) {
	doc := `[a.b.c]        # line 1
[[m.n]]        # line 2
[x.y]          # line 3
[x]            # line 4
[[m.n]]        # line 5
[m.n.o]        # line 6
`
	pos, err := scanPositions([]byte(doc))
	if err != nil {
		t.Fatalf("scanPositions() = %v", err)
	}
	tests := []struct {
		path    string
		line    int
		kind    unstable.Kind
		implied bool
	}{
		{"a", 1, unstable.Table, true},
		{"a.b", 1, unstable.Table, true},
		{"a.b.c", 1, unstable.Table, false},
		{"m", 2, unstable.Table, true},
		{"m.n", 2, unstable.ArrayTable, true},
		{"m.n[0]", 2, unstable.Table, false},
		{"x", 4, unstable.Table, false},
		{"x.y", 3, unstable.Table, false},
		{"m.n[1]", 5, unstable.Table, false},
		{"m.n[1].o", 6, unstable.Table, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			i, ok := pos.index[tt.path]
			if !ok {
				t.Fatalf("%q is not a key of the document", tt.path)
			}
			if s := pos.spots[i]; s.line != tt.line || s.kind != tt.kind || s.implied != tt.implied {
				t.Errorf("%q = line %d, kind %v, implied %v; want %d, %v, %v",
					tt.path, s.line, s.kind, s.implied, tt.line, tt.kind, tt.implied)
			}
		})
	}
	if got := pos.at(4, 2).path; got != "x" {
		t.Errorf("at(4, 2) = %q, want x, the header there", got)
	}
}
