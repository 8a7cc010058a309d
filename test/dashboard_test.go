package test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The admin dashboard (cmd/gotunnel-mux/admin/dashboard.html) as a user
// sees it: in a real headless Chromium, driven with chromedp, against the
// real binaries while a download runs through the tunnel.

const (
	dashAdminToken = "dashboard-admin-token-0123456789"
	dashClientName = "dash"
	dashMapping    = "dl"
	dashPoll       = 150 * time.Millisecond // how often the test reads the page
	dashRowWithin  = 30 * time.Second       // for the page to show a row as asked
	// dashStartWithin bounds the browser's start: its first start on a
	// machine builds a profile and caches, and took more than 30 s once
	// with three test suites on two cores.
	dashStartWithin = 90 * time.Second
	dashMinRise     = 4 << 20 // how far bytes-out must rise while the test watches
)

// TestDashboardInChromium: the server's dashboard, opened with its admin
// token in the address, shows the client's mapping up, then its bytes-out
// rising while a 64 MiB download is under way (read at 8 MiB/s, so it
// lasts about 8 s), with a sparkline; the download arrives intact and the
// page ends on its exact size. The client's own dashboard (no token)
// shows the mapping up and the same total.
func TestDashboardInChromium(t *testing.T) {
	leakCheck(t)
	exe := chromiumPath(t)
	const size, seed, rate = 64 << 20, 53, 8 << 20
	srvAdmin, srvAddr := dashServer(t)
	be := startBackend(t, func(c net.Conn) { _, _ = stream(c, seed, size) })
	cliAdmin, port := dashClient(t, srvAddr, be.addr)

	browser := startBrowser(t, exe)
	srvPage := openDashboard(t, browser, "server dashboard", srvAdmin+"/#token="+dashAdminToken)
	row := srvPage.waitRow(t, "up", func(r rowView) bool { return r.State == "up" })
	if row.Owner != dashClientName {
		t.Errorf("server dashboard: row %q has data-owner %q, want the client's name %q", dashMapping, row.Owner, dashClientName)
	}

	v := dialSmallWindow(t, port)
	d := startDownload(v, rate)
	t.Cleanup(func() { _ = v.Close(); <-d.done })
	readings := srvPage.risingBytesOut(t, d, size)
	t.Logf("server dashboard bytes-out while the download ran: %s (the visitor had read %.1f MiB)",
		mibs(readings), float64(d.pr.count.Load())/(1<<20))
	if row = srvPage.row(t); row.SparkLines == 0 || row.SparkPoints == 0 {
		t.Errorf("server dashboard: the row's sparkline has %d lines and %d points, want an svg.spark that draws the traffic", row.SparkLines, row.SparkPoints)
	}
	srvPage.screenshot(t)

	d.wait(t, 60*time.Second, size, sumOf(seed, size))
	srvPage.waitRow(t, "with bytes-out = the download's size", func(r rowView) bool { return r.Out == size })

	cliPage := openDashboard(t, newTab(t, browser), "client dashboard", cliAdmin+"/")
	row = cliPage.waitRow(t, "up with bytes-out = the download's size", func(r rowView) bool { return r.State == "up" && r.Out == size })
	if row.Owner != "" {
		t.Errorf("client dashboard: row %q has data-owner %q, want none", dashMapping, row.Owner)
	}
	t.Logf("client dashboard: %s", cliPage.describe(t))
}

// chromiumPath is the browser the dashboard test drives: Debian's package
// at /usr/bin/chromium, else chromium on PATH. Without one the test skips,
// unless CI_REQUIRE_CHROMIUM=1 (CI sets it), where it fails: CI cannot
// skip it silently.
func chromiumPath(t *testing.T) string {
	t.Helper()
	return program(t, "CI_REQUIRE_CHROMIUM", "test: chromium not installed; apt-get install chromium to run the dashboard test",
		"/usr/bin/chromium", "chromium")
}

// dashServer starts the server binary with an admin API that needs
// dashAdminToken, and returns the API's base URL and the tunnel address.
func dashServer(t *testing.T) (adminURL, addr string) {
	t.Helper()
	cfg := writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"

[admin]
addr = "127.0.0.1:0"
token = %q

[log]
format = "json"
`, testToken, dashAdminToken))
	p := startProc(t, []string{"GOTUNNEL_TOKEN=", "GOTUNNEL_ADMIN_TOKEN="}, "server", "--config", cfg)
	got := waitLogs(t, p, map[string]func(map[string]any) bool{
		"admin api listening": msgIs("admin api listening"),
		"server listening":    msgIs("server listening"),
	})
	return logString(t, got["admin api listening"], "addr"), logString(t, got["server listening"], "addr")
}

// dashClient starts the client binary named dashClientName with the
// mapping dashMapping to local and an admin API without a token; it
// returns the API's base URL and the mapping's public port once it is up.
func dashClient(t *testing.T, addr, local string) (adminURL string, port int) {
	t.Helper()
	cfg := writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = %q

[admin]
addr = "127.0.0.1:0"

[log]
format = "json"

%s`, addr, testToken, dashClientName, mappingToml(dashMapping, local, 0)))
	p := startProc(t, []string{"GOTUNNEL_TOKEN=", "GOTUNNEL_ADMIN_TOKEN="}, "client", "--config", cfg)
	got := waitLogs(t, p, map[string]func(map[string]any) bool{
		"admin api listening":            msgIs("admin api listening"),
		"mapping " + dashMapping + " up": mappingLine(dashMapping),
	})
	up, ok := got["mapping "+dashMapping+" up"]["remote_port"].(float64)
	if !ok {
		t.Fatalf("the client's mapping line has no remote_port: %v", got)
	}
	return logString(t, got["admin api listening"], "addr"), int(up)
}

// waitLogs waits until p has logged a line for each matcher of want, in
// any order (waitLog alone drops the lines it does not match), and returns
// the lines by the matcher's name.
func waitLogs(t *testing.T, p *proc, want map[string]func(map[string]any) bool) map[string]map[string]any {
	t.Helper()
	got := map[string]map[string]any{}
	p.waitLog(t, strings.Join(slices.Sorted(maps.Keys(want)), " and "), func(m map[string]any) bool {
		for name, match := range want {
			if got[name] == nil && match(m) {
				got[name] = m
			}
		}
		return len(got) == len(want)
	})
	return got
}

func logString(t *testing.T, m map[string]any, key string) string {
	t.Helper()
	s, ok := m[key].(string)
	if !ok {
		t.Fatalf("log line %v has no string %q", m, key)
	}
	return s
}

// startBrowser starts a headless Chromium with a fresh profile and returns
// the context of its first tab. The flags keep it off the network but for
// the pages it is sent to: this machine's network refuses everything else,
// and Chromium's background fetches would only add noise and delay. The
// test's cleanup closes the browser and waits until the process and every
// goroutine chromedp started for it have ended.
func startBrowser(t *testing.T, exe string) context.Context {
	t.Helper()
	profile := t.TempDir() // removed after the browser has stopped
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(profile),
	)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		if err := chromedp.Cancel(ctx); err != nil {
			t.Logf("closing chromium: %v", err)
		}
		cancel()
		cancelBrowser() // waits for the browser to stop
		cancelAlloc()   // waits for the allocator's goroutines
	})
	attach(t, bctx, cancelBrowser, "start chromium "+exe, dashStartWithin)
	return bctx
}

// newTab opens another tab of browser's, closed by the test's cleanup.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	attach(t, ctx, cancel, "open a tab", dashRowWithin)
	return ctx
}

// attach makes the first Run on a tab's context: it starts the browser or
// opens the tab and binds it to the context of that Run, so that Run must
// not have a timeout of its own (the tab would end with it). A start that
// hangs is cut off by cancel instead.
func attach(t *testing.T, tab context.Context, cancel context.CancelFunc, what string, within time.Duration) {
	t.Helper()
	stuck := time.AfterFunc(within, cancel)
	err := chromedp.Do(tab)
	stuck.Stop()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// dashPage is a dashboard open in a tab.
type dashPage struct {
	tab  context.Context
	name string // for messages: the server's or the client's dashboard
}

// openDashboard loads url in tab; name is the page's in messages.
func openDashboard(t *testing.T, tab context.Context, name, url string) *dashPage {
	t.Helper()
	p := &dashPage{tab: tab, name: name}
	ctx, cancel := context.WithTimeout(tab, dashRowWithin)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: open %s: %v", p.name, strings.Split(url, "#")[0], err)
	}
	return p
}

// rowView is what the page shows of dashMapping's row.
type rowView struct {
	Found       bool   `json:"found"`
	Owner       string `json:"owner"` // data-owner
	State       string `json:"state"` // data-state
	Out         int64  `json:"out"`   // td.bytes-out's data-bytes
	SparkLines  int    `json:"sparkLines"`
	SparkPoints int    `json:"sparkPoints"` // of the first line
	Error       string `json:"error"`       // the page's error banner
}

// rowJS reads rowView from the page.
var rowJS = fmt.Sprintf(`(() => {
	const error = document.getElementById("error").textContent;
	const r = document.querySelector('tr[data-mapping=%q]');
	if (!r) return {found: false, error};
	const out = r.querySelector("td.bytes-out");
	const lines = [...r.querySelectorAll("svg.spark polyline")];
	return {found: true, owner: r.dataset.owner, state: r.dataset.state, error,
		out: out ? Number(out.dataset.bytes) : -1,
		sparkLines: lines.length,
		sparkPoints: lines.length ? lines[0].getAttribute("points").trim().split(/\s+/).filter(Boolean).length : 0};
})()`, dashMapping)

// read reads the row once.
func (p *dashPage) read() (rowView, error) {
	ctx, cancel := context.WithTimeout(p.tab, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[rowView](rowJS))
}

// row reads the row, which must be there.
func (p *dashPage) row(t *testing.T) rowView {
	t.Helper()
	r, err := p.read()
	if err != nil || !r.Found {
		t.Fatalf("%s: read row %q: %+v, %v", p.name, dashMapping, r, err)
	}
	return r
}

// waitRow polls the page until the row is there and ok holds.
func (p *dashPage) waitRow(t *testing.T, what string, ok func(rowView) bool) rowView {
	t.Helper()
	deadline := time.Now().Add(dashRowWithin)
	tick := time.NewTicker(dashPoll)
	defer tick.Stop()
	for {
		r, err := p.read()
		if err == nil && r.Found && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no row %q %s within %s; last read %+v, %v", p.name, dashMapping, what, dashRowWithin, r, err)
		}
		<-tick.C
	}
}

// risingBytesOut polls the row while d runs and returns the readings of
// its bytes-out that it saw change, from the first above zero until one
// at least dashMinRise higher. Each must be higher than the one before,
// and the last must be read while the visitor is still downloading: the
// page follows a transfer as it happens, not only at its end.
func (p *dashPage) risingBytesOut(t *testing.T, d *download, size int64) []int64 {
	t.Helper()
	deadline := time.Now().Add(dashRowWithin)
	tick := time.NewTicker(dashPoll)
	defer tick.Stop()
	var seen []int64
	for {
		out := p.row(t).Out
		running := !d.finished() && d.pr.count.Load() < size // read after the page: out was shown during the download
		var prev int64
		if len(seen) > 0 {
			prev = seen[len(seen)-1]
		}
		switch {
		case out == prev: // no new reading yet
		case out < prev:
			t.Fatalf("%s: bytes-out went down: %s, then %d", p.name, mibs(seen), out)
		case !running:
			t.Fatalf("%s: the download ended before bytes-out rose by %d MiB (readings %s, then %d)", p.name, dashMinRise>>20, mibs(seen), out)
		default:
			if seen = append(seen, out); out-seen[0] >= dashMinRise {
				return seen
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: bytes-out did not rise by %d MiB within %s: %s", p.name, dashMinRise>>20, dashRowWithin, mibs(seen))
		}
		<-tick.C
	}
}

func (d *download) finished() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func mibs(ns []int64) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return strings.Join(s, " < ")
}

// screenshot saves a PNG of the whole page in the test's artifact
// directory (kept with go test -artifacts) and logs where, with what it
// shows.
func (p *dashPage) screenshot(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.tab, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	path := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(path, png, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s screenshot: %s (%d bytes): %s", p.name, path, len(png), p.describe(t))
}

// pageText is the page's text, as describe reads it.
type pageText struct {
	Title   string `json:"title"`
	Summary string `json:"summary"`
	Error   string `json:"error"`
	Rows    []struct {
		Owner   string `json:"owner"`
		Mapping string `json:"mapping"`
		State   string `json:"state"`
		Colour  string `json:"colour"`
		Active  string `json:"active"`
		In      string `json:"in"`
		Out     string `json:"out"`
		Rate    string `json:"rate"`
	} `json:"rows"`
}

const pageTextJS = `(() => {
	const text = (e) => e ? e.textContent.trim() : "";
	return {
		title: text(document.querySelector("h1")),
		summary: text(document.getElementById("summary")),
		error: text(document.getElementById("error")),
		rows: [...document.querySelectorAll("tr[data-mapping]")].map(r => {
			const badge = r.querySelector(".state");
			return {owner: r.dataset.owner, mapping: r.dataset.mapping, state: text(badge),
				colour: badge ? getComputedStyle(badge).backgroundColor : "",
				active: text(r.querySelector("td.active")), in: text(r.querySelector("td.bytes-in")),
				out: text(r.querySelector("td.bytes-out")), rate: text(r.cells[8])};
		}),
	};
})()`

// describe says in a line what the page shows, from its text.
func (p *dashPage) describe(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.tab, 10*time.Second)
	defer cancel()
	doc, err := chromedp.Run(ctx, chromedp.Evaluate[pageText](pageTextJS))
	if err != nil {
		t.Fatalf("%s: read the page's text: %v", p.name, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%q, %q, %d row(s)", doc.Title, doc.Summary, len(doc.Rows))
	for _, r := range doc.Rows {
		name := r.Mapping
		if r.Owner != "" {
			name = r.Owner + "/" + r.Mapping
		}
		fmt.Fprintf(&b, "; %s: state %q on %s (%s), active %s, out %s, in %s, rate %s",
			name, r.State, r.Colour, colourName(r.Colour), r.Active, r.Out, r.In, r.Rate)
	}
	if doc.Error != "" {
		fmt.Fprintf(&b, "; error banner %q", doc.Error)
	}
	return b.String()
}

// colourName names the state colours of dashboard.html's stylesheet.
func colourName(rgb string) string {
	switch rgb {
	case "rgb(26, 127, 55)":
		return "green"
	case "rgb(179, 89, 0)":
		return "orange"
	case "rgb(198, 40, 40)":
		return "red"
	case "rgb(91, 110, 225)":
		return "blue"
	}
	return "unnamed colour"
}
