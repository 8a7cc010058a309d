package admin

import (
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// The documents of GET /api/v1/status (docs/operations.md). Role tells
// which one a body is; `gotunnel-mux status` and the dashboard read both.

// ServerDoc is a server's status.
type ServerDoc struct {
	Role      string      `json:"role"` // "server"
	Version   string      `json:"version"`
	Started   time.Time   `json:"started"`
	Listening []string    `json:"listening"`
	Clients   []ClientRow `json:"clients"`
	Fleet     *FleetDoc   `json:"fleet,omitempty"` // a server of a fleet ([cluster]): the whole fleet, from etcd
}

// ClientRow is one logged-in client, in a server's status.
type ClientRow struct {
	Name           string       `json:"name"`
	Remote         string       `json:"remote"`
	SessionID      string       `json:"session_id"`
	Since          time.Time    `json:"since"`
	Transport      string       `json:"transport"`
	HeartbeatRTTMs float64      `json:"heartbeat_rtt_ms"` // 0: not reported yet
	Mappings       []MappingRow `json:"mappings"`
}

// MappingRow is one mapping. On the server RemotePort is the bound port
// (for a refused mapping, the one asked for); on the client it is the one
// configured (0: any) and BoundPort the one bound.
type MappingRow struct {
	Name       string `json:"name"`
	LocalAddr  string `json:"local_addr"`
	RemotePort int    `json:"remote_port"`
	BoundPort  int    `json:"bound_port,omitempty"`
	State      string `json:"state"`
	Code       int    `json:"code,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Active     int64  `json:"active"`
	Visitors   int64  `json:"visitors"`
	Resets     int64  `json:"resets,omitempty"`
	Denied     int64  `json:"denied,omitempty"` // server: visitors reset by allow_ips or deny_ips
	// BandwidthLimit is the mapping's own limit, bytes a second; omitted: none.
	BandwidthLimit int64 `json:"bandwidth_limit,omitempty"`
	BytesIn        int64 `json:"bytes_in"`
	BytesOut       int64 `json:"bytes_out"`
}

// ClientDoc is a client's status.
type ClientDoc struct {
	Role       string       `json:"role"` // "client"
	Version    string       `json:"version"`
	Started    time.Time    `json:"started"`
	Server     string       `json:"server"`
	Session    *SessionRow  `json:"session"` // null while not logged in
	Reconnects int64        `json:"reconnects"`
	LastError  string       `json:"last_error,omitempty"`
	Mappings   []MappingRow `json:"mappings"`
}

// SessionRow is a client's live session.
type SessionRow struct {
	ID             string    `json:"id"`
	Since          time.Time `json:"since"`
	Transport      string    `json:"transport"`
	HeartbeatRTTMs float64   `json:"heartbeat_rtt_ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// NewServerDoc is st as a document.
func NewServerDoc(version string, st server.Status) ServerDoc {
	doc := ServerDoc{Role: "server", Version: version, Started: st.Started, Listening: st.Listening, Clients: []ClientRow{}}
	if doc.Listening == nil {
		doc.Listening = []string{}
	}
	for _, c := range st.Clients {
		row := ClientRow{Name: c.Name, Remote: c.Remote, SessionID: c.SessionID, Since: c.Since, Transport: c.Transport,
			HeartbeatRTTMs: ms(c.HeartbeatRTT), Mappings: []MappingRow{}}
		for _, m := range c.Mappings {
			row.Mappings = append(row.Mappings, MappingRow{Name: m.Name, LocalAddr: m.LocalAddr, RemotePort: m.RemotePort,
				State: m.State, Code: int(m.Code), Reason: m.Reason, Active: int64(m.Active), Visitors: m.Visitors,
				Resets: m.Resets, Denied: m.Denied, BandwidthLimit: m.BandwidthLimit, BytesIn: m.BytesIn, BytesOut: m.BytesOut})
		}
		doc.Clients = append(doc.Clients, row)
	}
	return doc
}

// NewClientDoc is st as a document.
func NewClientDoc(version string, st client.Status) ClientDoc {
	doc := ClientDoc{Role: "client", Version: version, Started: st.Started, Server: st.Server, Reconnects: st.Reconnects,
		LastError: st.LastError, Mappings: []MappingRow{}}
	if s := st.Session; s != nil {
		doc.Session = &SessionRow{ID: s.ID, Since: s.Since, Transport: s.Transport, HeartbeatRTTMs: ms(s.HeartbeatRTT)}
	}
	for _, m := range st.Mappings {
		doc.Mappings = append(doc.Mappings, MappingRow{Name: m.Name, LocalAddr: m.LocalAddr, RemotePort: m.RemotePort,
			BoundPort: m.BoundPort, State: m.State, Code: int(m.Code), Reason: m.Reason, Active: m.Active,
			Visitors: m.Visitors, BandwidthLimit: m.BandwidthLimit, BytesIn: m.BytesIn, BytesOut: m.BytesOut})
	}
	return doc
}
