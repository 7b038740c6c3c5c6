// Package metrics holds the agent's Prometheus metrics and serves them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's counters and gauges, on a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	redirected   *prometheus.CounterVec
	refused      *prometheus.CounterVec
	denied       *prometheus.CounterVec
	unattributed prometheus.Counter
	// SessionsActive is the number of bound login sessions.
	SessionsActive prometheus.Gauge
	// PolicyReloadErrors counts policy files rejected on reload.
	PolicyReloadErrors prometheus.Counter

	// Pprof serves Go's profiling endpoints under /debug/pprof/ beside
	// /metrics (the agent config's pprof: true); set it before Serve.
	// Off by default: any local user of a bastion can reach a loopback
	// listener, and goroutine dumps, CPU profiles and traces expose the
	// agent's memory and timing.
	Pprof bool
}

// New registers the agent's metrics. kernel, if not nil, is read at scrape
// time for the BPF programs' own counters.
func New(kernel func() (map[string]uint64, error)) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		redirected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_proxy_connections_total", Help: "Connections redirected to the proxy and relayed to a target.",
		}, []string{"target"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_proxy_refused_total", Help: "Connections redirected to the proxy and refused there.",
		}, []string{"target", "reason"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warden_kernel_denied_total", Help: "connect() calls the kernel failed with EPERM.",
		}, []string{"target", "reason"}),
		unattributed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warden_proxy_unattributed_total", Help: "Connections to the proxy with no kernel record, closed unserved.",
		}),
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "warden_sessions_active", Help: "Login sessions bound to a verified identity.",
		}),
		PolicyReloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warden_policy_reload_errors_total", Help: "Policy files rejected on reload; the previous policy stayed in force.",
		}),
	}
	reg.MustRegister(m.redirected, m.refused, m.denied, m.unattributed, m.SessionsActive, m.PolicyReloadErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if kernel != nil {
		reg.MustRegister(&kernelCollector{read: kernel, desc: prometheus.NewDesc(
			"warden_bpf_events_total", "Counters kept by the BPF programs.", []string{"counter"}, nil)})
	}
	return m
}

// Accepted counts a relayed connection.
func (m *Metrics) Accepted(target string) { m.redirected.WithLabelValues(target).Inc() }

// Refused counts a connection the proxy refused.
func (m *Metrics) Refused(target, reason string) { m.refused.WithLabelValues(target, reason).Inc() }

// Unattributed counts a connection without a kernel record.
func (m *Metrics) Unattributed() { m.unattributed.Inc() }

// Denied counts a connect() the kernel refused.
func (m *Metrics) Denied(target, reason string) { m.denied.WithLabelValues(target, reason).Inc() }

type kernelCollector struct {
	read func() (map[string]uint64, error)
	desc *prometheus.Desc
}

func (k *kernelCollector) Describe(ch chan<- *prometheus.Desc) { ch <- k.desc }

func (k *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := k.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(k.desc, err)
		return
	}
	for name, v := range counters {
		ch <- prometheus.MustNewConstMetric(k.desc, prometheus.CounterValue, float64(v), name)
	}
}

// Handler serves /metrics and, if Pprof is set, /debug/pprof/.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	if m.Pprof {
		// Profiles for diagnosing the proxy's cost in the field, when
		// the operator asks for them.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Serve exposes Handler on ln until ctx is done, then closes it.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}
