package event

// HTTPResponse is how a request recorded by an http.request event ended:
// its status, the bytes each way and what was masked. It is recorded
// after the response, like db.result after db.query.
const HTTPResponse Type = "http.response"

// HTTPRequestData is the data of an http.request event: one request, recorded
// with the decision on it before it reaches the target. A refused request
// has its Status (400, 403, 503) here and no http.response.
type HTTPRequestData struct {
	Method string
	// Host is the Host header the client sent.
	Host string
	// Path is the canonical path (see docs/http.md); for a request refused
	// as ambiguous, the path as sent, cut to 256 bytes.
	Path string
	// Query is the query string with every value replaced by "*", so
	// that tokens and personal data in URLs are not recorded.
	Query string
	// Proto is the client's protocol version: HTTP/1.1 or HTTP/2.0.
	Proto string
	// Upgrade is the protocol the request asks to switch to (websocket).
	Upgrade string
	// Status is the status Warden answered a refused request with.
	Status int
	// ReviewID names the review that decided the request, if any.
	ReviewID string
}

// Data implements Payload.
func (r HTTPRequestData) Data() map[string]any {
	d := map[string]any{"method": r.Method, "path": r.Path}
	setString(d, "host", r.Host)
	setString(d, "query", r.Query)
	setString(d, "proto", r.Proto)
	setString(d, "upgrade", r.Upgrade)
	setString(d, "review_id", r.ReviewID)
	if r.Status != 0 {
		d["status"] = r.Status
	}
	return d
}

// HTTPResponseData is the data of an http.response event.
type HTTPResponseData struct {
	// RequestID is the id of the request's http.request event.
	RequestID  string
	Status     int
	DurationMS float64
	// BytesIn counts the request body bytes read from the client, BytesOut
	// the response body bytes sent to it (after masking).
	BytesIn, BytesOut int64
	// Upgraded is set when the connection switched protocols (101); the
	// bytes relayed after the switch are not counted.
	Upgraded bool
	// MaskedKeys are the JSON keys masked by name; Detected says whether
	// a content detector masked anything.
	MaskedKeys []string
	Detected   bool
	// Error says why the response did not reach the client whole.
	Error string
}

// Data implements Payload.
func (r HTTPResponseData) Data() map[string]any {
	d := map[string]any{"request_id": r.RequestID, "status": r.Status, "duration_ms": r.DurationMS,
		"bytes_in": r.BytesIn, "bytes_out": r.BytesOut}
	if r.Upgraded {
		d["upgraded"] = true
	}
	if len(r.MaskedKeys) > 0 {
		d["masked_keys"] = r.MaskedKeys
	}
	if r.Detected {
		d["detected"] = true
	}
	setString(d, "error", r.Error)
	return d
}
