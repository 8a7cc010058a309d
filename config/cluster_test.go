package config

import (
	"testing"
	"time"
)

const clusterHead = "bind_addr = \"0.0.0.0:7000\"\ntoken = \"t\"\nheartbeat_timeout = \"12s\"\n"

// TestClusterDefaults: a [cluster] table with only what it needs gets
// the prefix, the registry timeout and a lease of heartbeat_timeout; the
// environment's password wins over the file's.
func TestClusterDefaults(t *testing.T) {
	s, err := ParseServer("server.toml", []byte(clusterHead+`
[cluster]
etcd_endpoints = ["https://10.0.0.5:2379", "10.0.0.6:2379"]
name = "tunnel-a"
public_host = "a.example.com"
username = "gotunnel"
password = "in-the-file"
`), env(map[string]string{EtcdPasswordEnv: "from-env"}))
	if err != nil {
		t.Fatal(err)
	}
	cl := s.Cluster
	if cl == nil || cl.Prefix != DefaultPrefix || cl.RegistryTimeout != DefaultRegistryTimeout ||
		cl.LeaseTTL != Duration(12*time.Second) || cl.Password != "from-env" || len(cl.EtcdEndpoints) != 2 {
		t.Errorf("cluster = %+v; want the defaults, a lease of heartbeat_timeout and the environment's password", cl)
	}
	if none, err := ParseServer("server.toml", []byte(clusterHead), nil); err != nil || none.Cluster != nil {
		t.Errorf("a file without [cluster]: %+v, %v; want no cluster", none.Cluster, err)
	}
}

// TestClusterErrors: each bad [cluster] key is named with its line.
func TestClusterErrors(t *testing.T) {
	_, err := ParseServer("server.toml", []byte(clusterHead+`
[cluster]
etcd_endpoints = ["ftp://10.0.0.5:2379", "10.0.0.6"]
name = "two words"
prefix = "gotunnel"
lease_ttl = "1500ms"
registry_timeout = "10s"
cert_file = "c.pem"
username = "u"
`), nil)
	checkErrors(t, "ParseServer", err, "server.toml", []want{
		{6, "cluster.etcd_endpoints[0]", "want http:// or https://"},
		{6, "cluster.etcd_endpoints[1]", "want a host and a port"},
		{7, "cluster.name", "two words"},
		{5, "cluster.public_host", "missing (required)"},
		{8, "cluster.prefix", `starting with "/"`},
		{9, "cluster.lease_ttl", "at least 2s"},
		{10, "cluster.registry_timeout", "less than login_timeout"},
		{11, "cluster.cert_file", "both cert_file and key_file"},
		{12, "cluster.username", "both username and password"},
	})
	_, err = ParseServer("server.toml", []byte(clusterHead+`
[cluster]
etcd_endpoints = ["http://10.0.0.5:2379"]
public_host = "a.example.com"
ca_file = "ca.pem"
lease_ttl = "2500ms"
`), nil)
	checkErrors(t, "ParseServer", err, "server.toml", []want{
		{6, "cluster.etcd_endpoints[0]", "not https://"},
		{9, "cluster.lease_ttl", "whole seconds"},
	})
}
