package config

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions records where each key of one TOML document is, so that a
// problem found after decoding can still name its line. Keys are full
// paths: "bind_addr", "reconnect.min", "allow_ports[1]",
// "mappings[1].local_addr". Array tables and arrays are indexed from 0.
//
// A nil *positions stands for a configuration built in code: it has no
// keys and every line is 0.
type positions struct {
	spots []spot         // in document order, but for a table's header after a header under it (see add)
	index map[string]int // path or alias -> first spot with that path
}

// spot is one key (or array element) of the document.
type spot struct {
	path  string
	parts []string      // path split into keys; array indexes read "[1]"
	line  int           // 1-based
	col   int           // 1-based, in bytes
	kind  unstable.Kind // kind of the value; Table for a table header or an implicit table
	text  string        // the value of a string, or a scalar as written, for type checks
	// implied is set for a table that only the dotted key of a key = value
	// or of a header implies, and for an [[array.table]] as a whole, whose
	// elements have headers of their own: neither is a key or header the
	// document writes for itself.
	implied bool
}

// has reports whether path is a key of the document, as written or as the
// decoder reads it (see alias).
func (p *positions) has(path string) bool {
	if p == nil {
		return false
	}
	_, ok := p.index[path]
	return ok
}

// line returns the line of path, or 0 when it is not in the document.
func (p *positions) line(path string) int {
	if !p.has(path) {
		return 0
	}
	return p.spots[p.index[path]].line
}

// alias makes path another name of the key at spots[i], unless the
// document has a key path of its own: path is that key as the decoder
// reads it, spelt as the field it fills, when the document spells it in
// another case.
func (p *positions) alias(path string, i int) {
	if _, ok := p.index[path]; !ok {
		p.index[path] = i
	}
}

// at returns the key nearest before (line, col): the key whose value holds
// that position, for an error that points into a value. Of keys at the
// same place, a dotted key and the tables it implies, it is the last
// recorded: the key itself.
func (p *positions) at(line, col int) spot {
	var best spot
	for _, s := range p.spots {
		atOrBefore := s.line < line || (s.line == line && s.col <= col)
		if atOrBefore && (s.line > best.line || (s.line == best.line && s.col >= best.col)) {
			best = s
		}
	}
	return best
}

// scanner walks a document with go-toml's unstable.Parser, expression by
// expression, to build its positions.
type scanner struct {
	p       unstable.Parser
	pos     *positions
	table   []string       // parts of the current table header
	counts  map[string]int // array table path -> elements seen so far
	lastEnd int            // offset just after the last complete expression
}

// scanPositions returns the positions of every key of data. On a syntax
// error it returns the positions found before it and an *Error for it
// (without File).
func scanPositions(data []byte) (*positions, *Error) {
	s := &scanner{
		pos:    &positions{index: map[string]int{}},
		counts: map[string]int{},
	}
	s.p.Reset(data)
	for s.p.NextExpression() {
		s.expression(s.p.Expression())
	}
	if err := s.p.Error(); err != nil {
		return s.pos, s.syntaxError(err)
	}
	return s.pos, nil
}

// expression records one top-level expression: a key = value, a [table]
// or an [[array.table]].
func (s *scanner) expression(n *unstable.Node) {
	switch n.Kind {
	case unstable.KeyValue:
		s.keyValue(s.table, n)
		s.lastEnd = int(n.Raw.Offset + n.Raw.Length)
	case unstable.Table, unstable.ArrayTable:
		s.header(n)
	}
}

// header records a [table] or [[array.table]] header, which becomes the
// table of the keys that follow it, and the tables its dotted key implies.
// Each [[array.table]] adds an element.
func (s *scanner) header(n *unstable.Node) {
	keys, first, last := keyParts(n)
	s.lastEnd = int(last.Offset + last.Length)
	parts := s.resolve(keys)
	for i := 1; i < len(parts); i++ {
		s.add(parts[:i], first, spot{kind: unstable.Table, implied: true})
	}
	if n.Kind == unstable.ArrayTable {
		path := joinPath(parts)
		s.add(parts, first, spot{kind: unstable.ArrayTable, implied: true})
		parts = append(parts, index(s.counts[path]))
		s.counts[path]++
	}
	s.table = parts
	s.add(parts, first, spot{kind: unstable.Table})
}

// keyParts returns the key of a table header or key = value, with the
// ranges of its first and last parts.
func keyParts(n *unstable.Node) (keys []string, first, last unstable.Range) {
	it := n.Key()
	for it.Next() {
		if len(keys) == 0 {
			first = it.Node().Raw
		}
		last = it.Node().Raw
		keys = append(keys, string(it.Node().Data))
	}
	return keys, first, last
}

// resolve turns the key of a table header into a path: every part but the
// last that names an array table refers to its latest element.
func (s *scanner) resolve(keys []string) []string {
	var parts []string
	for i, k := range keys {
		parts = append(parts, k)
		if n, ok := s.counts[joinPath(parts)]; ok && i < len(keys)-1 {
			parts = append(parts, index(n-1))
		}
	}
	return parts
}

// keyValue records a key = value under base, the implicit tables its dotted
// key creates, and what its value contains.
func (s *scanner) keyValue(base []string, n *unstable.Node) {
	keys, first, _ := keyParts(n)
	parts := append([]string(nil), base...)
	for i, k := range keys {
		parts = append(parts, k)
		if i < len(keys)-1 {
			s.add(parts, first, spot{kind: unstable.Table, implied: true})
		}
	}
	s.value(parts, n.Value(), first)
}

// value records the value at parts, located at r, then its elements or keys.
func (s *scanner) value(parts []string, v *unstable.Node, r unstable.Range) {
	s.add(parts, r, spot{kind: v.Kind, text: string(v.Data)})
	switch v.Kind {
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			er := it.Node().Raw
			if er.Length == 0 { // a nested array has no range of its own
				er = r
			}
			s.value(append(parts[:len(parts):len(parts)], index(i)), it.Node(), er)
		}
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			s.keyValue(parts, it.Node())
		}
	}
}

// add records the key parts, described by sp, at the start of range r,
// unless it is already known: a table that several dotted keys or headers
// imply keeps its first line, but takes the line of its own header when
// that comes after a header under it ([a.b] then [a]).
func (s *scanner) add(parts []string, r unstable.Range, sp spot) {
	path := joinPath(parts)
	i, ok := s.pos.index[path]
	ownHeader := ok && !sp.implied && s.pos.spots[i].implied && s.pos.spots[i].kind == unstable.Table
	if ok && !ownHeader {
		return
	}
	start := s.p.Shape(r).Start
	sp.path, sp.parts = path, append([]string(nil), parts...)
	sp.line, sp.col = start.Line, start.Column
	if ok {
		s.pos.spots[i] = sp // in place, so that at() cannot count on document order
		return
	}
	s.pos.index[path] = len(s.pos.spots)
	s.pos.spots = append(s.pos.spots, sp)
}

// syntaxError turns the parser's error into an *Error naming the line and,
// when it can be read, the key of the expression that failed. The parser's
// message may quote a character of the value: for the token and proxy_url
// it is replaced.
func (s *scanner) syntaxError(err error) *Error {
	var perr *unstable.ParserError
	if !errors.As(err, &perr) {
		return &Error{Msg: "syntax error: " + err.Error()}
	}
	r := s.p.Range(perr.Highlight) // a subslice of the data, as go-toml's own decoder requires
	key := joinPath(failingKey(s.p.Data()[min(s.lastEnd, int(r.Offset)):r.Offset]))
	if key != "" && len(s.table) > 0 {
		key = joinPath(s.table) + "." + key
	}
	msg := "syntax error: " + perr.Message
	switch secret(key) {
	case "the token":
		msg = "syntax error in the value (not shown: the token is secret)"
	case "a password":
		msg = "syntax error in the value (not shown: it may hold a password)"
	}
	return &Error{Line: s.p.Shape(r).Start.Line, Key: key, Msg: msg}
}

// failingKey returns the key of the key = value that starts rest: the text
// of the expression that failed, up to the error, after the end of the
// expression before it (which may leave the "]" of a table header). The
// parser reads it: rest cut after one of its '=' and given a value parses
// as that key = value. nil when rest does not start with a key = value.
func failingKey(rest []byte) []string {
	rest = bytes.TrimLeft(rest, " \t]")
	var p unstable.Parser
	for i, c := range rest {
		if c != '=' {
			continue
		}
		p.Reset(append(rest[:i+1:i+1], '0'))
		if p.NextExpression() && p.Expression().Kind == unstable.KeyValue {
			keys, _, _ := keyParts(p.Expression())
			return keys
		}
	}
	return nil
}

// bareKey reports whether a key needs no quotes in a path.
func bareKey(k string) bool { return k != "" && allOf(k, "_-") }

// joinPath renders key parts as one path: a.b[1].c, quoting odd keys.
func joinPath(parts []string) string {
	var b strings.Builder
	for i, k := range parts {
		switch {
		case strings.HasPrefix(k, "["):
			b.WriteString(k)
			continue
		case i > 0:
			b.WriteByte('.')
		}
		if bareKey(k) {
			b.WriteString(k)
		} else {
			b.WriteString(strconv.Quote(k))
		}
	}
	return b.String()
}

// index renders an array index as a path part.
func index(i int) string { return "[" + strconv.Itoa(i) + "]" }
