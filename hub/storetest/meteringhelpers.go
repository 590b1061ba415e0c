package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
)

// NewContract returns a contract record with a random hash and a small
// canonical document naming name and version.
func NewContract(tb testing.TB, name string, version int, published time.Time) hub.ContractRecord {
	tb.Helper()
	var h hub.Hash
	if _, err := rand.Read(h[:]); err != nil {
		tb.Fatal(err)
	}
	return hub.ContractRecord{
		Hash:      h,
		Kind:      "charging",
		Name:      name,
		Version:   version,
		Document:  fmt.Appendf(nil, `{"kind":"charging","name":%q,"version":%d}`, name, version),
		Published: published,
	}
}

// NewCharge returns an owed charge of amount msat (a tenth of it the hub's
// fee) for one event of provider, paid by payer from the channel funded by
// op, recorded at charged.
func NewCharge(provider, eventID, payer string, op wire.OutPoint, amount msat.Amount, charged time.Time) hub.Charge {
	return hub.Charge{
		Provider:  provider,
		EventID:   eventID,
		Payer:     payer,
		Contract:  hub.Hash{0xc0, 0x17, byte(len(provider))},
		Amount:    amount,
		Fee:       amount / 10,
		Channel:   op,
		Status:    hub.ChargeOwed,
		EventTime: charged.Add(-time.Second),
		Charged:   charged,
		// Stands in for the event's content digest; every read path
		// must give it back.
		Digest: sha256.Sum256([]byte(provider + "\x00" + eventID)),
	}
}

// MustPutContract stores c.
func MustPutContract(tb testing.TB, s hub.ContractStore, c hub.ContractRecord) {
	tb.Helper()
	if err := s.PutContract(context.Background(), c); err != nil {
		tb.Fatalf("PutContract(%s): %v", c.Name, err)
	}
}

// MustContract returns the contract stored under h.
func MustContract(tb testing.TB, s hub.ContractStore, h hub.Hash) hub.ContractRecord {
	tb.Helper()
	c, err := s.Contract(context.Background(), h)
	if err != nil {
		tb.Fatalf("Contract(%x): %v", h[:4], err)
	}
	return c
}

// MustRecordCharges records cs and checks there is one result per charge.
func MustRecordCharges(tb testing.TB, s hub.ChargeStore, cs []hub.Charge, limit msat.Amount) []hub.ChargeResult {
	tb.Helper()
	res, err := s.RecordCharges(context.Background(), cs, limit)
	if err != nil {
		tb.Fatalf("RecordCharges(%d charges): %v", len(cs), err)
	}
	if len(res) != len(cs) {
		tb.Fatalf("RecordCharges(%d charges) = %d results", len(cs), len(res))
	}
	return res
}

// MustCharge returns the charge of provider's event.
func MustCharge(tb testing.TB, s hub.ChargeStore, provider, eventID string) hub.Charge {
	tb.Helper()
	c, err := s.Charge(context.Background(), provider, eventID)
	if err != nil {
		tb.Fatalf("Charge(%s, %s): %v", provider, eventID, err)
	}
	return c
}

func assertContract(tb testing.TB, got, want hub.ContractRecord) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("contract mismatch:\n got  %+v\n want %+v", got, want)
	}
}

func assertCharge(tb testing.TB, got, want hub.Charge) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("charge mismatch:\n got  %+v\n want %+v", got, want)
	}
}

// BenchRecordCharges measures charges made durable per second through
// RecordCharges, the metering hot path: callers goroutines each record
// batches of batch fresh charges (random event ids, as UUIDs give, spread
// over channels payer channels and 16 providers) on channels with credit to
// spare. It reports events/s, the process CPU per event and the p50/p99
// latency of one call.
func BenchRecordCharges(b *testing.B, s MeteringStoreUnderTest, channels, batch, callers int) {
	b.Helper()
	ctx := context.Background()
	chans := make([]hub.ChannelRecord, channels)
	for i := range chans {
		chans[i] = NewChannel(b, fmt.Sprintf("payer-%d", i))
		MustPutChannel(b, s, chans[i])
	}
	// Charges are built before the clock starts: the benchmark measures
	// the store, not the making of test data.
	calls := (b.N + batch - 1) / batch
	batches := make([][]hub.Charge, calls)
	id := make([]byte, 16)
	for k := range batches {
		n := min(batch, b.N-k*batch)
		cs := make([]hub.Charge, n)
		for i := range cs {
			if _, err := rand.Read(id); err != nil {
				b.Fatal(err)
			}
			c := chans[(k*batch+i)%channels]
			cs[i] = NewCharge(fmt.Sprintf("provider-%02d", i%16), hex.EncodeToString(id), c.DeviceID, c.Funding,
				1_000+msat.Amount(i), epoch().Add(time.Duration(k*batch+i)*time.Microsecond))
		}
		batches[k] = cs
	}

	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  []time.Duration
	)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for {
				k := int(next.Add(1) - 1)
				if k >= calls {
					break
				}
				start := time.Now()
				res, err := s.RecordCharges(ctx, batches[k], noLimit)
				if err != nil {
					b.Errorf("RecordCharges: %v", err)
					return
				}
				local = append(local, time.Since(start))
				if len(res) != len(batches[k]) || (len(res) > 0 && res[0].Duplicate) {
					b.Errorf("RecordCharges: %d results for %d fresh charges", len(res), len(batches[k]))
					return
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(b.N), "cpu-µs/event")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
	}
}
