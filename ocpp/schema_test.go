package ocpp

import (
	"errors"
	"slices"
	"testing"
)

func mustSchemas(tb testing.TB) *Schemas {
	tb.Helper()
	s, err := LoadSchemas()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestSchemasActions(t *testing.T) {
	want := []string{"Authorize", "BootNotification", "Heartbeat", "MeterValues", "RequestStopTransaction", "StatusNotification", "TransactionEvent"}
	if got := mustSchemas(t).Actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %v, want %v", got, want)
	}
}

func TestValidate(t *testing.T) {
	s := mustSchemas(t)
	tests := []struct {
		name    string
		action  string
		dir     Direction
		payload string
		code    ErrorCode // empty: valid
	}{
		{"OK/Boot", "BootNotification", Request, `{"chargingStation":{"model":"AC-22","vendorName":"Acme"},"reason":"PowerUp"}`, ""},
		{"OK/BootConf", "BootNotification", Response, `{"currentTime":"2026-12-02T03:00:00Z","interval":300,"status":"Accepted"}`, ""},
		{"OK/Authorize", "Authorize", Request, `{"idToken":{"idToken":"1F2D3A4B","type":"ISO14443"}}`, ""},
		{"OccurrenceConstraintViolation/NoReason", "BootNotification", Request, `{"chargingStation":{"model":"AC-22","vendorName":"Acme"}}`, OccurrenceConstraintViolation},
		{"TypeConstraintViolation/IntervalString", "BootNotification", Response, `{"currentTime":"2026-12-02T03:00:00Z","interval":"300","status":"Accepted"}`, TypeConstraintViolation},
		{"PropertyConstraintViolation/BadEnum", "BootNotification", Request, `{"chargingStation":{"model":"AC-22","vendorName":"Acme"},"reason":"Bored"}`, PropertyConstraintViolation},
		{"PropertyConstraintViolation/TooLong", "Authorize", Request, `{"idToken":{"idToken":"0123456789012345678901234567890123456789","type":"ISO14443"}}`, PropertyConstraintViolation},
		{"FormatViolation/ExtraField", "Heartbeat", Request, `{"x":1}`, FormatViolation},
		{"FormatViolation/NotJSON", "Heartbeat", Request, `{`, FormatViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Validate(tt.action, tt.dir, []byte(tt.payload))
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var oe *Error
			if !errors.Is(err, ErrSchema) || !errors.As(err, &oe) {
				t.Fatalf("err %v, want a schema *Error", err)
			}
			if oe.Code != tt.code {
				t.Fatalf("code %s, want %s (%v)", oe.Code, tt.code, err)
			}
		})
	}
	if err := s.Validate("DataTransfer", Request, []byte(`{}`)); !errors.Is(err, ErrUnknownAction) {
		t.Fatalf("unknown action: %v", err)
	}
}
