package contracts

import (
	"path/filepath"
	"testing"
)

// BenchmarkPrice prices each example usage under its example contract: the
// per-event cost the hub pays on its charging path.
func BenchmarkPrice(b *testing.B) {
	for _, kind := range []string{"toll", "bandwidth", "energy", "ev_charging", "conditional_release"} {
		b.Run(kind, func(b *testing.B) {
			c := MustExample(b, kind)
			u, err := ParseUsage(mustRead(b, filepath.Join("testdata", "usage", kind+".json")))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Price(c, u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParse parses the EV example, the largest document.
func BenchmarkParse(b *testing.B) {
	doc := mustRead(b, filepath.Join("testdata", "examples", "ev_charging.json"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOCPI parses the example OCPI tariff file as `hubctl contract
// publish` does, and prices the example session under it.
func BenchmarkOCPI(b *testing.B) {
	file := mustRead(b, filepath.Join("testdata", "ocpi", "tariff.json"))
	env := OCPIEnvelope{RateMsatPerUnit: MustDec("1000000"), TimeZone: "Europe/Berlin"}
	b.Run("Parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseOCPI(file, env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Price", func(b *testing.B) {
		c, err := ParseOCPI(file, env)
		if err != nil {
			b.Fatal(err)
		}
		u, err := ParseUsage(mustRead(b, filepath.Join("testdata", "ocpi", "usage.json")))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Price(c, u); err != nil {
				b.Fatal(err)
			}
		}
	})
}
