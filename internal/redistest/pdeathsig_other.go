//go:build !linux

package redistest

import "os/exec"

// setParentDeathSignal does nothing where the kernel offers no parent-death
// signal; the test cleanup still stops the server.
func setParentDeathSignal(cmd *exec.Cmd) {}
