package loadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Results is everything a run measured; results.json holds it, and the
// Markdown report and the charts are drawn from it alone, so a report can
// be regenerated from a results.json.
type Results struct {
	// Command is the exact command line of the run.
	Command string    `json:"command"`
	Seed    int64     `json:"seed"`
	Started string    `json:"started"` // RFC 3339
	Config  RunConfig `json:"config"`
	Machine Machine   `json:"machine"`
	Setup   Setup     `json:"setup"`

	// ElapsedS is the measured run's length in seconds.
	ElapsedS float64 `json:"elapsed_s"`
	Payments Flow    `json:"payments"`
	Events   Events  `json:"events"`
	// Errors counts failed operations by kind (see errorKind).
	Errors map[string]int `json:"errors"`
	// ErrorSamples holds the first message of each error kind.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// Timeline has one entry per second of the run.
	Timeline []Second `json:"timeline"`

	Baselines  Baselines  `json:"baselines"`
	Ratios     Ratios     `json:"ratios"`
	Settlement Settlement `json:"settlement"`
	Memory     Memory     `json:"memory"`
}

// RunConfig is the run's configuration as reported.
type RunConfig struct {
	Devices   int            `json:"devices"`
	Providers int            `json:"providers"`
	Duration  string         `json:"duration"`
	Rate      float64        `json:"rate"`       // payments/s in total, 0 = max
	EventRate float64        `json:"event_rate"` // events/s in total, 0 = max
	Batch     int            `json:"batch"`
	Window    int            `json:"window,omitempty"` // each provider's Meter window, 0 = none
	Mix       map[string]int `json:"mix"`
	Hub       string         `json:"hub"` // "child" or the external data dir
}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute averages when the
	// run started: other work on a shared machine counts against every
	// figure, the ceilings included.
	LoadAvg string `json:"load_avg,omitempty"`
}

// Setup is what preparing the fleet took.
type Setup struct {
	EnrolS     float64 `json:"enrol_s"`
	ConnectS   float64 `json:"connect_s"`
	ChannelsS  float64 `json:"channels_s"`
	FundingTxs int     `json:"funding_txs"`
	Channels   int     `json:"channels"`
}

// Flow is a count, its rate and its latencies.
type Flow struct {
	Count     int         `json:"count"`
	PerSecond float64     `json:"per_second"`
	Latency   Percentiles `json:"latency"`
	Histogram []Bucket    `json:"histogram"`
}

// Events are the metering side: batches published over NATS, and the
// receipts the hub sent back once the payers' channels paid for them.
type Events struct {
	// Published counts events JetStream acknowledged; PerSecond is their
	// rate; Latency is per batch, publish to ack.
	Published int         `json:"published"`
	Batches   int         `json:"batches"`
	PerSecond float64     `json:"per_second"`
	Publish   Percentiles `json:"publish_latency"`
	PubHist   []Bucket    `json:"publish_histogram"`
	// Receipted counts events covered by verified hub receipts;
	// Receipt latency is from the batch's making (before Meter, so a
	// wait for room in the provider's window counts) to the receipt;
	// ReceiptAcked from JetStream's ack of the batch, the hub's part.
	Receipted          int         `json:"receipted"`
	ReceiptedPerSecond float64     `json:"receipted_per_second"`
	Receipt            Percentiles `json:"receipt_latency"`
	ReceiptHist        []Bucket    `json:"receipt_histogram"`
	ReceiptAcked       Percentiles `json:"receipt_latency_from_ack"`
}

// Second is one second of the run.
type Second struct {
	T         int   `json:"t"`
	Payments  int   `json:"payments"`
	Events    int   `json:"events"`
	Receipted int   `json:"receipted"`
	Errors    int   `json:"errors"`
	HubRSSKiB int64 `json:"hub_rss_kib,omitempty"`
}

// Baselines are the ceilings measured on the same machine in the same run.
type Baselines struct {
	// VerifyPerSecond is schnorr signature checks per second on all cores.
	VerifyPerSecond float64 `json:"verify_per_second"`
	VerifyCores     int     `json:"verify_cores"`
	// JetStreamEventsPerSecond is events per second published in batches
	// of Batch to an embedded JetStream with hubd's SyncAlways setting.
	JetStreamEventsPerSecond float64 `json:"jetstream_events_per_second"`
	JetStreamMsgsPerSecond   float64 `json:"jetstream_msgs_per_second"`
	Batch                    int     `json:"batch"`
}

// Ratios relate the headline figures to the baselines.
type Ratios struct {
	PaymentsToVerify  float64 `json:"payments_to_verify"`
	EventsToJetStream float64 `json:"events_to_jetstream"`
}

// Settlement is the settlement epoch triggered after the run.
type Settlement struct {
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"`
	State     string `json:"state,omitempty"`
	Txs       int    `json:"txs"`
	Channels  int    `json:"channels"`
	VBytes    int    `json:"vbytes"`
	// VBPerChannel is VBytes over the channels settled.
	VBPerChannel float64 `json:"vb_per_channel"`
	Seconds      float64 `json:"seconds"`
}

// Memory is the hub's memory at the end of the run.
type Memory struct {
	// Source says where the figures come from.
	Source    string `json:"source"`
	RSSKiB    int64  `json:"rss_kib"`
	HWMKiB    int64  `json:"hwm_kib"`
	Available bool   `json:"available"`
}

// ErrBadResults means a results file does not hold a run's results.
var ErrBadResults = errors.New("loadtest: bad results")

// WriteJSON writes r as indented JSON.
func (r *Results) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadResults parses a results.json. It refuses unknown fields and a file
// without the figures every run records, so a report is never drawn from
// something else.
func ReadResults(rd io.Reader) (*Results, error) {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	var r Results
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadResults, err)
	}
	if r.Config.Devices <= 0 || r.ElapsedS <= 0 || r.Command == "" {
		return nil, fmt.Errorf("%w: no devices, duration or command", ErrBadResults)
	}
	return &r, nil
}

// ReadResultsFile parses the results.json at path.
func ReadResultsFile(path string) (*Results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadResults(f)
}

// ReceiptGoal is the p99 a metered receipt should arrive within, from its
// batch's publish, even at the maximum payment rate (issue: providers'
// income must not wait behind the devices' own payments).
const ReceiptGoal = 2 * time.Second

// ReceiptLag says how the metered receipts fell behind: their p99 beside
// the payments' and the goal, and the events left without a receipt or
// unpaid after the drain. It is empty when the receipts kept up.
func (r *Results) ReceiptLag() string {
	left := 0
	for k, n := range r.Errors {
		if k == "event:no-receipt" || strings.HasPrefix(k, "event:unpaid:") {
			left += n
		}
	}
	p99 := time.Duration(r.Events.Receipt.P99) * time.Microsecond
	if p99 <= ReceiptGoal && left == 0 {
		return ""
	}
	return fmt.Sprintf("metered receipts lag: p99 %.2f s (goal %.0f s) beside payments' p99 %.2f s; %d events without a receipt or unpaid after the drain",
		p99.Seconds(), ReceiptGoal.Seconds(), float64(r.Payments.Latency.P99)/1e6, left)
}
