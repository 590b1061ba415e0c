package hubtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/contracts"
	"github.com/m2mhub/m2mhub/hub"
)

// ExampleCDR is the CDR record of the contracts package's example EV
// session (testdata/examples and testdata/usage ev_charging.json) issued
// by provider under id, as the hub stores it. root is the path to the
// module's root from the calling test's directory.
func ExampleCDR(t testing.TB, root, id, provider string, created time.Time) hub.CDRRecord {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, "contracts", "testdata", "examples", "ev_charging.json"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := contracts.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "contracts", "testdata", "usage", "ev_charging.json"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := contracts.ParseUsage(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := contracts.Price(k, u)
	if err != nil {
		t.Fatal(err)
	}
	cdr, err := contracts.NewCDR(k, u, b, contracts.CDRSession{
		CountryCode: "DE", PartyID: "ACM", ID: id, SessionID: "s1",
		Token:      contracts.CDRToken{CountryCode: "DE", PartyID: "ACM", UID: "1F2D3A4B", Type: "APP_USER", ContractID: "car-1"},
		AuthMethod: "AUTH_REQUEST", Location: contracts.CDRLocation{ID: "CS1", EvseUID: "1", ConnectorID: "1"}, LastUpdated: created,
	})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := json.Marshal(cdr)
	if err != nil {
		t.Fatal(err)
	}
	return hub.CDRRecord{ID: id, Provider: provider, Payer: "car-1", Session: "s1", Events: []string{"ocmf-1"},
		TotalMsat: b.TotalMsat, Created: created, CDR: enc}
}
