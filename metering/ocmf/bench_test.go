package ocmf

import "testing"

// BenchmarkVerify parses and verifies one signed reading per curve: the
// cost a charger's signed meter value adds before it is billed.
func BenchmarkVerify(b *testing.B) {
	for _, curve := range []string{"secp256r1", "secp384r1", "secp256k1"} {
		b.Run(curve, func(b *testing.B) {
			k := mustKey(b, curve)
			msg := mustRead(b, curve+"-1.ocmf")
			b.ReportAllocs()
			for b.Loop() {
				m, err := Parse(msg)
				if err != nil {
					b.Fatal(err)
				}
				if err := m.Verify(k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
