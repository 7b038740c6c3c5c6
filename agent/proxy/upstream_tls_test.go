package proxy

import (
	"testing"

	"github.com/wardenhq/warden/pkg/policy"
)

// A policy that somehow lacks a name to check must not make verify-full
// verify nothing.
func TestUpstreamTLSConfigNeedsName(t *testing.T) {
	target := policy.Target{Name: "db", Protocol: policy.ProtocolPostgres, Address: "10.0.0.0/24:5432",
		Credentials: &policy.Credentials{TLS: policy.UpstreamTLS{Mode: policy.TLSVerifyFull}}}
	if _, err := UpstreamTLSConfig(target); err == nil {
		t.Fatal("verify-full without a server name accepted")
	}
}
