package admin

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// The metrics of docs/operations.md. Gauges and the per-mapping counters
// are read from the engine's Status at each scrape, so that a long
// download shows in every scrape while it runs; the event counters and
// histograms are fed by the engine's Observer as things happen.

// openBuckets and rttBuckets span 0.5 ms to about 8 s.
var (
	openBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15)
	rttBuckets  = prometheus.ExponentialBuckets(0.0005, 2, 15)
)

// events are the metrics both sides feed from their Observer.
type events struct {
	logins   *prometheus.CounterVec
	refusals *prometheus.CounterVec
	open     prometheus.Histogram
	rtt      prometheus.Histogram
}

func newEvents(reg *prometheus.Registry) *events {
	e := &events{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotunnel_logins_total",
			Help: "Logins answered, by result (ok or refused) and code (0 for ok).",
		}, []string{"result", "code"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotunnel_refusals_total",
			Help: "Refusals other than logins' (registrations, visitors at an offline mapping, visitors the client refused), by code.",
		}, []string{"code"}),
		open: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gotunnel_stream_open_seconds",
			Help:    "Time to open a visitor's data stream: on the server from accept to the client's ok, on the client from the stream's arrival to its ok.",
			Buckets: openBuckets,
		}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gotunnel_heartbeat_rtt_seconds",
			Help:    "Heartbeat round trips, ping queued to pong read, as the client measures them (on the server: as clients report them).",
			Buckets: rttBuckets,
		}),
	}
	reg.MustRegister(e.logins, e.refusals, e.open, e.rtt)
	return e
}

func (e *events) Login(code control.Code) {
	result := "ok"
	if code != 0 {
		result = "refused"
	}
	e.logins.WithLabelValues(result, strconv.Itoa(int(code))).Inc()
}

func (e *events) Refused(code control.Code) {
	e.refusals.WithLabelValues(strconv.Itoa(int(code))).Inc()
}
func (e *events) StreamOpened(d time.Duration) { e.open.Observe(d.Seconds()) }
func (e *events) HeartbeatRTT(d time.Duration) { e.rtt.Observe(d.Seconds()) }

// registry is a registry with the process and Go collectors and
// gotunnel_build_info.
func registry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "gotunnel_build_info",
		Help:        "Always 1; the version label is the build's.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	reg.MustRegister(info)
	return reg
}

// Descriptions of the metrics read from a Status.
var (
	sessionsDesc = prometheus.NewDesc("gotunnel_sessions",
		"Logged-in sessions: clients on the server; on the client its sessions with its servers (0 or 1 with one server).", nil, nil)
	serverUpDesc = prometheus.NewDesc("gotunnel_server_session",
		"Client: 1 while logged in to this server, else 0; one series per server of server_addrs.", []string{"server"}, nil)
	mappingsDesc = prometheus.NewDesc("gotunnel_mappings",
		"Mappings by state (up, offline, draining, refused, pending).", []string{"state"}, nil)
)

// mappingStates are the states every gotunnel_mappings series is given,
// so that a state with no mapping reads 0 rather than vanishing.
var mappingStates = []string{"up", "offline", "draining", "refused", "pending"}

func perMapping(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// ServerMetrics are the server's metrics. It is the server's Observer.
type ServerMetrics struct {
	*events
	Registry *prometheus.Registry
	status   func() server.Status

	active, visitors, bytes, resets, denied *prometheus.Desc
	limit, clientLimit, limitWait, dropped  *prometheus.Desc
}

var _ server.Observer = (*ServerMetrics)(nil)

// The help of the limit metrics, the same on both sides.
const (
	limitHelp     = "Each mapping's own bandwidth_limit, bytes a second in each direction; 0: none."
	limitWaitHelp = "Time the bytes from visitors (in) and to visitors (out) were held back by a bandwidth limit, summed over the mapping's connections; it grows only while a limit bites."
	droppedHelp   = "A UDP mapping's datagrams dropped: on the server too large, a flow's queue full, or a new flow past max_udp_flows_per_mapping or refused at the door; on the client refused by the local service's socket."
)

// NewServerMetrics returns the server's metrics, reading status at each
// scrape; set it as server.Options.Observer before status can be read.
func NewServerMetrics(version string, status func() server.Status) *ServerMetrics {
	m := &ServerMetrics{Registry: registry(version), status: status,
		active:   perMapping("gotunnel_visitor_connections", "Live visitor connections.", "client", "mapping"),
		visitors: perMapping("gotunnel_visitor_connections_total", "Visitor connections served.", "client", "mapping"),
		bytes:    perMapping("gotunnel_visitor_bytes_total", "Bytes from visitors (in) and to visitors (out), counted as they flow.", "client", "mapping", "direction"),
		resets:   perMapping("gotunnel_visitor_resets_total", "Visitors reset at the door: mapping offline, or max_conns_per_mapping reached.", "client", "mapping"),
		denied:   perMapping("gotunnel_visitor_denied_total", "Visitors reset at the door by allow_ips or deny_ips, the server's or the mapping's.", "client", "mapping"),
		limit:    perMapping("gotunnel_mapping_bandwidth_limit_bytes_per_second", limitHelp, "client", "mapping"),
		clientLimit: perMapping("gotunnel_client_bandwidth_limit_bytes_per_second",
			"The max_bandwidth_per_client in force for a client's new visitor connections, bytes a second in each direction over all its mappings; 0: none.", "client"),
		limitWait: perMapping("gotunnel_visitor_limit_wait_seconds_total", limitWaitHelp, "client", "mapping", "direction"),
		dropped:   perMapping("gotunnel_udp_datagrams_dropped_total", droppedHelp, "client", "mapping"),
	}
	m.events = newEvents(m.Registry)
	m.Registry.MustRegister(m)
	return m
}

// Describe implements prometheus.Collector.
func (m *ServerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionsDesc, mappingsDesc, m.active, m.visitors, m.bytes, m.resets, m.denied,
		m.limit, m.clientLimit, m.limitWait, m.dropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *ServerMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.status()
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(len(st.Clients)))
	states := map[string]int{}
	for _, c := range st.Clients {
		ch <- prometheus.MustNewConstMetric(m.clientLimit, prometheus.GaugeValue, float64(c.BandwidthLimit), c.Name)
		for _, mp := range c.Mappings {
			states[mp.State]++
			if mp.State == server.StateRefused {
				continue
			}
			ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, float64(mp.Active), c.Name, mp.Name)
			ch <- prometheus.MustNewConstMetric(m.visitors, prometheus.CounterValue, float64(mp.Visitors), c.Name, mp.Name)
			ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(mp.BytesIn), c.Name, mp.Name, "in")
			ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(mp.BytesOut), c.Name, mp.Name, "out")
			ch <- prometheus.MustNewConstMetric(m.resets, prometheus.CounterValue, float64(mp.Resets), c.Name, mp.Name)
			ch <- prometheus.MustNewConstMetric(m.denied, prometheus.CounterValue, float64(mp.Denied), c.Name, mp.Name)
			ch <- prometheus.MustNewConstMetric(m.limit, prometheus.GaugeValue, float64(mp.BandwidthLimit), c.Name, mp.Name)
			ch <- prometheus.MustNewConstMetric(m.limitWait, prometheus.CounterValue, mp.LimitWaitIn.Seconds(), c.Name, mp.Name, "in")
			ch <- prometheus.MustNewConstMetric(m.limitWait, prometheus.CounterValue, mp.LimitWaitOut.Seconds(), c.Name, mp.Name, "out")
			if mp.Protocol == "udp" {
				ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(mp.DatagramsDropped), c.Name, mp.Name)
			}
		}
	}
	collectStates(ch, states)
}

func collectStates(ch chan<- prometheus.Metric, states map[string]int) {
	for _, s := range mappingStates {
		ch <- prometheus.MustNewConstMetric(mappingsDesc, prometheus.GaugeValue, float64(states[s]), s)
	}
}

// ClientMetrics are the client's metrics. It is the client's Observer.
type ClientMetrics struct {
	*events
	Registry   *prometheus.Registry
	status     func() client.Status
	reconnects prometheus.Counter

	active, visitors, bytes, limit, limitWait, dropped *prometheus.Desc
}

var _ client.Observer = (*ClientMetrics)(nil)

// NewClientMetrics returns the client's metrics, reading status at each
// scrape; set it as client.Options.Observer before status can be read.
func NewClientMetrics(version string, status func() client.Status) *ClientMetrics {
	m := &ClientMetrics{Registry: registry(version), status: status,
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotunnel_reconnects_total",
			Help: "Connection attempts to the server after the first.",
		}),
		active:    perMapping("gotunnel_visitor_connections", "Live visitor connections.", "mapping"),
		visitors:  perMapping("gotunnel_visitor_connections_total", "Visitor connections served.", "mapping"),
		bytes:     perMapping("gotunnel_visitor_bytes_total", "Bytes from visitors (in) and to visitors (out), counted as they flow.", "mapping", "direction"),
		limit:     perMapping("gotunnel_mapping_bandwidth_limit_bytes_per_second", limitHelp, "mapping"),
		limitWait: perMapping("gotunnel_visitor_limit_wait_seconds_total", limitWaitHelp, "mapping", "direction"),
		dropped:   perMapping("gotunnel_udp_datagrams_dropped_total", droppedHelp, "mapping"),
	}
	m.events = newEvents(m.Registry)
	m.Registry.MustRegister(m.reconnects, m)
	return m
}

// Reconnect implements client.Observer.
func (m *ClientMetrics) Reconnect() { m.reconnects.Inc() }

// Describe implements prometheus.Collector.
func (m *ClientMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionsDesc, serverUpDesc, mappingsDesc, m.active, m.visitors, m.bytes, m.limit, m.limitWait, m.dropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *ClientMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.status()
	sessions := 0
	for _, ss := range st.Servers {
		up := 0.0
		if ss.Session != nil {
			up = 1
			sessions++
		}
		ch <- prometheus.MustNewConstMetric(serverUpDesc, prometheus.GaugeValue, up, ss.Addr)
	}
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(sessions))
	states := map[string]int{}
	for _, mp := range st.Mappings {
		states[mp.State]++
		ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, float64(mp.Active), mp.Name)
		ch <- prometheus.MustNewConstMetric(m.visitors, prometheus.CounterValue, float64(mp.Visitors), mp.Name)
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(mp.BytesIn), mp.Name, "in")
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(mp.BytesOut), mp.Name, "out")
		ch <- prometheus.MustNewConstMetric(m.limit, prometheus.GaugeValue, float64(mp.BandwidthLimit), mp.Name)
		ch <- prometheus.MustNewConstMetric(m.limitWait, prometheus.CounterValue, mp.LimitWaitIn.Seconds(), mp.Name, "in")
		ch <- prometheus.MustNewConstMetric(m.limitWait, prometheus.CounterValue, mp.LimitWaitOut.Seconds(), mp.Name, "out")
		if mp.Protocol == "udp" {
			ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(mp.DatagramsDropped), mp.Name)
		}
	}
	collectStates(ch, states)
}
