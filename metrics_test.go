package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// requestsMetric is the full name of requestsTotal.
const requestsMetric = "caddy_api_key_requests_total"

// resultLabels lists every value of the result label.
var resultLabels = []string{
	"allowed", "missing", "invalid", "duplicate", "expired", "forbidden", "throttled",
	"rate_limited",
}

// requestCounts returns the values of requestsTotal keyed by
// "<client>/<result>". The counter is shared by every test in the
// process, so tests compare two snapshots rather than absolute values.
func requestCounts(t *testing.T) map[string]float64 {
	t.Helper()
	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registerMetrics(registry))
	families, err := registry.Gather()
	require.NoError(t, err)

	counts := make(map[string]float64)
	for _, family := range families {
		require.Equal(t, requestsMetric, family.GetName())
		for _, metric := range family.GetMetric() {
			labels := make(map[string]string)
			for _, label := range metric.GetLabel() {
				labels[label.GetName()] = label.GetValue()
			}
			counts[labels["client"]+"/"+labels["result"]] = metric.GetCounter().GetValue()
		}
	}
	return counts
}

// countDeltas returns the series whose value changed between two
// snapshots of requestCounts, with the change.
func countDeltas(before, after map[string]float64) map[string]float64 {
	deltas := make(map[string]float64)
	for series, value := range after {
		if delta := value - before[series]; delta != 0 {
			deltas[series] = delta
		}
	}
	return deltas
}

// TestMetricsResults sends one request of each kind and checks that it
// adds one to exactly one series.
func TestMetricsResults(t *testing.T) {
	tests := []struct {
		name     string
		clientIP string
		keys     []string
		series   string
	}{
		{"allowed", "192.0.2.1", []string{mailKey}, "mailserver/allowed"},
		{"missing", "192.0.2.1", nil, "/missing"},
		{"empty", "192.0.2.1", []string{""}, "/missing"},
		{"invalid", "192.0.2.1", []string{"wrong-key-0123456789abcdef"}, "/invalid"},
		{"duplicate", "192.0.2.1", []string{mailKey, mailKey}, "/duplicate"},
		{"expired", "192.0.2.1", []string{scannerKey}, "scanner/expired"},
		{"forbidden", "192.0.2.1", []string{backupKey}, "backup/forbidden"},
		{"rate limited", "192.0.2.1", []string{limitedKey}, "limited/rate_limited"},
		{"throttled", "192.0.2.66", []string{mailKey}, "/throttled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 2, Window: caddy.Duration(time.Minute),
			})
			require.NoError(t, serveFrom(h, "192.0.2.1", limitedKey).err,
				"first request of the rate-limited client")
			failFrom(t, h, "192.0.2.66", 2)
			before := requestCounts(t)

			serveFrom(h, tt.clientIP, tt.keys...)

			assert.Equal(t, map[string]float64{tt.series: 1}, countDeltas(before, requestCounts(t)))
		})
	}
}

// TestMetricsCounterValues reads single series with testutil, the way a
// scrape would see them.
func TestMetricsCounterValues(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{{Client: "metrics-client", Key: mailKey}},
	})
	allowed := requestsTotal.WithLabelValues("metrics-client", "allowed")
	invalid := requestsTotal.WithLabelValues("", "invalid")
	allowedBefore := testutil.ToFloat64(allowed)
	invalidBefore := testutil.ToFloat64(invalid)

	for range 3 {
		require.NoError(t, serveWithKey(h, mailKey).err)
	}
	for range 2 {
		require.Error(t, serveWithKey(h, scannerKey).err)
	}

	assert.Equal(t, 3.0, testutil.ToFloat64(allowed)-allowedBefore)
	assert.Equal(t, 2.0, testutil.ToFloat64(invalid)-invalidBefore)
}

// TestMetricsLabelsHoldNoSecret sends a random wrong key and a forged
// client header, then checks every label value of the counter: none may
// contain either value, results must be known, and clients must be
// configured names or empty.
func TestMetricsLabelsHoldNoSecret(t *testing.T) {
	random := make([]byte, 24)
	_, err := rand.Read(random)
	require.NoError(t, err)
	wrongKey := hex.EncodeToString(random[:12])
	forgedClient := "forged-" + hex.EncodeToString(random[12:])
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 3, Window: caddy.Duration(time.Minute)})

	for _, keys := range [][]string{{wrongKey}, {mailKey}, {wrongKey, mailKey}, {wrongKey}, {wrongKey}} {
		r, _ := newRequestFrom("192.0.2.1")
		r.Header["X-Api-Key"] = keys
		r.Header.Set("X-Api-Client", forgedClient)
		_ = h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))
	}
	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registerMetrics(registry))
	families, err := registry.Gather()
	require.NoError(t, err)

	require.Len(t, families, 1)
	for _, metric := range families[0].GetMetric() {
		for _, label := range metric.GetLabel() {
			value := label.GetValue()
			assert.NotContains(t, value, wrongKey, "label %s", label.GetName())
			assert.NotContains(t, value, forgedClient, "label %s", label.GetName())
			assert.NotContains(t, value, mailKey, "label %s", label.GetName())
			switch label.GetName() {
			case "result":
				assert.Contains(t, resultLabels, value)
			case "client":
				if value != "" {
					assert.NoError(t, checkClientName(value), "client label %q", value)
				}
			default:
				t.Errorf("unexpected label %s", label.GetName())
			}
		}
	}
}

// TestMetricsTwoHandlersOneConfig provisions two handlers with one
// context, as two routes of one config are, and checks that both count
// into the config's registry.
func TestMetricsTwoHandlersOneConfig(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	first := &Handler{Keys: []ClientKey{{Client: "route-one", Key: mailKey}}}
	second := &Handler{Keys: []ClientKey{{Client: "route-two", Key: scannerKey}}}

	require.NoError(t, first.Provision(ctx))
	require.NoError(t, second.Provision(ctx))
	require.NoError(t, serveWithKey(first, mailKey).err)
	require.NoError(t, serveWithKey(second, scannerKey).err)

	families, err := ctx.GetMetricsRegistry().Gather()
	require.NoError(t, err)
	var clients []string
	for _, family := range families {
		if family.GetName() != requestsMetric {
			continue
		}
		for _, metric := range family.GetMetric() {
			for _, label := range metric.GetLabel() {
				if label.GetName() == "client" {
					clients = append(clients, label.GetValue())
				}
			}
		}
	}
	assert.Contains(t, clients, "route-one")
	assert.Contains(t, clients, "route-two")
}

// TestMetricsNewConfigRegistry checks that the counter is registered with
// the registry of each config, and keeps its values, as a reload needs.
func TestMetricsNewConfigRegistry(t *testing.T) {
	h := provisionHandler(t, &Handler{Keys: []ClientKey{{Client: "reloaded", Key: mailKey}}})
	require.NoError(t, serveWithKey(h, mailKey).err)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	reloaded := &Handler{Keys: []ClientKey{{Client: "reloaded", Key: mailKey}}}

	require.NoError(t, reloaded.Provision(ctx))
	require.NoError(t, serveWithKey(reloaded, mailKey).err)

	count, err := testutil.GatherAndCount(ctx.GetMetricsRegistry(), requestsMetric)
	require.NoError(t, err)
	assert.Positive(t, count, "counter missing from the new config's registry")
	assert.GreaterOrEqual(t, testutil.ToFloat64(requestsTotal.WithLabelValues("reloaded", "allowed")), 2.0,
		"counts of the earlier config lost")
}

func TestRegisterMetricsTwice(t *testing.T) {
	registry := prometheus.NewPedanticRegistry()

	first := registerMetrics(registry)
	second := registerMetrics(registry)

	assert.NoError(t, first)
	assert.NoError(t, second)
}

func TestRegisterMetricsNilRegistry(t *testing.T) {
	assert.NoError(t, registerMetrics(nil))
}

// TestRegisterMetricsConflict checks that a different collector under the
// same name stops provisioning with an error, instead of being taken for
// this handler's counter.
func TestRegisterMetricsConflict(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	conflicting := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: requestsMetric,
		Help: "Another collector with the same name.",
	}, []string{"route"})
	require.NoError(t, ctx.GetMetricsRegistry().Register(conflicting))
	h := &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}}

	err := h.Provision(ctx)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "registering metrics")
	assert.NotContains(t, err.Error(), mailKey)
}

// TestMetricsHelpListsResults checks that the counter's help text names
// every result label value, since it is the only documentation a scrape
// shows.
func TestMetricsHelpListsResults(t *testing.T) {
	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registerMetrics(registry))
	h := newMailHandler(t)
	serveWithKey(h, mailKey)
	families, err := registry.Gather()
	require.NoError(t, err)
	require.NotEmpty(t, families)

	help := families[0].GetHelp()

	for _, result := range resultLabels {
		assert.Contains(t, help, result)
	}
}

// TestMetricsChainedUnknownKey checks that a second api_key handler that
// does not know the key an earlier one accepted counts its rejection as
// invalid, like every other rejection.
func TestMetricsChainedUnknownKey(t *testing.T) {
	h := newMailHandler(t)
	r, _ := newRequestFrom("192.0.2.1")
	caddyhttp.SetVar(r.Context(), authenticatedVar,
		&authentication{digest: sha256.Sum256([]byte(backupKey)), client: "backup"})
	before := requestCounts(t)

	err := h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

	assert.ErrorIs(t, err, errKeyInvalid)
	assert.Equal(t, map[string]float64{"/invalid": 1}, countDeltas(before, requestCounts(t)))
}

// TestRejectionKindsIndexed checks that every rejection's index is its
// position in rejectionKinds and that no two kinds share a reason, since
// both key the counters and the summary.
func TestRejectionKindsIndexed(t *testing.T) {
	reasons := make(map[string]bool)
	for i, kind := range rejectionKinds {
		assert.Equal(t, i, kind.index, "index of %s", kind.reason)
		assert.False(t, reasons[kind.reason], "reason %s used twice", kind.reason)
		reasons[kind.reason] = true
		assert.Contains(t, resultLabels, kind.reason)
	}
}
