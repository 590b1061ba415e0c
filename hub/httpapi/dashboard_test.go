package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/m2mhub/m2mhub/msat"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/httpapi/credfile"
	"github.com/m2mhub/m2mhub/hub/metrics"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// chromium finds Debian's headless browser. Without it the test fails:
// make test installs it first when it runs as root.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: make test installs it when run as root, or apt-get install -y chromium")
	return ""
}

// browse loads url in headless Chromium, lets the page run for a few
// seconds of virtual time (fetches finish first) and returns the rendered
// DOM; extra flags add a screenshot.
func browse(t *testing.T, bin, url string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + t.TempDir(),
		// This machine's network is closed: without these, Chromium's
		// background connections fail many at a time and slow every page.
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-quic",
		"--virtual-time-budget=5000", "--window-size=1280,1800",
	}, extra...)
	args = append(args, "--dump-dom", url)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// section returns the HTML of the element with id (up to its table's end).
func section(dom, id string) string { return fromID(dom, id, "</table>") }

var tagRE = regexp.MustCompile(`<[^>]*>`)

// card returns the HTML of the overview figure with id (its dd element).
func card(dom, id string) string { return fromID(dom, id, "</dd>") }

// fromID returns the HTML from the element with id through the first end
// after it, or to the end of the page.
func fromID(dom, id, end string) string {
	i := strings.Index(dom, `id="`+id+`"`)
	if i < 0 {
		return ""
	}
	rest := dom[i:]
	if j := strings.Index(rest, end); j >= 0 {
		return rest[:j+len(end)]
	}
	return rest
}

// intl writes v with thousands separators, as the page's Intl does.
func intl(v int64) string {
	s := strconv.FormatInt(v, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// sessionsFunc counts sessions with a func, read at each scrape.
type sessionsFunc func() int

func (f sessionsFunc) Sessions() int { return f() }

// TestDashboard serves the dashboard over a real in-process hub (btcd
// regtest, bolt store, a device session) and drives it in headless
// Chromium: with a read-only credential it shows a payment made during the
// test; without one, or with a wrong one, it shows "unauthorized" and the
// API refuses.
func TestDashboard(t *testing.T) {
	bin := chromium(t)
	// The hub's metrics, fed by its channel manager, and the history
	// sampler over them, as hubd wires them. This test runs no NATS, and
	// says so: the dependency is down and its alert pending.
	var h *hubtest.Hub
	noNATS := func(context.Context) error { return errors.New("no NATS in this test") }
	meter, err := metrics.New(metrics.Config{
		Sessions: sessionsFunc(func() int { return h.Server().Sessions() }),
		Health:   []metrics.HealthCheck{{Name: "nats", Check: noNATS}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h = hubtest.Start(t, hubtest.Config{Channels: func(c *channels.Config) { c.PayObserver = meter }})
	ctx := t.Context()
	// The sampler's clock starts a minute back, so the charts have a few
	// samples to draw: one before the payment, one after, one now.
	clock := time.Now().Add(-time.Minute)
	hist, err := metrics.NewSampler(metrics.HistoryConfig{
		Metrics: meter, Incomes: incomesOf{h.Store()}, Now: func() time.Time { return clock },
		Devices: h.Registry(),
		Wallet: func(ctx context.Context) (btcutil.Amount, error) {
			b, err := h.Wallet().Balance(ctx)
			return b.Total(), err
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	creds, err := credfile.New(credfile.Config{Path: filepath.Join(t.TempDir(), "creds.json")})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := httpapi.JoinContracts(httpapi.ContractsConfig{Store: h.Store(), Auditor: h.Registry(), Incomes: incomesOf{h.Store()}})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{
		Registry: h.Registry(), Token: token, Creds: creds, Channels: h.Channels(), Contracts: cs,
		Info: func() httpapi.Info {
			return httpapi.Info{Network: "regtest", Sessions: h.Server().Sessions(), SettlePeriodSeconds: 3600, SettleBlocks: 144}
		},
		Health: []httpapi.HealthCheck{
			{Name: "store", Check: func(context.Context) error { return nil }},
			{Name: "btcd", Check: h.Chain().Healthy},
			{Name: "nats", Check: noNATS},
		},
		History: hist,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	root := httpapi.NewClient(strings.TrimPrefix(srv.URL, "http://"), token)
	ro, err := root.CreateCred(ctx, httpapi.CreateCredRequest{Scope: "read-only", Label: "dashboard test"})
	if err != nil {
		t.Fatal(err)
	}

	// A payment made now, with an amount no other number on the page has.
	devKey, devID := h.EnrolDevice(t, hub.RolePayer)
	_, provID := h.EnrolDevice(t, hub.RoleProvider)
	sess := h.Dial(t, devKey)
	d := h.NewDevice(t, sess, devKey, m2mclient.DeviceConfig{})
	ch := h.OpenChannel(t, d, 70_000)
	const amount = 4_321_987
	clock = clock.Add(30 * time.Second)
	if err := hist.Record(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := d.Pay(ctx, ch.ID, provID, amount, "dashboard test")
	if err != nil {
		t.Fatal(err)
	}
	// Samples after the payment, as hubd's sampler takes every 30 s.
	for _, at := range []time.Time{clock.Add(30 * time.Second), time.Now()} {
		clock = at
		if err := hist.Record(ctx); err != nil {
			t.Fatal(err)
		}
	}
	bal, err := h.Wallet().Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The ledger: what the store's channels say was paid.
	recs, err := h.Store().Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ledgerPaid msat.Amount
	for _, r := range recs {
		ledgerPaid += r.Paid
	}
	if ledgerPaid != amount {
		t.Fatalf("store holds %d msat paid, want %d", ledgerPaid, amount)
	}

	t.Run("ShowsPayment", func(t *testing.T) {
		shot := filepath.Join(t.TempDir(), "dashboard.png")
		dom := browse(t, bin, srv.URL+"/dashboard#token="+ro.Token, "--screenshot="+shot)
		if !strings.Contains(section(dom, "status"), ">live<") {
			t.Fatalf("status is not live:\n%s", section(dom, "status"))
		}
		rows := tagRE.ReplaceAllString(section(dom, "channels"), " ")
		for _, want := range []string{ch.ID.String(), devID, "ready", " 4,321,987 ", " 1 ", " left)"} {
			if !strings.Contains(rows, want) {
				t.Errorf("channels table lacks %q:\n%s", want, rows)
			}
		}
		if rc.Paid != amount {
			t.Fatalf("receipt paid %d", rc.Paid)
		}
		audit := tagRE.ReplaceAllString(section(dom, "audit"), " ")
		if !strings.Contains(audit, "cred:") || !strings.Contains(audit, devID) {
			t.Errorf("audit tail lacks the credential and the enrolment:\n%s", audit)
		}
		health := tagRE.ReplaceAllString(section(dom, "health"), " ")
		if !strings.Contains(health, "btcd: ok") || !strings.Contains(health, "store: ok") {
			t.Errorf("health: %s", health)
		}
		if !strings.Contains(tagRE.ReplaceAllString(section(dom, "income"), " "), provID) {
			t.Errorf("income table lacks provider %s", provID)
		}
		// The overview reconciles with the ledger and the wallet.
		for id, want := range map[string]string{
			"ov-paid": "4,321,987 msat", "ov-payments": ">1<", "ov-sessions": ">1<",
			"ov-wallet": ">" + intl(int64(bal.Total())) + " sat<", "ov-revenue": ">0 msat<",
			"ov-schedule": "every 1 h or every 144 blocks",
		} {
			if got := card(dom, id); !strings.Contains(got, want) {
				t.Errorf("%s shows %q, want %q", id, got, want)
			}
		}
		alerts := tagRE.ReplaceAllString(section(dom, "alerts"), " ")
		if !strings.Contains(alerts, "pending NATSDown (critical)") {
			t.Errorf("alerts: %s", alerts)
		}
		// The four history charts and the provider's own, drawn by uPlot.
		if got := strings.Count(dom, `class="uplot`); got < 5 {
			t.Errorf("%d charts drawn, want 5", got)
		}
		if !strings.Contains(dom, `id="prov-`+provID+`"`) {
			t.Errorf("no income chart for provider %s", provID)
		}
		if strings.Contains(dom, ro.Token) {
			t.Error("the token is left in the page")
		}
		png, err := os.ReadFile(shot)
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10_000 {
			t.Fatalf("screenshot %s: %d bytes, %v", shot, len(png), err)
		}
		t.Logf("dashboard screenshot: %s (%d bytes)", shot, len(png))
		// CI may keep it as an artifact.
		if dir := os.Getenv("M2MHUB_SCREENSHOT_DIR"); dir != "" {
			if err := os.WriteFile(filepath.Join(dir, "dashboard.png"), png, 0o644); err != nil {
				t.Error(err)
			}
		}
	})

	for _, c := range []struct{ name, frag string }{{"RefusesWithoutCredential", ""}, {"RefusesWrongCredential", "#token=m2m_wrong"}} {
		t.Run(c.name, func(t *testing.T) {
			dom := browse(t, bin, srv.URL+"/dashboard"+c.frag)
			if !strings.Contains(section(dom, "status"), ">unauthorized<") {
				t.Fatalf("status:\n%s", section(dom, "status"))
			}
			if strings.Contains(dom, ch.ID.String()) {
				t.Fatal("channel data shown without a credential")
			}
		})
	}
	t.Run("APIRefusesWithoutCredential", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/v1/channels")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}
