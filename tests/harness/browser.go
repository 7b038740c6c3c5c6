package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/wardenhq/warden/tests/testenv"
)

// Screen size of every page, and so of every screenshot (docs/console/
// takes them from here).
const (
	ScreenWidth  = 1280
	ScreenHeight = 800
)

// Browser is a real headless Chromium (Debian's chromium) inside the
// test's network namespace, where the collector and the dev IdP listen on
// loopback. chromedp drives it over --remote-debugging-pipe, so nothing
// of the browser's listens on a port.
type Browser struct {
	t testing.TB
	// Dir is where screenshots go: the test's artifact directory.
	Dir   string
	root  context.Context
	shots atomic.Int32
	out   lockedBuffer
}

// Page is a window in a browser context of its own: its own cookies, as
// another person's browser would have.
type Page struct {
	b   *Browser
	ctx context.Context
	// Name tells pages apart in failure messages.
	Name string
}

// StartBrowser starts Chromium in ns with a fresh profile in t.TempDir()
// and stops it when the test ends. Without chromium it skips, or fails
// with CI=true.
func StartBrowser(t testing.TB, ns *NetNS) *Browser {
	t.Helper()
	testenv.RequireRoot(t)
	nsenter := testenv.RequireCommand(t, "nsenter")
	chromium := testenv.RequireCommand(t, "chromium")
	b := &Browser{t: t, Dir: artifactDir(t)}
	// Now and then Chromium dies while starting on a loaded machine
	// (crashpad's complaints and nothing else): a fresh start does it.
	const attempts = 3
	for i := 1; ; i++ {
		err := b.start(ns, nsenter, chromium)
		if err == nil {
			break
		}
		if i == attempts {
			t.Fatalf("start chromium (%d attempts): %v", attempts, err)
		}
		t.Logf("start chromium, attempt %d of %d: %v", i, attempts, err)
		time.Sleep(time.Second)
	}
	v, _ := exec.Command(chromium, "--version").Output()
	t.Logf("%s running; screenshots in %s", bytes.TrimSpace(v), b.Dir)
	return b
}

// start starts Chromium with a fresh profile and opens its first tab.
func (b *Browser) start(ns *NetNS, nsenter, chromium string) error {
	t := b.t
	profile := t.TempDir()
	b.out = lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		// Without these Chromium keeps calling out to Google's hosts,
		// which a closed network (CI, the test's namespace) refuses.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(ScreenWidth, ScreenHeight),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(&b.out),
		// Chromium runs in the test's namespace; nsenter execs it, so the
		// pid chromedp waits for is the browser's, and the DevTools pipe
		// (fds 3 and 4) passes through.
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"nsenter", "--net=" + ns.Path, "--", chromium}, cmd.Args[1:]...)
			cmd.Path = nsenter
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctxOpts := []chromedp.ContextOption{chromedp.WithLogf(t.Logf)}
	if os.Getenv("WARDEN_TEST_CDP_DEBUG") != "" {
		// Every DevTools message, for a step that hangs.
		ctxOpts = append(ctxOpts, chromedp.WithDebugf(t.Logf))
	}
	root, cancelRoot := chromedp.NewContext(alloc, ctxOpts...)
	stop := func() {
		cancelRoot()
		cancelAlloc()
		// Chromium's helpers (zygote, renderers) may outlive the browser
		// and write into the profile that t.TempDir removes next.
		killProfileUsers(profile)
	}
	// The first run starts the browser; the root context's tab lives as
	// long as the browser.
	start := time.Now()
	if err := chromedp.Do(root); err != nil {
		stop()
		return fmt.Errorf("%w\n%s", err, b.out.withoutDBus())
	}
	t.Logf("chromium started in %s", time.Since(start).Round(time.Millisecond))
	b.root = root
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("chromium output (D-Bus complaints left out):\n%s", b.out.withoutDBus())
		}
	})
	return nil
}

// artifactDir is the test's artifact directory (go test -artifacts keeps
// it; otherwise it is removed with the test's temporary files).
func artifactDir(t testing.TB) string {
	dir := t.ArtifactDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// NewPage opens a window in a new browser context.
func (b *Browser) NewPage(name string) *Page {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	// The first run opens the tab, which lives as long as the context
	// it runs with: so not one of Do's timeouts.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(ScreenWidth, ScreenHeight)); err != nil {
		b.t.Fatalf("browser: open %s: %v", name, err)
	}
	p := &Page{b: b, ctx: ctx, Name: name}
	return p
}

// stepTimeout bounds one step; the console answers in milliseconds, so
// it only turns a hang into a failure with a screenshot.
const stepTimeout = 45 * time.Second

// Do runs steps on the page. On an error it saves a screenshot and fails
// the test, naming what was being done.
func (p *Page) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail(what, err)
	}
}

// Response runs steps that load a page, such as a click on a submit
// button, and returns the HTTP response of the document they load,
// failing the test as Do does.
func (p *Page) Response(what string, steps ...chromedp.Action[chromedp.Void]) *network.Response {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		p.fail(what, err)
	}
	return resp
}

// Run runs one action on the page and returns its value, failing the
// test as Do does.
func Run[T any](p *Page, what string, a chromedp.Action[T]) T {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.fail(what, err)
	}
	return v
}

func (p *Page) fail(what string, err error) {
	p.b.t.Helper()
	shot := p.Shot("failed-" + what)
	loc, _ := p.location()
	// The page's text too: without go test -artifacts the screenshot is
	// gone with the test's temporary files, and a CI log keeps only this.
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : ""`))
	p.b.t.Fatalf("browser (%s) at %s: %s: %v (screenshot %s)\npage text:\n%s", p.Name, loc, what, err, shot, text)
}

func (p *Page) location() (string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Location())
}

var unsafeName = regexp.MustCompile(`[^a-z0-9-]+`)

// Shot saves the visible page as NN-name.png in the artifact directory,
// NN counting the browser's screenshots, and returns its path ("" if it
// could not be taken: a screenshot never fails the test by itself).
func (p *Page) Shot(name string) string {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	n := p.b.shots.Add(1)
	path := filepath.Join(p.b.Dir, fmt.Sprintf("%02d-%s.png", n, unsafeName.ReplaceAllString(name, "-")))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	return path
}

// killProfileUsers kills what still runs with profile as its
// --user-data-dir: only this test's Chromium processes pass it.
func killProfileUsers(profile string) {
	want := []byte("--user-data-dir=" + profile)
	for range 3 {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			for _, arg := range bytes.Split(cmdline, []byte{0}) {
				if bytes.Equal(arg, want) {
					syscall.Kill(pid, syscall.SIGKILL)
					found = true
					break
				}
			}
		}
		if !found {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuffer collects Chromium's output from chromedp's goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// withoutDBus is the output without Chromium's D-Bus errors: a test
// machine has no session bus, and they drown what matters.
func (b *lockedBuffer) withoutDBus() string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(b.String(), "\n") {
		if !strings.Contains(line, ":ERROR:dbus/") {
			out.WriteString(line)
		}
	}
	return out.String()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
