package natsconn_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/agent/natsconn"
	"github.com/wardenhq/warden/pkg/natsauth"
)

func TestCredsMustBeThisHosts(t *testing.T) {
	dir := t.TempDir()
	auth, err := natsauth.Open(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(r natsauth.Role, name string) string {
		b, _, err := auth.Issue(r, name, "")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, string(r)+"-"+name+".creds")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	own := write(natsauth.RoleAgent, "bastion-1")
	if _, err := natsconn.Options(config.NATS{CredsFile: own}, "bastion-1", zerolog.Nop()); err != nil {
		t.Fatalf("own creds: %v", err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{write(natsauth.RoleAgent, "bastion-2"), `enrolled for host "bastion-2", but host_id is "bastion-1"`},
		{write(natsauth.RoleSOC, "sam"), `the creds of "soc:sam", not of an agent`},
		{filepath.Join(dir, "missing.creds"), "nats.creds_file"},
	} {
		_, err := natsconn.Options(config.NATS{CredsFile: tc.path}, "bastion-1", zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %q", tc.path, err, tc.want)
		}
	}
	if _, err := natsconn.Options(config.NATS{}, "bastion-1", zerolog.Nop()); err != nil {
		t.Fatalf("no creds: %v", err)
	}
}
