package loadtest

import (
	"bytes"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sampleResults is a run's results as Run fills them, with round figures.
func sampleResults() *Results {
	pay := []int64{800, 900, 1000, 1200, 5000}
	pub := []int64{3000, 4000, 9000}
	rct := []int64{20_000, 40_000}
	return &Results{
		Command: "loadtest -devices 3 -duration 3s", Seed: 7, Started: "2026-11-21T12:00:00Z",
		Config: RunConfig{Devices: 3, Providers: 2, Duration: "3s", Batch: 100,
			Mix: map[string]int{KindToll: 1, KindEnergy: 2}, Hub: "child"},
		Machine:  Machine{CPUs: 2, GOMAXPROCS: 2, GoVersion: "go1.26.8", OS: "linux", Arch: "amd64", LoadAvg: "1.50 1.20 0.90"},
		Setup:    Setup{EnrolS: 0.1, ConnectS: 0.2, ChannelsS: 1.5, FundingTxs: 1, Channels: 3},
		ElapsedS: 3,
		Payments: Flow{Count: 5, PerSecond: 5.0 / 3, Latency: Summarize(pay), Histogram: Histogram(pay)},
		Events: Events{Published: 300, Batches: 3, PerSecond: 100, Publish: Summarize(pub), PubHist: Histogram(pub),
			Receipted: 200, ReceiptedPerSecond: 66.5, Receipt: Summarize(rct), ReceiptHist: Histogram(rct)},
		Errors:       map[string]int{"pay:refused:rate-limited": 2, "event:no-receipt": 100},
		ErrorSamples: map[string]string{"pay:refused:rate-limited": "hub refused"},
		Timeline: []Second{{T: 0, Payments: 2, Events: 100, HubRSSKiB: 90_000}, {T: 1, Payments: 2, Events: 100, Receipted: 100, Errors: 1},
			{T: 2, Payments: 1, Events: 100, Receipted: 100, Errors: 1}},
		Baselines:  Baselines{VerifyPerSecond: 9000, VerifyCores: 2, JetStreamEventsPerSecond: 100_000, JetStreamMsgsPerSecond: 1000, Batch: 100},
		Ratios:     Ratios{PaymentsToVerify: 5.0 / 3 / 9000, EventsToJetStream: 0.001},
		Settlement: Settlement{Note: "not available in this hubd"},
		Memory:     Memory{Source: "/proc/1/status", RSSKiB: 90_000, HWMKiB: 100_000, Available: true},
	}
}

func TestResultsRoundTrip(t *testing.T) {
	r := sampleResults()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResults(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip changed the results:\n got %+v\nwant %+v", got, r)
	}
}

func TestReadResults(t *testing.T) {
	for name, doc := range map[string]string{
		"ErrBadResults_NotJSON":      "devices: 3",
		"ErrBadResults_UnknownField": `{"command":"x","elapsed_s":1,"config":{"devices":1},"bogus":1}`,
		"ErrBadResults_NoDevices":    `{"command":"x","elapsed_s":1,"config":{"devices":0}}`,
		"ErrBadResults_NoCommand":    `{"elapsed_s":1,"config":{"devices":1}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadResults(strings.NewReader(doc)); !errors.Is(err, ErrBadResults) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestWriteMarkdown(t *testing.T) {
	r := sampleResults()
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"`loadtest -devices 3 -duration 3s`", "Seed: 7",
		"| channel payments/s (BOLT 8, signed state verified and durable) | 2 | 9000 schnorr verifies/s on 2 cores | 0.0% |",
		"| usage events/s published (NATS JetStream, acked) | 100 | 100000 events/s (batches of 100, SyncAlways) | 0.1% |",
		// p50 of five is the 3rd sample, p90 and p99 the 5th.
		"| payment (Pay → PayAck) | 5 | 1.00 | 5.00 | 5.00 | 5.00 | 1.78 |",
		"| event:no-receipt | 100 |", "| pay:refused:rate-limited | 2 |",
		"settlement: not available in this hubd", "RSS 87.9 MiB, peak (VmHWM) 97.7 MiB",
		"mix toll=1,energy=2", "Load average when the run started: 1.50 1.20 0.90", "2 CPUs (GOMAXPROCS 2), go1.26.8",
		"![throughput](throughput.png)", "![latency](latency.png)",
		// 100 events without a receipt: flagged.
		"**Flag: metered receipts lag: p99 0.04 s (goal 2 s) beside payments' p99 0.01 s; 100 events without a receipt or unpaid after the drain.**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func decodePNG(t *testing.T, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if s := img.Bounds().Size(); s.X != ChartWidthPx || s.Y != ChartHeightPx {
		t.Fatalf("chart is %v, want %dx%d", s, ChartWidthPx, ChartHeightPx)
	}
}

func TestCharts(t *testing.T) {
	for name, r := range map[string]*Results{"OK": sampleResults(), "OK_Empty": {}} {
		t.Run(name, func(t *testing.T) {
			var tp, lat bytes.Buffer
			if err := r.ThroughputChart(&tp); err != nil {
				t.Fatal(err)
			}
			decodePNG(t, tp.Bytes())
			if err := r.LatencyChart(&lat); err != nil {
				t.Fatal(err)
			}
			decodePNG(t, lat.Bytes())
		})
	}
}

func TestCDF(t *testing.T) {
	h := []Bucket{{10, 0}, {20, 1}, {30, 0}, {40, 3}, {50, 0}}
	got := cdf(h)
	want := []struct{ x, y float64 }{{0.02, 0.25}, {0.03, 0.25}, {0.04, 1}}
	if len(got) != len(want) {
		t.Fatalf("cdf %v", got)
	}
	for i, w := range want {
		if got[i].X != w.x || got[i].Y != w.y {
			t.Fatalf("point %d = %v, want %v", i, got[i], w)
		}
	}
	if cdf([]Bucket{{10, 0}}) != nil {
		t.Fatal("cdf of no samples")
	}
}

// TestWriteAll writes the four files, and a report redrawn from the
// results.json written is identical to the first.
func TestWriteAll(t *testing.T) {
	dir := t.TempDir()
	r := sampleResults()
	if err := r.WriteAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ThroughputFile, LatencyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		decodePNG(t, b)
	}
	back, err := ReadResultsFile(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	dir2 := t.TempDir()
	if err := back.WriteAll(dir2); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, ReportFile))
	b, _ := os.ReadFile(filepath.Join(dir2, ReportFile))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("redrawn report differs:\n%s\n---\n%s", a, b)
	}
}

// TestReceiptLag: receipts within the goal and nothing left over raise no
// flag; a slow p99 or a single unpaid event does.
func TestReceiptLag(t *testing.T) {
	r := sampleResults()
	r.Errors = map[string]int{"pay:refused:rate-limited": 2}
	r.Events.Receipt = Summarize([]int64{500_000, 1_900_000})
	if lag := r.ReceiptLag(); lag != "" {
		t.Fatalf("flagged %q", lag)
	}
	r.Errors["event:unpaid:no-answer"] = 1
	if lag := r.ReceiptLag(); !strings.Contains(lag, "1 events without a receipt or unpaid") {
		t.Fatalf("unpaid event not flagged: %q", lag)
	}
	delete(r.Errors, "event:unpaid:no-answer")
	r.Events.Receipt = Summarize([]int64{500_000, 2_100_000})
	if lag := r.ReceiptLag(); !strings.Contains(lag, "p99 2.10 s") {
		t.Fatalf("slow p99 not flagged: %q", lag)
	}
}
