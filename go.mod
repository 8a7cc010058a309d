module github.com/gotunnel-mux/gotunnel-mux

go 1.26

require (
	github.com/hashicorp/yamux v0.1.2
	github.com/jpillora/backoff v1.1.0
	github.com/lmittmann/tint v1.2.1
	github.com/mattn/go-isatty v0.0.24
	github.com/pelletier/go-toml/v2 v2.4.3
	go.uber.org/goleak v1.3.0
)

require golang.org/x/sys v0.28.0
