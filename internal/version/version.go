// Package version names the build a binary came from, for --version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// String returns "name version (revision) goX.Y.Z": the main module's
// version as go build recorded it ("(devel)" for a build in the source
// tree), the VCS revision when the build recorded one, and the toolchain.
func String(name string) string {
	v, rev := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " (" + s.Value[:12] + ")"
			}
		}
	}
	return fmt.Sprintf("%s %s%s %s", name, v, rev, runtime.Version())
}
