package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// FleetDoc is the fleet's section of a server's status, read from etcd at
// each request: every live server, and which server holds each client
// name and each public port.
type FleetDoc struct {
	Servers []FleetServerRow `json:"servers"`
	Clients []FleetNameRow   `json:"clients"`
	Ports   []FleetPortRow   `json:"ports"`
	// Error is why etcd could not be read; the rest is then empty.
	Error string `json:"error,omitempty"`
}

// FleetServerRow is a live server of the fleet.
type FleetServerRow struct {
	Name       string    `json:"name"`
	PublicHost string    `json:"public_host"`
	BindAddr   string    `json:"bind_addr"`
	Version    string    `json:"version"`
	Since      time.Time `json:"since"`
}

// FleetNameRow is a client name and the server that holds it.
type FleetNameRow struct {
	Name      string    `json:"name"`
	Server    string    `json:"server"`
	SessionID string    `json:"session_id"`
	Since     time.Time `json:"since"`
}

// FleetPortRow is a public port and the server that holds it.
type FleetPortRow struct {
	Protocol string    `json:"protocol"`
	Port     int       `json:"port"`
	Server   string    `json:"server"`
	Client   string    `json:"client"`
	Mapping  string    `json:"mapping"`
	Since    time.Time `json:"since"`
}

// NewFleetDoc is st as a document.
func NewFleetDoc(st server.FleetStatus) *FleetDoc {
	doc := &FleetDoc{Servers: []FleetServerRow{}, Clients: []FleetNameRow{}, Ports: []FleetPortRow{}}
	for _, s := range st.Servers {
		doc.Servers = append(doc.Servers, FleetServerRow{Name: s.Name, PublicHost: s.PublicHost, BindAddr: s.BindAddr, Version: s.Version, Since: s.Since})
	}
	for _, c := range st.Clients {
		doc.Clients = append(doc.Clients, FleetNameRow{Name: c.Name, Server: c.Server, SessionID: c.Session, Since: c.Since})
	}
	for _, p := range st.Ports {
		doc.Ports = append(doc.Ports, FleetPortRow{Protocol: p.Protocol, Port: p.Port, Server: p.Server, Client: p.Client, Mapping: p.Mapping, Since: p.Since})
	}
	return doc
}

// FleetMetrics are the metrics of a server's place in its fleet: whether
// etcd answers, and what each operation on it did and waited. It is the
// fleet's Observer (package fleet's Observer, satisfied by its methods).
type FleetMetrics struct {
	up   prometheus.Gauge
	ops  *prometheus.CounterVec
	wait *prometheus.HistogramVec
}

// NewFleetMetrics registers the fleet's metrics in reg.
func NewFleetMetrics(reg *prometheus.Registry) *FleetMetrics {
	m := &FleetMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gotunnel_registry_up",
			Help: "1 while the fleet's registry (etcd) answers this server's keepalives, else 0.",
		}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotunnel_registry_operations_total",
			Help: "Operations on the fleet's registry, by op (claim_name, claim_port, release, reassert) and result (ok; held: another server holds it; failed: etcd did not answer in time).",
		}, []string{"op", "result"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gotunnel_registry_wait_seconds",
			Help:    "How long each operation on the fleet's registry waited for etcd, by op.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15),
		}, []string{"op"}),
	}
	reg.MustRegister(m.up, m.ops, m.wait)
	return m
}

// Operation is told of each operation on the registry.
func (m *FleetMetrics) Operation(op, result string, d time.Duration) {
	m.ops.WithLabelValues(op, result).Inc()
	m.wait.WithLabelValues(op).Observe(d.Seconds())
}

// Reachable is told when etcd starts or stops answering.
func (m *FleetMetrics) Reachable(up bool) {
	if up {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}
