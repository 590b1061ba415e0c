package deptest_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// maxShare bounds the share of the module's non-test Go lines one package
// may hold: past it, the package is several subsystems that want their own
// packages (docs/architecture.md).
const maxShare = 0.12

// TestPackageShare fails when one package holds more than maxShare of the
// module's non-test Go lines, and logs the largest packages with -v.
func TestPackageShare(t *testing.T) {
	root := filepath.Join("..", "..")
	lines := map[string]int{}
	total := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "wip", "node_modules", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n := bytes.Count(b, []byte("\n"))
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		lines[filepath.ToSlash(rel)] += n
		total += n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 {
		t.Fatal("no Go lines found")
	}
	pkgs := make([]string, 0, len(lines))
	for p := range lines {
		pkgs = append(pkgs, p)
	}
	sort.Slice(pkgs, func(i, j int) bool { return lines[pkgs[i]] > lines[pkgs[j]] })
	for i, p := range pkgs {
		share := float64(lines[p]) / float64(total)
		if i < 10 {
			t.Logf("%5.1f%% %6d %s", 100*share, lines[p], p)
		}
		if share > maxShare {
			t.Errorf("%s holds %.1f%% of the module's %d non-test Go lines, more than %.0f%%", p, 100*share, total, 100*maxShare)
		}
	}
}
