package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub/storetest"
)

// send makes one request with the root token and returns the status and
// the answer's body.
func (a *fullAPI) send(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBadBodiesRefused sends every body-taking admin endpoint bodies that
// are malformed, incomplete, mistyped, oversized or out of bounds, and
// checks each is refused with 400 (413 past the size cap) and writes
// nothing: the audit log does not move and the registry still lists.
func TestBadBodiesRefused(t *testing.T) {
	a := newFullAPI(t)
	key := storetest.NewKey(t).String()
	zeroKey := "02" + strings.Repeat("00", 32)
	offCurve := "02" + strings.Repeat("ff", 32)
	long := func(n int) string { return strings.Repeat("x", n) }
	huge := `{"label":"` + long(100<<10) + `"}`

	// Every endpoint gets these.
	generic := map[string]struct {
		body   string
		status int
	}{
		"UnknownField":  {`{"nope":1}`, http.StatusBadRequest},
		"NotJSON":       {`{`, http.StatusBadRequest},
		"Array":         {`[]`, http.StatusBadRequest},
		"TrailingData":  {`{} {}`, http.StatusBadRequest},
		"OversizedBody": {huge, http.StatusRequestEntityTooLarge},
	}
	type bad struct{ name, body string }
	endpoints := []struct {
		method, path string
		cases        []bad
	}{
		{"POST", "/v1/devices", []bad{
			{"Empty", `{}`},
			{"MissingRoles", `{"pubkey":"` + key + `"}`},
			{"MissingKey", `{"roles":["payer"]}`},
			{"ZeroKey", `{"pubkey":"` + zeroKey + `","roles":["payer"]}`},
			{"KeyOffCurve", `{"pubkey":"` + offCurve + `","roles":["payer"]}`},
			{"ShortKey", `{"pubkey":"02ab","roles":["payer"]}`},
			{"KeyWrongType", `{"pubkey":5,"roles":["payer"]}`},
			{"RolesWrongType", `{"pubkey":"` + key + `","roles":"payer"}`},
			{"UnknownRole", `{"pubkey":"` + key + `","roles":["admin"]}`},
			{"LongOwner", `{"pubkey":"` + key + `","roles":["payer"],"owner":"` + long(201) + `"}`},
			{"LongKind", `{"pubkey":"` + key + `","roles":["payer"],"kind":"` + long(101) + `"}`},
			{"Null", `null`},
		}},
		{"POST", "/v1/providers", []bad{
			{"Empty", `{}`},
			{"ZeroKey", `{"pubkey":"` + zeroKey + `"}`},
			{"KeyOffCurve", `{"pubkey":"` + offCurve + `"}`},
			{"KeyWrongType", `{"pubkey":true}`},
			{"LongOwner", `{"pubkey":"` + key + `","owner":"` + long(201) + `"}`},
			{"LongKind", `{"pubkey":"` + key + `","kind":"` + long(101) + `"}`},
		}},
		{"POST", "/v1/devices/dev-x/revoke", []bad{
			{"LongReason", `{"reason":"` + long(501) + `"}`},
			{"ReasonWrongType", `{"reason":1}`},
		}},
		{"POST", "/v1/devices/dev-x/rotate", []bad{
			{"Empty", `{}`},
			{"MissingSig", `{"new_pubkey":"` + key + `"}`},
			{"ZeroKey", `{"new_pubkey":"` + zeroKey + `","sig":"` + strings.Repeat("00", 64) + `"}`},
			{"ShortSig", `{"new_pubkey":"` + key + `","sig":"abcd"}`},
		}},
		{"POST", "/v1/devices/dev-x/payout", []bad{
			{"LongAddress", `{"address":"` + long(101) + `"}`},
			{"AddressWrongType", `{"address":[]}`},
		}},
		{"POST", "/v1/devices/dev-x/remove", []bad{
			{"NoForce", `{}`},
			{"ForceFalse", `{"force":false}`},
			{"ForceWrongType", `{"force":"yes"}`},
			{"LongReason", `{"force":true,"reason":"` + long(501) + `"}`},
		}},
		{"POST", "/v1/creds", []bad{
			{"Empty", `{}`},
			{"UnknownScope", `{"scope":"root"}`},
			{"LongLabel", `{"scope":"read-only","label":"` + long(201) + `"}`},
			{"LongDevice", `{"scope":"provider","device":"` + long(65) + `"}`},
			{"DeviceWithoutProviderScope", `{"scope":"read-only","device":"dev-x"}`},
		}},
		{"POST", "/v1/creds/c1/revoke", []bad{{"AnyField", `{"reason":"x"}`}}},
		{"POST", "/v1/webhooks", []bad{
			{"Empty", `{}`},
			{"MissingURL", `{"provider":"dev-x"}`},
			{"LongURL", `{"provider":"dev-x","url":"https://example.com/` + long(2048) + `"}`},
			{"LongProvider", `{"provider":"` + long(65) + `","url":"https://example.com/"}`},
		}},
		{"DELETE", "/v1/webhooks/wh_x", []bad{{"AnyField", `{"force":true}`}}},
		{"POST", "/v1/settlement/run", []bad{{"AnyField", `{"epoch":3}`}}},
		{"POST", "/v1/contracts", []bad{
			{"Empty", `{}`},
			{"OversizedDocument", `{"id":"` + long(1<<20) + `"}`},
		}},
	}
	ctx := context.Background()
	head := func() uint64 {
		es, err := a.reg.Audit(ctx, 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(len(es))
	}
	before := head()
	for _, ep := range endpoints {
		cases := append([]bad(nil), ep.cases...)
		for name, g := range generic {
			if ep.path == "/v1/contracts" && g.status == http.StatusRequestEntityTooLarge {
				continue // its cap is 1 MiB: OversizedDocument
			}
			cases = append(cases, bad{name, g.body})
		}
		for _, c := range cases {
			t.Run(ep.method+strings.ReplaceAll(ep.path, "/", "_")+"/"+c.name, func(t *testing.T) {
				want := http.StatusBadRequest
				if len(c.body) > 64<<10 {
					want = http.StatusRequestEntityTooLarge
				}
				status, body := a.send(t, ep.method, ep.path, c.body)
				if status != want {
					t.Fatalf("status %d (%s), want %d", status, body, want)
				}
			})
		}
	}
	if after := head(); after != before {
		t.Fatalf("audit log grew from %d to %d entries on refused requests", before, after)
	}
	for _, path := range []string{"/v1/devices", "/v1/providers", "/v1/devices/unreadable"} {
		if status, body := a.send(t, "GET", path, ""); status != http.StatusOK {
			t.Fatalf("GET %s after bad bodies: %d %s", path, status, body)
		}
	}
}
