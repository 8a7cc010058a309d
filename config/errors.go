package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem with a configuration: where it is and what is wrong.
// Its text reads like a compiler's:
//
//	server.toml:12: allow_ports[1]: bad port range "10-x": "x" is not a port number
//
// File is empty for a configuration built in code (quick mode), and Line is
// 0 when the key is not in the file (a required key that is missing) or the
// problem belongs to the whole file. Msg never contains a token.
type Error struct {
	File string // file name as given to Load or Parse; "" when built in code
	Line int    // 1-based line of the key in File; 0 when unknown
	Key  string // full key path, e.g. "mappings[1].local_addr"; "" for the whole file
	Msg  string // one line, lower case

	err error // underlying cause (a failed read), for errors.Is
}

// Error renders the problem as "file:line: key: message", leaving out the
// parts that are not known.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the cause of the problem, such as fs.ErrNotExist wrapped
// in the error of a file that could not be read, or nil.
func (e *Error) Unwrap() error { return e.err }

// Errors is every problem found in one configuration. Load and Parse return
// it as their error; find it with errors.As.
type Errors []*Error

// Error renders one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual problems, so that errors.As can also find
// a single *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// err returns es as an error, or nil when there is no problem, with the
// problems that have a line first, in document order.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	slices.SortStableFunc(es, func(a, b *Error) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line) // a line before no line
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return es
}
