// Command gotunnel-mux is a reverse TCP tunnel over one outbound
// connection. Run "gotunnel-mux help" for the commands.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// Exit codes, for supervisors (systemd RestartPreventExitStatus=2 3).
const (
	exitOK      = 0 // clean stop
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // usage or configuration error
	exitRefused = 3 // refused by the server for a reason retrying cannot fix
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `gotunnel-mux: a reverse TCP tunnel over one outbound connection

Usage:
  gotunnel-mux server --config server.toml
  gotunnel-mux client [--config client.toml]
  gotunnel-mux client --server HOST:PORT --token T --map [NAME=]REMOTE_PORT:LOCAL_ADDR[/udp][,OPTION=VALUE...] [--map ...]
  gotunnel-mux demo                 server, client and a web service on loopback
  gotunnel-mux check --config FILE  validate a server or client file
  gotunnel-mux status [--admin URL | --config FILE] [--watch]   a running process's status
  gotunnel-mux reload [--admin URL | --config FILE]             make a running client re-read its file
  gotunnel-mux token [--hash]       print a strong random token (and its SHA-256, for [[clients]])
  gotunnel-mux version

GOTUNNEL_TOKEN overrides the token of a file, GOTUNNEL_ADMIN_TOKEN its
admin token. Exit codes: 0 clean stop,
1 runtime failure, 2 usage or config error, 3 refused by the server
(bad token, unsupported version). Docs: docs/config.md, docs/operations.md.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns its exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "server":
		return runServer(rest, stderr)
	case "client":
		return runClient(rest, stderr)
	case "demo":
		return runDemo(rest, stdout, stderr)
	case "check":
		return runCheck(rest, stdout, stderr)
	case "token":
		return runToken(rest, stdout, stderr)
	case "status":
		return runStatus(rest, stdout, stderr)
	case "reload":
		return runReload(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "gotunnel-mux", buildVersion())
		return exitOK
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "gotunnel-mux: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
