package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// findBinary locates the btcd executable. The order is chosen so that an
// installed hubd finds the btcd shipped beside it, an operator can put one on
// PATH, and `go test` / `go run` inside the module fall back to the version
// pinned as a tool in go.mod, which is the one the project is tested against.
func findBinary(ctx context.Context, explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoBinary, err)
		}
		return explicit, nil
	}

	if exe, err := os.Executable(); err == nil {
		candidate := filepath.Join(filepath.Dir(exe), "btcd")
		if fi, err := os.Stat(candidate); err == nil && fi.Mode().IsRegular() {
			return candidate, nil
		}
	}

	if p, err := exec.LookPath("btcd"); err == nil {
		return p, nil
	}

	// `go tool -n` builds the tool into the build cache if needed (about
	// 30 s the first time) and prints its path without running it. It only
	// works when the working directory is inside the module.
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", "btcd")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: go tool -n btcd: %w: %s", ErrNoBinary,
			err, strings.TrimSpace(stderr.String()))
	}
	path := strings.TrimSpace(string(out))
	if path == "" {
		return "", fmt.Errorf("%w: go tool -n btcd printed nothing", ErrNoBinary)
	}
	if _, err := os.Stat(path); err != nil {
		return "", errors.Join(ErrNoBinary, err)
	}
	return path, nil
}
