// Package ocppstation runs charging stations against the OCPP gateway.
// Run drives the node station of the gateway's end-to-end tests
// (ocpp/gateway/m2mbilling/testdata/station: ocpp-rpc in strict mode) and
// collects its answers. Dial connects a station written in Go (Station),
// which needs nothing but Go: the demo charges through it, with readings
// signed as OCMF by a Meter.
package ocppstation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrMissing means node or the pinned ocpp-rpc is not installed; the
// message says how to install it (.ci/deps).
var ErrMissing = errors.New("ocppstation: not installed")

// Config says where the station connects and what it presents.
type Config struct {
	// Dir is the station's directory (with station.js and node_modules).
	Dir string
	// URL is the gateway's endpoint without the station id
	// (wss://host:port/ocpp).
	URL string
	// CAFile is the PEM certificate the station trusts.
	CAFile string
	// Station, Password and Token are its identity, basic-auth password
	// and the idToken it presents.
	Station, Password, Token string
	// Readings are the three OCMF readings (begin, middle, end) it sends.
	Readings []string
	// OnStopWanted is called once the transaction runs; the station then
	// waits for the gateway's RequestStopTransaction.
	OnStopWanted func()
}

// Answers maps each step the station printed to the gateway's answer.
type Answers map[string]map[string]any

// Run runs the station to its end.
func Run(ctx context.Context, cfg Config) (Answers, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("%w: node is missing: run bash .ci/deps", ErrMissing)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "node_modules", "ocpp-rpc", "package.json")); err != nil {
		return nil, fmt.Errorf("%w: ocpp-rpc is missing in %s: run bash .ci/deps (npm ci there)", ErrMissing, cfg.Dir)
	}
	rj, err := json.Marshal(cfg.Readings)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, node, "station.js")
	cmd.Dir = cfg.Dir
	cmd.Env = append(os.Environ(), "OCPP_URL="+cfg.URL, "OCPP_CA="+cfg.CAFile, "OCPP_STATION="+cfg.Station,
		"OCPP_PASSWORD="+cfg.Password, "OCPP_TOKEN="+cfg.Token, "OCPP_READINGS="+string(rj))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ocppstation: %w", err)
	}
	answers := Answers{}
	var bad error
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "stop-wanted" {
			if cfg.OnStopWanted != nil {
				cfg.OnStopWanted()
			}
			continue
		}
		var a struct {
			Step string         `json:"step"`
			Body map[string]any `json:"body"`
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil && bad == nil {
			bad = fmt.Errorf("ocppstation: station printed %q", line)
		}
		answers[a.Step] = a.Body
	}
	if err := cmd.Wait(); err != nil {
		return answers, fmt.Errorf("ocppstation: station: %w\n%s", err, stderr.String())
	}
	return answers, bad
}

// Status is the idTokenInfo status of a step's answer.
func (a Answers) Status(step string) any {
	info, _ := a[step]["idTokenInfo"].(map[string]any)
	return info["status"]
}
