package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// decode strictly decodes the TOML document data, read from file name, over
// target: a pointer to a struct that already holds the defaults. It returns
// the positions of the document's keys and every problem found. complete is
// false when a syntax, type or value error stopped the decoder: target is
// then only partly filled and is not worth validating. Unknown keys do not
// stop it: the decoder skips them, and checkTypes reports them.
func decode(name string, data []byte, target any) (pos *positions, errs Errors, complete bool) {
	pos, serr := scanPositions(data)
	if serr != nil {
		serr.File = name
		return pos, Errors{serr}, false
	}
	unknown, bad := checkTypes(pos, reflect.TypeOf(target).Elem())
	moreBad := decodeErrors(pos, toml.Unmarshal(data, target), bad)
	errs = append(append(unknown, bad...), moreBad...)
	for _, e := range errs {
		e.File = name
	}
	return pos, errs, len(bad)+len(moreBad) == 0
}

// decodeErrors converts the decoder's error into problems. The decoder
// stops at the first wrong value, which checkTypes, given as seen, has
// mostly reported in the user's words already: a problem on a line that
// seen covers is left out. The decoder's own message is kept for the rest
// (a duplicate key, an integer too large), but not for the token and
// proxy_url, whose values it could quote.
func decodeErrors(pos *positions, err error, seen Errors) Errors {
	var decErr *toml.DecodeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &decErr):
		e := positioned(pos, decErr)
		if slices.ContainsFunc(seen, func(s *Error) bool { return s.Line == e.Line }) {
			return nil // the same problem, in checkTypes' words
		}
		e.Msg = strings.TrimPrefix(decErr.Error(), "toml: ")
		if what := secret(e.Key); what != "" {
			e.Msg = "cannot decode (the decoder's message is not shown: it could quote " + what + ")"
		}
		return Errors{e}
	case len(seen) > 0:
		return nil // an unplaced error after a value error is the same one
	default:
		return Errors{{Msg: strings.TrimPrefix(err.Error(), "toml: ")}}
	}
}

// positioned returns an Error at the line of a decoder error, named with
// the indexed path of the key whose value holds it ("mappings[1].name"),
// which the decoder's Key() lacks. go-toml places an error in an array or
// inline table inside an array at the document's start, before any key:
// such an error is named with Key().
func positioned(pos *positions, de *toml.DecodeError) *Error {
	line, col := de.Position()
	key := pos.at(line, col).path
	if key == "" {
		key = joinPath(de.Key())
	}
	if m := duplicateKey.FindStringSubmatch(de.Error()); m != nil {
		// The second key = value of a name is not a spot of its own: the
		// spot found is the key before it, in the same table.
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			key = key[:i+1] + m[1]
		} else {
			key = m[1]
		}
	}
	return &Error{Line: line, Key: key}
}

// duplicateKey is go-toml's message for a key given twice in a table.
var duplicateKey = regexp.MustCompile(`key (\S+) is already defined`)

// checkTypes checks every key of the document against the struct root
// that it decodes into, before the decoder runs. The decoder cannot give
// these messages: it stops at its first error, before it names the keys
// it does not know, names Go types ("cannot decode TOML integer into
// struct field config.Log.Level of type string"), reads an integer into a
// Duration as nanoseconds, hands an integer to a trusted proxy's
// UnmarshalText and a float to a Size's, and takes a key whose case
// differs from a field's without a word. So every unknown key, every wrong
// type and every bad duration, size, port range or trusted proxy is
// reported here, at once, in the user's terms; unknown holds the keys that
// name no field, and those that name one only in another case.
//
// An unknown key is named as the decoder's strict mode would name it: the
// key of a key = value, dotted as written, or a [table] header, or each
// [[array.table]] element. The keys of an unknown table or value are not
// reported again, but each header is.
//
// A key in the wrong case is checked as the field the decoder fills with
// it, and its problems are named with the key spelt right. pos learns that
// spelling as another name of the key, so that a problem found after
// decoding ("bind_addr: bad address") has the line of the key as written.
func checkTypes(pos *positions, root reflect.Type) (unknown, bad Errors) {
	gone := map[string]bool{} // keys reported unknown
	for i, s := range pos.spots {
		t, canon, noField := typeAt(root, s.parts)
		switch {
		case noField:
			if !s.implied && (s.kind == unstable.Table || !under(s.parts, gone)) {
				gone[s.path] = true
				unknown = append(unknown, &Error{Line: s.line, Key: s.path, Msg: unknownMsg(s.kind)})
			}
			continue
		case t == nil:
			continue
		}
		path := joinPath(canon)
		if path != s.path {
			pos.alias(path, i)
		}
		if near := canon[len(canon)-1]; near != s.parts[len(s.parts)-1] {
			unknown = append(unknown, &Error{Line: s.line, Key: s.path,
				Msg: fmt.Sprintf("unknown key; keys are case-sensitive: did you mean %q?", near)})
		}
		if msg := checkValue(t, s); msg != "" {
			bad = append(bad, &Error{Line: s.line, Key: path, Msg: msg})
		}
	}
	return unknown, bad
}

// unknownMsg says that a key of kind is unknown: a table for a [table]
// header or an [[array.table]] element, a key for any other.
func unknownMsg(kind unstable.Kind) string {
	if kind == unstable.Table {
		return "unknown table"
	}
	return "unknown key"
}

// under reports whether the key path parts lies under one of the keys in
// paths.
func under(parts []string, paths map[string]bool) bool {
	for n := 1; n < len(parts); n++ {
		if paths[joinPath(parts[:n])] {
			return true
		}
	}
	return false
}

// typeAt follows the key path parts from root as the decoder does and
// returns the type it decodes into, with the path as the fields' tags
// spell it: like the decoder, it takes a key that no tag matches as the
// field whose tag matches it with case ignored. t is nil when parts lead
// into a value that is not a table or array (whose own check reports it),
// or to a key that no field of a table has: noField is then set.
func typeAt(root reflect.Type, parts []string) (t reflect.Type, canon []string, noField bool) {
	t = root
	for _, part := range parts {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case strings.HasPrefix(part, "["):
			if t.Kind() != reflect.Slice {
				return nil, nil, false
			}
			t, canon = t.Elem(), append(canon, part)
			continue
		case t.Kind() != reflect.Struct || isText(t):
			return nil, nil, false
		}
		ft, tag := field(t, part)
		if ft == nil {
			return nil, nil, true
		}
		t, canon = ft, append(canon, tag)
	}
	return t, canon, false
}

// field returns the type and the tag of the field of struct t tagged key,
// or, when none is, of the field whose tag matches key with case ignored.
// Case is ignored as the decoder ignores it, by lowering both, which is
// not quite strings.EqualFold: "ſ" folds to "s" but is lower already. The
// fields of an embedded struct count as t's own, as they do for the
// decoder, and a field shadows the one of the same name it embeds.
func field(t reflect.Type, key string) (reflect.Type, string) {
	var foldType reflect.Type
	fold, lower := "", strings.ToLower(key)
	for _, f := range reflect.VisibleFields(t) {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case name == "-" || name == "": // not in a file, or an embedded struct
		case name == key:
			return f.Type, name
		case foldType == nil && strings.ToLower(name) == lower:
			foldType, fold = f.Type, name
		}
	}
	return foldType, fold
}

var (
	durationType  = reflect.TypeFor[Duration]()
	sizeType      = reflect.TypeFor[Size]()
	portRangeType = reflect.TypeFor[PortRange]()
	proxyType     = reflect.TypeFor[trustedProxy]()
	prefixType    = reflect.TypeFor[ipPrefix]()
)

// isText reports whether t is read from a string by UnmarshalText.
func isText(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// checkValue returns what is wrong with the value at s for type t, or "".
func checkValue(t reflect.Type, s spot) string {
	want, kinds := wants(t)
	if !slices.Contains(kinds, s.kind) {
		return fmt.Sprintf("want %s, got %s", want, kindNames[s.kind])
	}
	if !isText(t) || (t == sizeType && s.kind == unstable.Integer) {
		return "" // the decoder stores a Size integer as it is
	}
	u := reflect.New(t).Interface().(encoding.TextUnmarshaler)
	if err := u.UnmarshalText([]byte(s.text)); err != nil {
		return err.Error()
	}
	return ""
}

// wants says in a user's words what a value of type t looks like, and
// returns the kinds of TOML value that decode into it. Every type of the
// configuration that is not listed is a struct.
func wants(t reflect.Type) (string, []unstable.Kind) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	str := []unstable.Kind{unstable.String}
	strOrInt := []unstable.Kind{unstable.String, unstable.Integer}
	switch t {
	case durationType:
		return `a duration string such as "10s"`, str
	case sizeType:
		return `a size: an integer of bytes or a string such as "4MiB"`, strOrInt
	case portRangeType:
		return `a port range string such as "2222" or "10000-20000"`, strOrInt
	case proxyType, prefixType:
		return `an IP address or CIDR string such as "10.0.0.0/8" or "127.0.0.1"`, str
	}
	arrays := []unstable.Kind{unstable.Array, unstable.ArrayTable}
	switch t.Kind() {
	case reflect.String:
		return "a string", str
	case reflect.Int, reflect.Int64:
		return "an integer", []unstable.Kind{unstable.Integer}
	case reflect.Float64:
		return "a number", []unstable.Kind{unstable.Float, unstable.Integer}
	case reflect.Bool:
		return "true or false", []unstable.Kind{unstable.Bool}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct && !isText(t.Elem()) {
			return "an array of tables", arrays
		}
		return "an array", arrays
	}
	return "a table", []unstable.Kind{unstable.Table, unstable.InlineTable}
}

// kindNames names each kind of TOML value.
var kindNames = map[unstable.Kind]string{
	unstable.String: "a string", unstable.Integer: "an integer", unstable.Float: "a float",
	unstable.Bool: "a boolean", unstable.Array: "an array", unstable.ArrayTable: "an array of tables",
	unstable.Table: "a table", unstable.InlineTable: "a table",
	unstable.DateTime: "a date or time", unstable.LocalDateTime: "a date or time",
	unstable.LocalDate: "a date or time", unstable.LocalTime: "a date or time",
}

// secret says what secret the value of key may hold, "the token" or "a
// password", so that no message quotes that value; "" for other keys.
func secret(key string) string {
	key = strings.ToLower(key) // the decoder fills token from TOKEN too
	switch {
	case key == "token" || strings.HasSuffix(key, ".token"):
		return "the token"
	case key == "proxy_url" || strings.HasPrefix(key, "proxy_url[") || strings.HasPrefix(key, "proxy_url."):
		return "a password"
	}
	return ""
}
