package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// env returns an Env backed by a map.
func env(m map[string]string) Env {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// noEnv is an environment without GOTUNNEL_TOKEN.
var noEnv = env(nil)

// want is one expected problem: its line, its key and a part of its message.
type want struct {
	line int
	key  string
	msg  string
}

func (w want) String() string { return fmt.Sprintf("%d: %s: ...%s...", w.line, w.key, w.msg) }

// checkErrors fails unless err is an Errors holding exactly the wanted
// problems (in any order), each naming file.
func checkErrors(t *testing.T, call string, err error, file string, wants []want) {
	t.Helper()
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("%s = %v, want Errors %v", call, err, wants)
	}
	if len(errs) != len(wants) {
		t.Errorf("%s = %d errors:\n%v\nwant %d: %v", call, len(errs), err, len(wants), wants)
	}
	for _, w := range wants {
		if !hasError(errs, file, w) {
			t.Errorf("%s = \n%v\nwant an error %v", call, err, w)
		}
	}
}

// hasError reports whether errs holds the problem w in file.
func hasError(errs Errors, file string, w want) bool {
	for _, e := range errs {
		if e.File == file && e.Line == w.line && e.Key == w.key && strings.Contains(e.Msg, w.msg) {
			return true
		}
	}
	return false
}
