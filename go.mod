module github.com/gotunnel-mux/gotunnel-mux

go 1.26.0

require (
	github.com/hashicorp/yamux v0.1.2
	github.com/jpillora/backoff v1.1.0
	github.com/lmittmann/tint v1.2.1
	github.com/mattn/go-isatty v0.0.24
	github.com/pelletier/go-toml/v2 v2.4.3
	go.uber.org/goleak v1.3.0
)

require (
	github.com/coder/websocket v1.8.15
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require (
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
