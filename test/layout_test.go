package test

import (
	"go/build"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The import graph of docs/architecture.md: for each product package, the
// project's packages and the outside modules it may import (the standard
// library always). Imports flow cmd -> control/{server,client} ->
// {control, mux, mux/transport, dataplane}; the two sides never import each
// other, and config is read by cmd alone.
var layout = []struct {
	dir     string
	project []string // the project's packages it may import
	outside []string // module path prefixes outside the standard library
}{
	{"control", nil, nil},
	{"control/server", []string{"control", "mux", "mux/transport", "dataplane"}, []string{"golang.org/x/time/rate"}},
	// The fleet's registry in etcd: a plug-in of the server side
	// (server.Fleet), which knows no etcd itself.
	{"control/server/fleet", []string{"control/server"}, []string{"go.etcd.io/etcd/", "go.uber.org/zap", "google.golang.org/grpc"}},
	{"control/client", []string{"control", "mux", "mux/transport", "dataplane"}, []string{"github.com/jpillora/backoff", "golang.org/x/time/rate", "github.com/pires/go-proxyproto"}},
	{"mux", nil, []string{"github.com/hashicorp/yamux", "golang.org/x/sys/"}},
	{"mux/transport", nil, []string{"github.com/coder/websocket", "golang.org/x/net/proxy", "github.com/pires/go-proxyproto"}},
	{"dataplane", nil, []string{"golang.org/x/time/rate"}},
	{"config", nil, []string{"github.com/pelletier/go-toml/v2"}},
	// The admin API is cmd's: it reads the engines' Status and feeds
	// Prometheus; no engine knows of HTTP or metrics.
	{"cmd/gotunnel-mux/admin", []string{"control", "control/server", "control/client"}, []string{"github.com/prometheus/client_golang/"}},
}

const module = "github.com/gotunnel-mux/gotunnel-mux/"

// TestImportGraph fails when a package imports what its row does not
// allow: a side reaching into the other, the wire format growing a
// dependency, an engine reading config.
func TestImportGraph(t *testing.T) {
	for _, row := range layout {
		pkg, err := build.ImportDir(filepath.Join("..", row.dir), 0)
		if err != nil {
			t.Fatalf("%s: %v", row.dir, err)
		}
		for _, imp := range pkg.Imports {
			if !allowed(imp, row.project, row.outside) {
				t.Errorf("%s imports %s, which docs/architecture.md does not allow", row.dir, imp)
			}
		}
	}
}

func allowed(imp string, project, outside []string) bool {
	if own, ok := strings.CutPrefix(imp, module); ok {
		return slices.Contains(project, own)
	}
	if !strings.Contains(strings.Split(imp, "/")[0], ".") {
		return true // the standard library
	}
	for _, p := range outside {
		if strings.HasPrefix(imp, p) {
			return true
		}
	}
	return false
}

// TestLayoutCoversEveryPackage: a new product package gets a row above.
func TestLayoutCoversEveryPackage(t *testing.T) {
	var dirs []string
	for _, row := range layout {
		dirs = append(dirs, row.dir)
	}
	for _, pattern := range []string{"../*/*.go", "../*/*/*.go", "../*/*/*/*.go"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			dir, _ := filepath.Rel("..", filepath.Dir(f))
			if strings.HasPrefix(dir, "cmd") || strings.HasPrefix(dir, "test") || slices.Contains(dirs, dir) {
				continue
			}
			t.Errorf("package %s has no row in the import graph of layout_test.go", dir)
			dirs = append(dirs, dir)
		}
	}
}
