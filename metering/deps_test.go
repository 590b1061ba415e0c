package metering

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDependencies keeps the package pure: besides the standard library it
// may import only btcec (and its schnorr package), shopspring/decimal and
// the contracts package, never a bus, store or RPC client.
func TestDependencies(t *testing.T) {
	allowed := map[string]bool{
		"github.com/btcsuite/btcd/btcec/v2":         true,
		"github.com/btcsuite/btcd/btcec/v2/schnorr": true,
		"github.com/shopspring/decimal":             true,
		"github.com/m2mhub/m2mhub/contracts":        true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(strings.SplitN(path, "/", 2)[0], ".") && !allowed[path] {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
