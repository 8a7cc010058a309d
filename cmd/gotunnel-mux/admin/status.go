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
	// BadProxyHeaders: connections from trusted proxies to bind_addr reset
	// for a missing or bad PROXY protocol header.
	BadProxyHeaders int64 `json:"bad_proxy_headers,omitempty"`
	// Fleet, on a server of a fleet ([cluster]): the whole fleet, from etcd.
	Fleet *FleetDoc `json:"fleet,omitempty"`
}

// ClientRow is one logged-in client, in a server's status.
type ClientRow struct {
	Name           string    `json:"name"`
	Remote         string    `json:"remote"`
	SessionID      string    `json:"session_id"`
	Since          time.Time `json:"since"`
	Transport      string    `json:"transport"`
	HeartbeatRTTMs float64   `json:"heartbeat_rtt_ms"` // 0: not reported yet
	// the policy in force for the client: max_bandwidth_per_client
	// (bytes a second; omitted: none), a [[clients]] token of its own,
	// the mappings it may register
	BandwidthLimit int64        `json:"bandwidth_limit,omitempty"`
	OwnToken       bool         `json:"own_token,omitempty"`
	MaxMappings    int          `json:"max_mappings"`
	Mappings       []MappingRow `json:"mappings"`
}

// MappingRow is one mapping. On the server RemotePort is the bound port
// (for a refused mapping, the one asked for); on the client it is the one
// configured (0: any) and BoundPort the one bound.
type MappingRow struct {
	Name string `json:"name"`
	// Protocol is "udp" for a UDP mapping; omitted for TCP.
	Protocol   string `json:"protocol,omitempty"`
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
	// BadProxyHeaders, on the server: connections from trusted proxies
	// reset for a missing or bad PROXY protocol header.
	BadProxyHeaders int64 `json:"bad_proxy_headers,omitempty"`
	// BandwidthLimit is the mapping's own limit, bytes a second; omitted: none.
	BandwidthLimit int64 `json:"bandwidth_limit,omitempty"`
	BytesIn        int64 `json:"bytes_in"`
	BytesOut       int64 `json:"bytes_out"`
	// DatagramsDropped (UDP) are the datagrams the mapping dropped: on the
	// server too large, a flow's queue full or over max_udp_flows; on the
	// client refused by the service's socket.
	DatagramsDropped int64 `json:"datagrams_dropped,omitempty"`
	// LimitWaitInMs and LimitWaitOutMs are the time a bandwidth limit
	// held back the bytes from and to its visitors, summed over its
	// connections; omitted: none.
	LimitWaitInMs  float64 `json:"limit_wait_in_ms,omitempty"`
	LimitWaitOutMs float64 `json:"limit_wait_out_ms,omitempty"`
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
	// Servers are the client's servers and its session with each (more
	// than one with server_addrs); each mapping's state on each.
	Servers []ServerRow `json:"servers"`
}

// ServerRow is one of a client's servers.
type ServerRow struct {
	Server     string         `json:"server"`
	Session    *SessionRow    `json:"session"` // null while not logged in there
	Reconnects int64          `json:"reconnects"`
	LastError  string         `json:"last_error,omitempty"`
	Mappings   []MappingOnRow `json:"mappings"`
}

// MappingOnRow is a mapping's state on one server.
type MappingOnRow struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	BoundPort int    `json:"bound_port,omitempty"`
	Code      int    `json:"code,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// SessionRow is a client's live session.
type SessionRow struct {
	Server         string    `json:"server"`
	ID             string    `json:"id"`
	Since          time.Time `json:"since"`
	Transport      string    `json:"transport"`
	HeartbeatRTTMs float64   `json:"heartbeat_rtt_ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// NewServerDoc is st as a document.
func NewServerDoc(version string, st server.Status) ServerDoc {
	doc := ServerDoc{Role: "server", Version: version, Started: st.Started, Listening: st.Listening, Clients: []ClientRow{},
		BadProxyHeaders: st.BadProxyHeaders}
	if doc.Listening == nil {
		doc.Listening = []string{}
	}
	for _, c := range st.Clients {
		row := ClientRow{Name: c.Name, Remote: c.Remote, SessionID: c.SessionID, Since: c.Since, Transport: c.Transport,
			HeartbeatRTTMs: ms(c.HeartbeatRTT), BandwidthLimit: c.BandwidthLimit, OwnToken: c.OwnToken, MaxMappings: c.MaxMappings,
			Mappings: []MappingRow{}}
		for _, m := range c.Mappings {
			row.Mappings = append(row.Mappings, MappingRow{Name: m.Name, LocalAddr: m.LocalAddr, RemotePort: m.RemotePort,
				State: m.State, Code: int(m.Code), Reason: m.Reason, Active: int64(m.Active), Visitors: m.Visitors,
				Resets: m.Resets, Denied: m.Denied, BadProxyHeaders: m.BadProxyHeaders, BandwidthLimit: m.BandwidthLimit,
				BytesIn: m.BytesIn, BytesOut: m.BytesOut, LimitWaitInMs: ms(m.LimitWaitIn), LimitWaitOutMs: ms(m.LimitWaitOut),
				Protocol: udpOnly(m.Protocol), DatagramsDropped: m.DatagramsDropped})
		}
		doc.Clients = append(doc.Clients, row)
	}
	return doc
}

// NewClientDoc is st as a document.
func NewClientDoc(version string, st client.Status) ClientDoc {
	doc := ClientDoc{Role: "client", Version: version, Started: st.Started, Server: st.Server, Reconnects: st.Reconnects,
		LastError: st.LastError, Mappings: []MappingRow{}}
	doc.Session = sessionRow(st.Session)
	for _, m := range st.Mappings {
		doc.Mappings = append(doc.Mappings, MappingRow{Name: m.Name, LocalAddr: m.LocalAddr, RemotePort: m.RemotePort,
			BoundPort: m.BoundPort, State: m.State, Code: int(m.Code), Reason: m.Reason, Active: m.Active,
			Visitors: m.Visitors, BandwidthLimit: m.BandwidthLimit, BytesIn: m.BytesIn, BytesOut: m.BytesOut,
			LimitWaitInMs: ms(m.LimitWaitIn), LimitWaitOutMs: ms(m.LimitWaitOut),
			Protocol: udpOnly(m.Protocol), DatagramsDropped: m.DatagramsDropped})
	}
	doc.Servers = []ServerRow{}
	for _, ss := range st.Servers {
		row := ServerRow{Server: ss.Addr, Session: sessionRow(ss.Session), Reconnects: ss.Reconnects, LastError: ss.LastError,
			Mappings: []MappingOnRow{}}
		for _, m := range ss.Mappings {
			row.Mappings = append(row.Mappings, MappingOnRow{Name: m.Name, State: m.State, BoundPort: m.BoundPort, Code: int(m.Code), Reason: m.Reason})
		}
		doc.Servers = append(doc.Servers, row)
	}
	return doc
}

func sessionRow(s *client.SessionStatus) *SessionRow {
	if s == nil {
		return nil
	}
	return &SessionRow{Server: s.Server, ID: s.ID, Since: s.Since, Transport: s.Transport, HeartbeatRTTMs: ms(s.HeartbeatRTT)}
}

// udpOnly is a mapping's protocol as the document shows it: "udp", or
// nothing for TCP.
func udpOnly(p string) string {
	if p == "udp" {
		return p
	}
	return ""
}
