package harness

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/wardenhq/warden/pkg/collectorclient"
	"github.com/wardenhq/warden/pkg/event"
)

// AllEvents queries the collector for every event matching q, page by
// page (q.Limit is the page size; 0 means the largest the collector
// allows).
func (e *Env) AllEvents(q collectorclient.Query) []event.Event {
	e.T.Helper()
	if q.Limit == 0 {
		q.Limit = 10000
	}
	var out []event.Event
	for {
		list, err := e.Collector.Events(context.Background(), q)
		if err != nil {
			e.T.Fatal(err)
		}
		for _, raw := range list.Events {
			var ev event.Event
			if err := json.Unmarshal(raw, &ev); err != nil {
				e.T.Fatalf("decode event: %v", err)
			}
			out = append(out, ev)
		}
		if list.NextAfterID == "" {
			return out
		}
		q.AfterID = list.NextAfterID
	}
}

// Metrics scrapes wardend's Prometheus endpoint and returns the text.
func (e *Env) Metrics() string {
	e.T.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: e.NS.DialContext}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+MetricsAddr+"/metrics", nil)
	if err != nil {
		e.T.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		e.T.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.T.Fatalf("scrape metrics: %v", err)
	}
	return string(body)
}
