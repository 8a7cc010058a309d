package config

import (
	"errors"
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
