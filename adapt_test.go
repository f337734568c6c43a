package apikey

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

var updateGolden = flag.Bool("update", false,
	"rewrite the golden JSON files in testdata with the caddyfile adapter's output")

// adaptGolden adapts the Caddyfile input and compares the indented JSON
// with testdata/<name>.json, or rewrites that file under -update. It
// returns the adapted JSON and the adapter's warnings.
func adaptGolden(t *testing.T, name, filename string, input []byte) ([]byte, []caddyconfig.Warning) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	require.NotNil(t, adapter, "caddyfile adapter not registered")

	adapted, warnings, err := adapter.Adapt(input, map[string]any{"filename": filename})
	require.NoError(t, err)

	var indented bytes.Buffer
	require.NoError(t, json.Indent(&indented, adapted, "", "\t"))
	indented.WriteByte('\n')

	goldenPath := filepath.Join("testdata", name+".json")
	if *updateGolden {
		require.NoError(t, os.WriteFile(goldenPath, indented.Bytes(), 0o644))
	}
	golden, err := os.ReadFile(goldenPath)
	require.NoError(t, err, "run 'go test -run %s -update .' to create it", t.Name())
	assert.Equal(t, string(golden), indented.String(),
		"adapted JSON differs from %s; rerun with -update if the change is intended", goldenPath)
	return adapted, warnings
}

// handlerNames returns the "handler" values of an adapted config in
// document order, which is the order in which Caddy runs the handlers of
// one route chain.
func handlerNames(t *testing.T, config []byte) []string {
	t.Helper()
	var parsed any
	require.NoError(t, json.Unmarshal(config, &parsed))
	var names []string
	var walk func(node any)
	walk = func(node any) {
		switch value := node.(type) {
		case map[string]any:
			if name, ok := value["handler"].(string); ok {
				names = append(names, name)
			}
			keys := make([]string, 0, len(value))
			for key := range value {
				keys = append(keys, key)
			}
			slices.Sort(keys)
			for _, key := range keys {
				walk(value[key])
			}
		case []any:
			for _, item := range value {
				walk(item)
			}
		}
	}
	walk(parsed)
	return names
}

// assertRunsBefore checks that each occurrence of second in names has an
// occurrence of first of its own before it.
func assertRunsBefore(t *testing.T, names []string, first, second string) {
	t.Helper()
	require.Contains(t, names, first)
	require.Contains(t, names, second)
	unmatched := 0
	for i, name := range names {
		switch name {
		case first:
			unmatched++
		case second:
			assert.Positive(t, unmatched, "%s at position %d has no %s before it in %v",
				second, i, first, names)
			unmatched = max(unmatched-1, 0)
		}
	}
}

func TestAdaptGolden(t *testing.T) {
	tests := []struct {
		// input names testdata/<input>.caddyfile and golden names
		// testdata/<golden>.json.
		input, golden string
		// before and after name two handlers, the first of which must run
		// first in every route chain.
		before, after string
	}{
		{"quickstart", "quickstart", "api_key", "reverse_proxy"},
		{"quickstart_reversed", "quickstart", "api_key", "reverse_proxy"},
		{"shorthand", "shorthand", "api_key", "reverse_proxy"},
		{"handle", "handle", "api_key", "reverse_proxy"},
		{"handle_path", "handle_path", "api_key", "reverse_proxy"},
		{"basic_auth", "basic_auth", "api_key", "authentication"},
		{"keys_file", "keys_file", "api_key", "reverse_proxy"},
		{"allow", "allow", "api_key", "reverse_proxy"},
		{"expires", "expires", "api_key", "reverse_proxy"},
		{"hashed", "hashed", "api_key", "reverse_proxy"},
		{"throttle", "throttle", "api_key", "reverse_proxy"},
		{"rate_limit", "rate_limit", "api_key", "reverse_proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.input, func(t *testing.T) {
			input, err := os.ReadFile(filepath.Join("testdata", tt.input+".caddyfile"))
			require.NoError(t, err)

			adapted, warnings := adaptGolden(t, tt.golden, tt.input+".caddyfile", input)

			assert.Empty(t, warnings)
			assertRunsBefore(t, handlerNames(t, adapted), tt.before, tt.after)
		})
	}
}

// TestAdaptRoute checks that inside route the handlers keep the order in
// which they are written, so api_key written after reverse_proxy runs
// after it.
func TestAdaptRoute(t *testing.T) {
	input, err := os.ReadFile(filepath.Join("testdata", "route.caddyfile"))
	require.NoError(t, err)

	adapted, warnings := adaptGolden(t, "route", "route.caddyfile", input)

	assert.Empty(t, warnings)
	assert.Equal(t,
		[]string{"subroute", "subroute", "api_key", "reverse_proxy", "subroute", "reverse_proxy", "api_key"},
		handlerNames(t, adapted))
}

// TestAdaptExample adapts Caddyfile.example with GATEWAY_ADDRESS and
// SCANNER_UPSTREAM unset, so the golden file shows the defaults. The
// adapter substitutes {$NAME} while parsing, and {env.NAME} stays a
// placeholder in the JSON.
func TestAdaptExample(t *testing.T) {
	unsetEnv(t, "GATEWAY_ADDRESS")
	unsetEnv(t, "SCANNER_UPSTREAM")
	t.Setenv("MAILSERVER_API_KEY", mailKey)
	input, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)

	adapted, _ := adaptGolden(t, "example", "Caddyfile.example", input)

	assert.NotContains(t, string(adapted), mailKey)
	assert.Contains(t, string(adapted), "{env.MAILSERVER_API_KEY}")
	assert.Contains(t, string(adapted), "scanner.example.com")
	assert.Contains(t, string(adapted), "django:8000")
	assertRunsBefore(t, handlerNames(t, adapted), "api_key", "reverse_proxy")
}

// TestAdaptExampleEnv adapts Caddyfile.example with the {$NAME} variables
// set and checks that their values, not the defaults, reach the JSON.
func TestAdaptExampleEnv(t *testing.T) {
	t.Setenv("GATEWAY_ADDRESS", "gateway.example.net")
	t.Setenv("SCANNER_UPSTREAM", "10.0.0.5:8000")
	input, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)
	adapter := caddyconfig.GetAdapter("caddyfile")
	require.NotNil(t, adapter)

	adapted, _, err := adapter.Adapt(input, map[string]any{"filename": "Caddyfile.example"})

	require.NoError(t, err)
	assert.Contains(t, string(adapted), "gateway.example.net")
	assert.Contains(t, string(adapted), "10.0.0.5:8000")
	assert.NotContains(t, string(adapted), "scanner.example.com")
	assert.NotContains(t, string(adapted), "django:8000")
}

// TestExampleFormatted checks that Caddyfile.example is in the form that
// 'caddy fmt' writes. Otherwise the adapter warns on every start that the
// input is not formatted.
func TestExampleFormatted(t *testing.T) {
	input, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)

	assert.Equal(t, string(caddyfile.Format(input)), string(input),
		"Caddyfile.example differs from the output of 'caddy fmt'")
}
