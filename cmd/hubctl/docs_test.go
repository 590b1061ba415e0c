package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	flags "github.com/jessevdk/go-flags"
)

// docCommands returns every hubctl command line in the sh blocks of the
// README and docs/*.md, with the synopsis notation expanded ("a | b" into
// two lines, "[--x …]" into its contents) and "$H" replaced by hubctl.
func docCommands(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	out := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inSh := false
		for i, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "```") {
				inSh = strings.HasPrefix(line, "```sh")
				continue
			}
			if !inSh || strings.HasPrefix(strings.TrimSpace(line), "H=") {
				continue
			}
			if c := strings.Index(line, " #"); c >= 0 {
				line = line[:c]
			}
			line = strings.ReplaceAll(line, "$H ", "hubctl ")
			for _, stmt := range strings.Split(line, ";") {
				k := strings.Index(stmt, "hubctl ")
				if k < 0 {
					continue
				}
				stmt = strings.NewReplacer("[", "", "]", "").Replace(stmt[k:])
				alts := strings.Split(stmt, " | ")
				words := strings.Fields(alts[0])
				where := filepath.Base(f) + ":" + strconv.Itoa(i+1)
				out[where] = append(out[where], alts[0])
				for _, alt := range alts[1:] {
					// "hubctl device list | show ID": the group is
					// the first alternative's.
					if len(words) >= 2 {
						out[where] = append(out[where], words[0]+" "+words[1]+" "+strings.TrimSpace(alt))
					}
				}
			}
		}
	}
	return out
}

// placeholder values for the words docs use in synopses, typed where the
// flag is.
var placeholders = strings.NewReplacer(" N ", " 1 ", " N\n", " 1\n")

// TestDocCommandsParse checks every hubctl command the docs show against
// hubctl's grammar: the command exists, every flag exists with a value of
// its type, required arguments are given. A doc naming a flag or command
// hubctl does not have fails here.
func TestDocCommandsParse(t *testing.T) {
	cmds := docCommands(t)
	if len(cmds) < 10 {
		t.Fatalf("only %d command lines found in the docs", len(cmds))
	}
	n := 0
	for where, lines := range cmds {
		for _, line := range lines {
			n++
			args := strings.Fields(placeholders.Replace(line + "\n"))[1:]
			a := &app{out: os.Stdout, ctx: t.Context()}
			p := a.parser()
			// Parse only: the command is found and its options
			// checked, but not run.
			p.CommandHandler = func(flags.Commander, []string) error { return nil }
			if _, err := p.ParseArgs(args); err != nil {
				t.Errorf("%s: %q does not parse: %v", where, line, err)
			}
		}
	}
	t.Logf("%d documented hubctl commands parse", n)
}

// TestDocsUseDefaultPorts checks that the docs' local URLs use hubd's
// default ports (devices 9736, admin 9737, metrics 9738, NATS 9739) or
// the other services' own.
func TestDocsUseDefaultPorts(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md", "../../docs/openapi.yaml")
	known := map[string]bool{"9736": true, "9737": true, "9738": true, "9739": true, "4222": true, "6379": true, "18334": true, "18443": true, "8080": true, "0": true, "9747": true, "3000": true, "9090": true} // 9747: compose's second hubd; 3000, 9090: its Grafana and Prometheus
	re := regexp.MustCompile(`(?:127\.0\.0\.1|localhost):(\d+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !known[m[1]] {
				t.Errorf("%s mentions %s: not a default port", filepath.Base(f), m[0])
			}
		}
	}
}
