package httpapi_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/storetest"
)

// send makes one request with the root token and returns the status and
// the answer's body.
func (a *fullAPI) send(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	return a.sendAs(t, token, method, path, body)
}

// sendAs is send with the credential tok.
func (a *fullAPI) sendAs(t *testing.T, tok, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
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

// TestWebhookMetadataURLRefused registers a provider's webhook to the
// cloud metadata address: refused, even where private addresses are
// allowed (as this API's are, for its loopback tests).
func TestWebhookMetadataURLRefused(t *testing.T) {
	a := newFullAPI(t)
	d, err := a.reg.Enrol(context.Background(), registry.EnrolRequest{Key: storetest.NewKey(t), Roles: []hub.Role{hub.RoleProvider}}, "operator")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "http://[fe80::1]:80/"} {
		status, body := a.send(t, "POST", "/v1/webhooks", `{"provider":"`+d.ID+`","url":"`+u+`"}`)
		if status != http.StatusBadRequest {
			t.Fatalf("webhook to %s: status %d (%s), want 400", u, status, body)
		}
	}
	if status, body := a.send(t, "GET", "/v1/webhooks", ""); status != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Fatalf("webhooks after refusals: %d %s, want none", status, body)
	}
}

// TestReceiptProofHidesOthers asks, with a provider credential, for the
// proof of another provider's receipt and of a receipt that does not
// exist: the answers are the same, so the credential learns nothing of
// receipts not naming it. The provider named in it gets the proof.
func TestReceiptProofHidesOthers(t *testing.T) {
	a := newFullAPI(t)
	_, ownTok := a.addCred(t, httpapi.ProviderScope("gantry-7"))
	_, otherTok := a.addCred(t, httpapi.ProviderScope("meter-3"))
	var receiptID string
	for id := range mustFakeSettlement(t).receipts {
		receiptID = hex.EncodeToString(id[:])
		break
	}
	proof := func(id string) string { return "/v1/receipts/" + id + "/proof" }
	st1, b1 := a.sendAs(t, otherTok, "GET", proof(receiptID), "")
	st2, b2 := a.sendAs(t, otherTok, "GET", proof(strings.Repeat("ab", 32)), "")
	if st1 != http.StatusNotFound || st1 != st2 || b1 != b2 {
		t.Fatalf("another's receipt: %d %s; no receipt: %d %s; want the same 404", st1, b1, st2, b2)
	}
	if st, b := a.sendAs(t, ownTok, "GET", proof(receiptID), ""); st != http.StatusOK {
		t.Fatalf("own receipt: %d %s", st, b)
	}
}
