package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
	"github.com/gotunnel-mux/gotunnel-mux/config"
)

// adminFlags are the flags of the commands that talk to a running
// process's admin API: status and reload.
type adminFlags struct {
	url, token, config string
	insecure           bool
}

func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "admin", os.Getenv("GOTUNNEL_ADMIN_URL"), "the admin API's URL, such as http://127.0.0.1:7070 (default $GOTUNNEL_ADMIN_URL, or [admin] addr of --config)")
	fs.StringVar(&f.token, "token", "", "the admin token (default $"+config.AdminTokenEnv+", or [admin] token of --config)")
	fs.StringVar(&f.config, "config", "", "a server or client file whose [admin] table gives the address and token")
	fs.BoolVar(&f.insecure, "insecure", false, "with an https:// admin URL, do not verify its certificate")
}

// endpoint is the API's base URL and token, from the flags, the
// environment, or the file's [admin] table, in that order.
func (f *adminFlags) endpoint() (base, token string, err error) {
	base, token = f.url, f.token
	if token == "" {
		token = os.Getenv(config.AdminTokenEnv)
	}
	if f.config != "" && (base == "" || token == "") {
		a, err := adminOf(f.config)
		if err != nil {
			return "", "", err
		}
		if a.Addr == "" {
			return "", "", fmt.Errorf("%s: [admin] addr is not set: the process has no admin API", f.config)
		}
		if base == "" {
			scheme := "http"
			if a.CertFile != "" {
				scheme = "https"
			}
			base = scheme + "://" + a.Addr
		}
		token = cmpOr(token, a.Token)
	}
	if base == "" {
		return "", "", errors.New("no admin API given: use --admin URL or --config FILE (whose [admin] addr is set)")
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimRight(base, "/"), token, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// adminOf is the [admin] table of a server or client file.
func adminOf(path string) (config.Admin, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.Admin{}, err
	}
	kind, err := config.Kind(path, data)
	if err != nil {
		return config.Admin{}, err
	}
	if kind == "server" {
		c, err := config.ParseServer(path, data, os.LookupEnv)
		if err != nil {
			return config.Admin{}, err
		}
		return c.Admin, nil
	}
	c, err := config.ParseClient(path, data, os.LookupEnv)
	if err != nil {
		return config.Admin{}, err
	}
	return c.Admin, nil
}

func (f *adminFlags) client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if f.insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// call sends one request to the API and returns the body of a 2xx
// answer, or an error with the API's words.
func (f *adminFlags) call(method, path string) (body []byte, code int, err error) {
	base, token, err := f.endpoint()
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		return nil, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := f.client().Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = res.Body.Close() }()
	body, err = io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, res.StatusCode, err
	}
	if res.StatusCode/100 != 2 {
		return body, res.StatusCode, fmt.Errorf("%s %s: %s: %s", method, base+path, res.Status, strings.TrimSpace(string(body)))
	}
	return body, res.StatusCode, nil
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	var f adminFlags
	fs := newFlagSet("status", "[--admin URL | --config FILE] [--token T] [--watch] [--json]", stderr)
	f.register(fs)
	watch := fs.Bool("watch", false, "redraw the status until interrupted")
	every := fs.Duration("interval", 2*time.Second, "with --watch, the time between two draws")
	asJSON := fs.Bool("json", false, "print the status document (JSON) as the API gives it")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 || *every <= 0 {
		fs.Usage()
		return exitUsage
	}
	if _, _, err := f.endpoint(); err != nil {
		fmt.Fprintln(stderr, "status:", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	clear := *watch && isTerminal(stdout)
	for {
		body, _, err := f.call(http.MethodGet, "/api/v1/status")
		var out bytes.Buffer
		switch {
		case err != nil:
			fmt.Fprintln(&out, "status:", err)
		case *asJSON:
			out.Write(body)
		default:
			err = renderStatus(&out, body)
		}
		if clear {
			_, _ = io.WriteString(stdout, "\x1b[H\x1b[2J")
		}
		_, _ = stdout.Write(out.Bytes())
		if !*watch {
			if err != nil {
				return exitFailure
			}
			return exitOK
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(*every):
		}
		if !clear {
			fmt.Fprintln(stdout)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// renderStatus draws a status document as tables.
func renderStatus(w io.Writer, body []byte) error {
	var role struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal(body, &role); err != nil {
		return fmt.Errorf("status: not a status document: %w", err)
	}
	switch role.Role {
	case "server":
		var doc admin.ServerDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		renderServer(w, doc)
	case "client":
		var doc admin.ClientDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		renderClient(w, doc)
	default:
		return fmt.Errorf("status: unknown role %q", role.Role)
	}
	return nil
}

func renderServer(w io.Writer, doc admin.ServerDoc) {
	fmt.Fprintf(w, "gotunnel-mux server %s, up %s, listening on %s, %d client(s)\n\n", doc.Version, ago(doc.Started),
		strings.Join(doc.Listening, ", "), len(doc.Clients))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tMAPPING\tPORT\tLOCAL\tSTATE\tACTIVE\tVISITORS\tIN\tOUT\tDENIED\tLIMIT\tHELD")
	for _, c := range doc.Clients {
		if len(c.Mappings) == 0 {
			fmt.Fprintf(tw, "%s\t-\t\t\t\t\t\t\t\t\t\t\n", c.Name)
		}
		for _, m := range c.Mappings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\t%s\n", c.Name, m.Name, port(m, m.RemotePort), m.LocalAddr, state(m),
				m.Active, m.Visitors, size(m.BytesIn), size(m.BytesOut), m.Denied, limit(m.BandwidthLimit), held(m))
		}
	}
	_ = tw.Flush()
	if len(doc.Clients) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CLIENT\tREMOTE\tTRANSPORT\tRTT\tUP\tTOKEN\tMAX MAPPINGS\tLIMIT\tSESSION")
		for _, c := range doc.Clients {
			token := "shared"
			if c.OwnToken {
				token = "own"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.Name, c.Remote, c.Transport, rtt(c.HeartbeatRTTMs), ago(c.Since),
				token, c.MaxMappings, limit(c.BandwidthLimit), c.SessionID)
		}
		_ = tw.Flush()
	}
	if doc.Fleet != nil {
		renderFleet(w, doc.Fleet)
	}
}

// renderFleet draws the fleet's section: every server, and who holds
// each client name and port.
func renderFleet(w io.Writer, f *admin.FleetDoc) {
	if f.Error != "" {
		fmt.Fprintf(w, "\nfleet: cannot read etcd: %s\n", f.Error)
		return
	}
	fmt.Fprintf(w, "\nfleet: %d server(s), %d client(s), %d port(s)\n\n", len(f.Servers), len(f.Clients), len(f.Ports))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tPUBLIC HOST\tBIND\tVERSION\tUP\tCLIENTS\tPORTS")
	for _, s := range f.Servers {
		clients, ports := 0, 0
		for _, c := range f.Clients {
			if c.Server == s.Name {
				clients++
			}
		}
		for _, p := range f.Ports {
			if p.Server == s.Name {
				ports++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", s.Name, s.PublicHost, s.BindAddr, s.Version, ago(s.Since), clients, ports)
	}
	_ = tw.Flush()
	if len(f.Ports) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PORT\tSERVER\tCLIENT\tMAPPING")
		for _, p := range f.Ports {
			fmt.Fprintf(tw, "%s/%d\t%s\t%s\t%s\n", p.Protocol, p.Port, p.Server, p.Client, p.Mapping)
		}
		_ = tw.Flush()
	}
}

func renderClient(w io.Writer, doc admin.ClientDoc) {
	session := "not connected"
	if s := doc.Session; s != nil {
		session = fmt.Sprintf("connected %s over %s, rtt %s, session %s", ago(s.Since), s.Transport, rtt(s.HeartbeatRTTMs), s.ID)
	} else if doc.LastError != "" {
		session += ": " + doc.LastError
	}
	fmt.Fprintf(w, "gotunnel-mux client %s, up %s, server %s: %s; %d reconnect(s)\n\n", doc.Version, ago(doc.Started),
		doc.Server, session, doc.Reconnects)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAPPING\tREMOTE PORT\tLOCAL\tSTATE\tACTIVE\tVISITORS\tIN\tOUT\tLIMIT\tHELD")
	for _, m := range doc.Mappings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", m.Name, port(m, m.BoundPort), m.LocalAddr, state(m), m.Active, m.Visitors,
			size(m.BytesIn), size(m.BytesOut), limit(m.BandwidthLimit), held(m))
	}
	_ = tw.Flush()
	if len(doc.Servers) < 2 {
		return
	}
	// Several servers: each one's session, and each mapping's state there.
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tSESSION\tRTT\tRECONNECTS\tMAPPINGS")
	for _, ss := range doc.Servers {
		sess, r := "not connected", "-"
		if s := ss.Session; s != nil {
			sess, r = fmt.Sprintf("%s, up %s", s.ID, ago(s.Since)), rtt(s.HeartbeatRTTMs)
		} else if ss.LastError != "" {
			sess += ": " + ss.LastError
		}
		var maps []string
		for _, m := range ss.Mappings {
			st := m.State
			switch {
			case m.BoundPort != 0:
				st += fmt.Sprintf(" :%d", m.BoundPort)
			case m.Code != 0:
				st += fmt.Sprintf(" (%d)", m.Code)
			}
			maps = append(maps, m.Name+" "+st)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", ss.Server, sess, r, ss.Reconnects, strings.Join(maps, ", "))
	}
	_ = tw.Flush()
}

// port is a mapping's port as the tables show it: "-" for none, and
// "/udp" after a UDP mapping's.
func port(m admin.MappingRow, p int) string {
	switch {
	case p == 0:
		return "-"
	case m.Protocol == "udp":
		return fmt.Sprintf("%d/udp", p)
	}
	return fmt.Sprint(p)
}

// limit is a bandwidth limit, bytes a second: "10.0 MiB/s", or "-".
func limit(bytesPerSec int64) string {
	if bytesPerSec == 0 {
		return "-"
	}
	return size(bytesPerSec) + "/s"
}

// held is how long a limit held a mapping's bytes back, both directions
// together: "3.2s", or "-".
func held(m admin.MappingRow) string {
	d := time.Duration((m.LimitWaitInMs + m.LimitWaitOutMs) * float64(time.Millisecond))
	switch {
	case d == 0:
		return "-"
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func state(m admin.MappingRow) string {
	if m.Code != 0 {
		return fmt.Sprintf("%s (%d %s)", m.State, m.Code, m.Reason)
	}
	return m.State
}

func rtt(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", ms)
}

func ago(t time.Time) string { return time.Since(t).Round(time.Second).String() }

// size is n bytes in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func runReload(args []string, stdout, stderr io.Writer) int {
	var f adminFlags
	fs := newFlagSet("reload", "[--admin URL | --config FILE] [--token T]", stderr)
	f.register(fs)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	body, code, err := f.call(http.MethodPost, "/api/v1/reload")
	var res admin.ReloadResult
	switch {
	case code == http.StatusUnprocessableEntity && json.Unmarshal(body, &res) == nil:
		fmt.Fprintln(stderr, "reload refused; nothing changed:")
		fmt.Fprintln(stderr, res.Error)
		return exitUsage
	case code == http.StatusNotFound:
		fmt.Fprintln(stderr, "reload: this process does not reload over its admin API (send it SIGHUP)")
		return exitFailure
	case err != nil:
		fmt.Fprintln(stderr, "reload:", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "reloaded")
	return exitOK
}
