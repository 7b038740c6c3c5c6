package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/agent/natsconn"
	"github.com/wardenhq/warden/agent/publish"
	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/devidp"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/natsauth"
	"github.com/wardenhq/warden/tests/harness"
)

// freePorts returns n TCP ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// A three-node NATS cluster with auth and TLS (real nats-server, built
// from the module), two collectors in active/standby on one PostgreSQL
// store, and an agent's publisher. The NATS node leading the stream and
// then the active collector are killed while events flow: every event is
// stored exactly once, and every chain verifies.
func TestClusterFailover(t *testing.T) {
	env := &harness.Env{T: t, Bin: harness.Binaries(t)}
	dir := t.TempDir()
	pg := harness.PostgresStore(t)

	// The trust chain, and a CA for the servers' certificate.
	authDir := filepath.Join(dir, "nats-auth")
	auth, err := natsauth.Open(authDir)
	if err != nil {
		t.Fatal(err)
	}
	ca := harness.NewTestCA(t, "nats-ca")
	caFile := ca.WriteCA(t, filepath.Join(dir, "ca.pem"))
	cert := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "nats.crt"), filepath.Join(dir, "nats.key")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	// Three nodes on loopback.
	ports := freePorts(t, 6)
	var urls []string
	nodes := make([]*natsembed.Server, 3)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		urls = append(urls, fmt.Sprintf("tls://127.0.0.1:%d", ports[i]))
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+j]))
			}
		}
		cfg := natsembed.Config{Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), StoreDir: filepath.Join(dir, fmt.Sprintf("js-%d", i+1)),
			ServerName: fmt.Sprintf("nats-%d", i+1), Logger: zerolog.Nop(), Auth: auth, TLSCert: certFile, TLSKey: keyFile,
			Cluster: &natsembed.Cluster{Name: "warden", Listen: fmt.Sprintf("127.0.0.1:%d", ports[3+i]), Routes: routes}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = natsembed.Start(cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("nats-%d: %v", i+1, err)
		}
		t.Cleanup(nodes[i].Shutdown)
	}
	natsURL := strings.Join(urls, ",")

	// The dev IdP the collectors' API trusts, and the agent's keys.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	idp, err := devidp.New(devidp.Options{Issuer: "http://" + ln.Addr().String(), ClientID: harness.ClientID, Users: harness.Users})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	idpDone := make(chan struct{})
	go func() {
		defer close(idpDone)
		idp.Serve(ctx, ln)
	}()
	defer func() {
		cancel()
		<-idpDone
	}()
	const host = "bastion-1"
	key, err := event.LoadOrCreateKey(filepath.Join(dir, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := event.WritePublicKey(filepath.Join(keys, host+".pub"), key.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	collectorCmd := func(args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(env.Bin, "warden-collector"), args...)
	}
	agentCreds := filepath.Join(dir, "agent.creds")
	if out, err := collectorCmd("enroll", host, "--nats-auth", authDir, "--out", agentCreds).CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}

	// The cluster's JetStream answers once its meta leader is elected.
	probeCreds, _, err := auth.Issue(natsauth.RoleCollector, "probe", "")
	if err != nil {
		t.Fatal(err)
	}
	probeFile := filepath.Join(dir, "probe.creds")
	if err := os.WriteFile(probeFile, probeCreds, 0o600); err != nil {
		t.Fatal(err)
	}
	probe, err := nats.Connect(natsURL, nats.UserCredentials(probeFile), nats.RootCAs(caFile),
		nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.RoleCollector, "probe")))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	pjs, err := jetstream.New(probe)
	if err != nil {
		t.Fatal(err)
	}
	env.Eventually("JetStream cluster ready", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := pjs.AccountInfo(ctx)
		return err
	})

	// Two collectors, active/standby, each with its own creds.
	apiPorts := freePorts(t, 2)
	startCollector := func(name string, apiPort int) *harness.Process {
		creds := filepath.Join(dir, name+".creds")
		if out, err := collectorCmd("collector-creds", name, "--nats-auth", authDir, "--out", creds).CombinedOutput(); err != nil {
			t.Fatalf("collector-creds %s: %v\n%s", name, err, out)
		}
		return env.StartProcess(name, collectorCmd("--nats-url", natsURL, "--nats-creds", creds, "--nats-tls-ca", caFile,
			"--store", pg, "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "--agent-keys", keys, "--name", name,
			"--stream-replicas", "3", "--active-standby", "--oidc-issuer", idp.Issuer(), "--oidc-client-id", harness.ClientID,
			"--readers", harness.ReaderGroup))
	}
	waitLog := func(p *harness.Process, what, text string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !strings.Contains(p.Output(), text) {
			if p.Exited() || time.Now().After(deadline) {
				t.Fatalf("%s: no %q in:\n%s", what, text, p.Output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	colA := startCollector("col-a", apiPorts[0])
	waitLog(colA, "col-a active", "ingest lease won")
	colB := startCollector("col-b", apiPorts[1])
	waitLog(colB, "col-b standby", "another collector ingests")

	// The agent: recorder, spool and publisher, with its enrolled creds.
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rec, err := recorder.New(recorder.Options{Host: event.Host{ID: host, Name: host}, Key: key, Spool: sp, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	opts, err := natsconn.Options(config.NATS{CredsFile: agentCreds, TLS: config.NATSTLS{CAFile: caFile}}, host, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	pub := publish.New(sp, publish.Options{URL: natsURL, HostID: host, NATSOptions: opts, Logger: zerolog.Nop(),
		AckTimeout: 2 * time.Second, MaxBackoff: time.Second})
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pubCtx) }()
	defer func() {
		stopPub()
		<-pubDone
	}()

	// Events flow the whole time: 40 per second.
	const total = 1200
	emitted := make(chan int, 1)
	go func() {
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for n < total {
			select {
			case <-ctx.Done():
				emitted <- n
				return
			case <-tick.C:
			}
			if err := rec.Emit(&event.Event{Type: event.NetConnect, Data: map[string]any{"n": n}}); err != nil {
				t.Errorf("emit %d: %v", n, err)
			}
			n++
		}
		emitted <- n
	}()

	st, err := store.Open(pg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	count := func() int64 {
		rows, err := st.Query(ctx, store.Filter{HostID: host, Types: []string{string(event.NetConnect)}})
		if err != nil {
			t.Fatal(err)
		}
		return int64(len(rows))
	}
	waitStored := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events stored", count(), n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Mid-stream: kill the node that leads the events stream. The agent's
	// publishes in flight to it are lost and sent again after the new
	// leader took later ones: the collector puts the chain back in order.
	waitStored(200)
	leader := streamLeader(t, natsURL, filepath.Join(dir, "col-a.creds"), caFile)
	for _, n := range nodes {
		if n.NATS().Name() == leader {
			clients := n.NATS().NumClients()
			n.Shutdown()
			t.Logf("killed NATS node %s (leader of %s; %d clients) with %d events stored", leader, event.StreamName, clients, count())
			break
		}
	}
	waitStored(500)
	stored := count()
	colA.Kill()
	t.Logf("killed the active collector col-a (SIGKILL) with %d events stored", stored)
	waitLog(colB, "col-b takes over", "ingest lease won")
	t.Logf("col-b took over")

	n := <-emitted
	waitStored(int64(n))
	time.Sleep(2 * time.Second) // anything stored twice or late would show now

	// Exactly once: seq 1..N of the chain, each stored once.
	rows, err := st.Query(ctx, store.Filter{HostID: host})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]int{}
	var maxSeq uint64
	for _, r := range rows {
		e, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Integrity) > 0 {
			t.Errorf("event %s (seq %d) flagged: %v", e.ID, e.Seq, r.Integrity)
		}
		seen[e.Seq]++
		maxSeq = max(maxSeq, e.Seq)
	}
	for s := uint64(1); s <= maxSeq; s++ {
		if seen[s] != 1 {
			t.Errorf("seq %d stored %d times", s, seen[s])
		}
	}
	viol, err := st.Query(ctx, store.Filter{Types: []string{string(event.IntegrityViolation)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range viol {
		t.Errorf("integrity violation: %s", v.Raw)
	}
	heads, err := st.ChainHeads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 1 || heads[0].Seq != maxSeq {
		t.Errorf("chain heads %+v, want %s at seq %d", heads, host, maxSeq)
	}
	t.Logf("counted: %d net.connect emitted, %d stored; %d rows of %s (seq 1..%d, each once); %d integrity violations",
		n, count(), len(rows), host, maxSeq, len(viol))
}

// streamLeader names the node leading WARDEN_EVENTS.
func streamLeader(t *testing.T, url, creds, caFile string) string {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserCredentials(creds), nats.RootCAs(caFile),
		nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.RoleCollector, "col-a")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream %s: %d replicas, cluster %+v; want 3 with a leader", event.StreamName, info.Config.Replicas, info.Cluster)
	}
	return info.Cluster.Leader
}
