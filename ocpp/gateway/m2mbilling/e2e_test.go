package m2mbilling_test

import (
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/internal/ocppstation"
	"github.com/m2mhub/m2mhub/metering/ocmf"
	"github.com/m2mhub/m2mhub/ocpp/gateway"
)

// stationDir holds the node charging station and its pinned ocpp-rpc.
const stationDir = "testdata/station"

// TestStationEndToEnd plays a charging station nobody here wrote, ocpp-rpc
// in strict mode (it checks every message both ways against the official
// OCPP 2.0.1 schemas), against the gateway over TLS with basic auth:
// boot, an unknown token refused, authorize, start, signed meter values,
// a stop the gateway requests, end. The gateway bills through this
// package against a fake hub: the hold is asked at start, the usage
// event binds the three OCMF readings and names the hold, which the hub
// captures and releases once the event is paid.
func TestStationEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hub := &fakeHub{}
	b, meter, _ := setup(t, hub)
	gw, err := gateway.New(gateway.Config{
		Stations: map[string]string{"CS1": "s3cret-password-1"},
		Tokens:   map[string]string{"1F2D3A4B": "car-1"},
		Billing:  b,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(gw)
	defer srv.Close()
	defer gw.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	start := end.Add(-90 * time.Minute)
	readings := []string{sign(t, meter, start, "B", "1000.000"), sign(t, meter, start.Add(time.Hour), "T", "1011.250"), sign(t, meter, end, "E", "1015.5")}
	answers, err := ocppstation.Run(ctx, ocppstation.Config{
		Dir: stationDir, URL: strings.Replace(srv.URL, "https://", "wss://", 1) + "/ocpp", CAFile: ca,
		Station: "CS1", Password: "s3cret-password-1", Token: "1F2D3A4B", Readings: readings,
		OnStopWanted: func() {
			// The hub said stop service for car-1.
			if n, err := gw.StopPayer(ctx, "car-1"); n != 1 || err != nil {
				t.Errorf("StopPayer: %d, %v", n, err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if answers["BootNotification"]["status"] != "Accepted" || answers.Status("AuthorizeUnknown") != "Unknown" ||
		answers.Status("Authorize") != "Accepted" || answers.Status("Started") != "Accepted" || answers["Ended"] == nil {
		t.Fatalf("station got %v", answers)
	}
	if len(hub.holds) != 1 || hub.released != 0 || len(hub.events) != 1 || hub.events[0].Data.Attributes["hold"] == "" {
		t.Fatalf("holds %v, released %d, events %d", hub.holds, hub.released, len(hub.events))
	}
	if !ocmf.BindsReadings(hub.events[0].ID, readings) {
		t.Fatalf("usage event %s does not bind the station's readings", hub.events[0].ID)
	}
}
