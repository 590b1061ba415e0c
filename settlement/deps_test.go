package settlement

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDependencies keeps the package pure: besides the standard library it
// may import only btcd's script, key and chain types, lnwire and the channel
// package, never a store, bus or RPC client (those belong in adapters such
// as settlement/btcdchain).
func TestDependencies(t *testing.T) {
	allowed := []string{
		"github.com/btcsuite/btcd/btcec/v2",
		"github.com/btcsuite/btcd/btcutil",
		"github.com/btcsuite/btcd/chaincfg",
		"github.com/btcsuite/btcd/txscript",
		"github.com/btcsuite/btcd/wire",
		"github.com/lightningnetwork/lnd/lnwire",
		"github.com/m2mhub/m2mhub/channel",
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
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") {
				continue // standard library
			}
			ok := false
			for _, a := range allowed {
				if path == a || strings.HasPrefix(path, a+"/") {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
