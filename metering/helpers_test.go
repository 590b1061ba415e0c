package metering_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/m2mhub/m2mhub/metering"
)

// testNow is the clock of every validation test.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testContract = "5f2b6e0c9a1d4b3e8f7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"

// mustKey returns the private key with every byte set to b.
func mustKey(tb testing.TB, b byte) *btcec.PrivateKey {
	tb.Helper()
	k, _ := btcec.PrivKeyFromBytes(bytes.Repeat([]byte{b}, 32))
	return k
}

// testEvent returns an unsigned toll-passage event.
func testEvent(id string) metering.Event {
	return metering.Event{
		SpecVersion: metering.SpecVersion, ID: id, Source: "dev-00000000000000aa",
		Type: metering.EventType, Subject: "dev-00000000000000bb", Time: "2026-03-01T11:59:00Z",
		DataContentType: metering.ContentType,
		Data: metering.Data{
			Contract: testContract, Quantity: "1", Unit: "passage", VehicleClass: "car",
		},
	}
}

// mustSigned returns testEvent(id) signed by key.
func mustSigned(tb testing.TB, id string, key *btcec.PrivateKey) metering.Event {
	tb.Helper()
	e := testEvent(id)
	if err := metering.Sign(&e, key); err != nil {
		tb.Fatal(err)
	}
	return e
}
