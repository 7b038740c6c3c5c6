package event

import "time"

// RDP is the data of an rdp.session event. What the proxy sees of an RDP
// session is its first exchange and its byte counts: the rest is TLS it
// does not open, so nothing of the screen, keyboard or clipboard is
// recorded (Recorded is always false, and says so in every event).
type RDP struct {
	// Phase is "start" or "end".
	Phase string
	// Cookie is the mstshash cookie the client sent, usually the user
	// name typed into it. It is the client's claim and nothing checks
	// it: the verified person is the event's identity.
	Cookie string
	// RoutingToken is a load balancer's routing token, also the
	// client's claim.
	RoutingToken string
	// Requested are the security protocols the client offered, Selected
	// the one the server chose ("" when it did not answer).
	Requested []string
	Selected  string
	// BytesFromClient and BytesFromServer count the session's bytes each
	// way, the first exchange included (end only).
	BytesFromClient, BytesFromServer int64
	// Duration is how long the session lasted (end only).
	Duration time.Duration
	// EndReason says why it ended (end only): "client closed", "server
	// closed", "max_duration", ...
	EndReason string
}

// Data implements Payload.
func (r RDP) Data() map[string]any {
	d := map[string]any{"phase": r.Phase, "recorded": false}
	setString(d, "client_asserted_cookie", r.Cookie)
	setString(d, "client_asserted_routing_token", r.RoutingToken)
	if len(r.Requested) > 0 {
		d["requested_protocols"] = r.Requested
	}
	setString(d, "selected_protocol", r.Selected)
	if r.Phase == "end" {
		d["bytes_from_client"] = r.BytesFromClient
		d["bytes_from_server"] = r.BytesFromServer
		d["duration_ms"] = float64(r.Duration.Microseconds()) / 1000
		setString(d, "end_reason", r.EndReason)
	}
	return d
}
