package loadtest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Output file names in the -out directory.
const (
	ReportFile     = "report.md"
	ResultsFile    = "results.json"
	ThroughputFile = "throughput.png"
	LatencyFile    = "latency.png"
)

// WriteAll writes results.json, the two charts and report.md into dir,
// creating it.
func (r *Results) WriteAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, ResultsFile), r.WriteJSON); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, ThroughputFile), r.ThroughputChart); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, LatencyFile), r.LatencyChart); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, ReportFile), r.WriteMarkdown)
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("loadtest: %s: %w", path, err)
	}
	return f.Close()
}

// ms formats microseconds as milliseconds.
func ms(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }

// ratio formats a/b as a percentage, or "n/a" without a baseline.
func ratio(x float64) string {
	if x <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*x)
}

// WriteMarkdown writes the human report.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	c := r.Config
	p("# m2mhub load test")
	p("")
	p("Run of %s: %d devices, %d providers, %s, payment rate %s, event rate %s, batch %d, %s, mix %s, hub: %s.",
		r.Started, c.Devices, c.Providers, c.Duration, rateText(c.Rate), rateText(c.EventRate), c.Batch, windowText(c.Window), mixText(c.Mix), c.Hub)
	p("")
	p("Command: `%s`  ", r.Command)
	p("Seed: %d  ", r.Seed)
	m := r.Machine
	p("Machine: %d CPUs (GOMAXPROCS %d), %s, %s/%s. The load generator and hubd share these cores.", m.CPUs, m.GOMAXPROCS, m.GoVersion, m.OS, m.Arch)
	if m.LoadAvg != "" {
		p("Load average when the run started: %s (other work on the machine counts against every figure, the ceilings included).", m.LoadAvg)
	}
	p("")
	p("## Headline")
	p("")
	p("| figure | value | ceiling (same run) | share of ceiling |")
	p("|---|---:|---:|---:|")
	bl := r.Baselines
	p("| channel payments/s (BOLT 8, signed state verified and durable) | %.0f | %.0f schnorr verifies/s on %d cores | %s |",
		r.Payments.PerSecond, bl.VerifyPerSecond, bl.VerifyCores, ratio(r.Ratios.PaymentsToVerify))
	p("| usage events/s published (NATS JetStream, acked) | %.0f | %.0f events/s (batches of %d, SyncAlways) | %s |",
		r.Events.PerSecond, bl.JetStreamEventsPerSecond, bl.Batch, ratio(r.Ratios.EventsToJetStream))
	p("| usage events/s receipted (charged and paid) | %.0f | | |", r.Events.ReceiptedPerSecond)
	p("")
	p("## Latency")
	p("")
	p("| operation | count | p50 ms | p90 ms | p99 ms | max ms | mean ms |")
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, row := range []struct {
		name string
		l    Percentiles
	}{
		{"payment (Pay → PayAck)", r.Payments.Latency},
		{"usage batch (publish → JetStream ack)", r.Events.Publish},
		{"receipt (batch made → hub receipt; a wait for room in the provider's window counts)", r.Events.Receipt},
		{"receipt (batch's JetStream ack → hub receipt)", r.Events.ReceiptAcked},
	} {
		l := row.l
		p("| %s | %d | %s | %s | %s | %s | %s |", row.name, l.Count, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), ms(l.Mean))
	}
	if lag := r.ReceiptLag(); lag != "" {
		p("")
		p("**Flag: %s.**", lag)
	}
	p("")
	p("![throughput](%s)", ThroughputFile)
	p("")
	p("![latency](%s)", LatencyFile)
	p("")
	p("## Counts")
	p("")
	p("- run: %.1f s measured", r.ElapsedS)
	p("- payments: %d", r.Payments.Count)
	p("- events: %d published in %d batches, %d covered by receipts", r.Events.Published, r.Events.Batches, r.Events.Receipted)
	p("")
	p("## Errors by kind")
	p("")
	if len(r.Errors) == 0 {
		p("None.")
	} else {
		p("| kind | count |")
		p("|---|---:|")
		kinds := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		for _, k := range kinds {
			p("| %s | %d |", k, r.Errors[k])
		}
	}
	p("")
	p("## Settlement")
	p("")
	s := r.Settlement
	if !s.Available {
		p("settlement: %s", s.Note)
	} else {
		p("- state: %s after %.1f s", s.State, s.Seconds)
		p("- transactions: %d, channels settled: %d, %d vB in all, %.1f vB per channel", s.Txs, s.Channels, s.VBytes, s.VBPerChannel)
		if s.Note != "" {
			p("- %s", s.Note)
		}
	}
	p("")
	p("## Hub memory")
	p("")
	if r.Memory.Available {
		p("RSS %.1f MiB, peak (VmHWM) %.1f MiB, from %s.", float64(r.Memory.RSSKiB)/1024, float64(r.Memory.HWMKiB)/1024, r.Memory.Source)
	} else {
		p("Not available: %s.", r.Memory.Source)
	}
	p("")
	p("## Setup")
	p("")
	st := r.Setup
	p("Enrolment %.1f s, BOLT 8 sessions %.1f s, %d channels opened and funded by %d transactions in %.1f s.",
		st.EnrolS, st.ConnectS, st.Channels, st.FundingTxs, st.ChannelsS)
	_, err := io.WriteString(w, b.String())
	return err
}

func rateText(r float64) string {
	if r <= 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f/s", r)
}

func mixText(m map[string]int) string {
	var parts []string
	for _, k := range Kinds {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
		}
	}
	return strings.Join(parts, ",")
}

// windowText describes the providers' Meter window.
func windowText(n int) string {
	if n == 0 {
		return "no provider window"
	}
	return fmt.Sprintf("provider window %d events", n)
}
