package apikey

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-apikey/apikey/bench/stats"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
)

// The benchmarks below measure ServeHTTP of the api_key handler and of the
// alternatives a user would configure instead. scripts/bench.sh runs them
// with -count=6 and compares them with benchstat, and BENCHMARKS.md records
// the results. Sub-benchmark names are key=value pairs, so that, for
// example, 'benchstat -col /keys' puts 1, 100 and 10,000 keys side by side.
//
// Every request is prepared once, the way Caddy's server prepares it before
// its handlers run, and reused: the per-request work that Caddy does for
// every handler alike (a new replacer, the context values) is left out.

const (
	// benchPassword is the basic_auth password, and benchPasswordHash its
	// bcrypt hash at cost 14, printed by 'caddy hash-password' of
	// Caddy v2.11.9.
	benchPassword     = "bench-password-7Qx2"
	benchPasswordHash = "$2a$14$XLu6OV04mufLhJGe4vfymO2SpOHmMwuHESCB6mJy8f4tuN/1dtykq"

	// benchClientIP is the client address of every request that is not
	// meant to be throttled.
	benchClientIP = "192.0.2.30"
)

// benchKeyCounts are the numbers of configured keys compared. 8 and 9
// bracket the largest Go map that the runtime stores as a single group and
// looks up on a shorter path (Go 1.24 and later), the only step in lookup
// cost that the keyring's index shows.
var benchKeyCounts = []int{1, 8, 9, 100, 10000}

// benchKey returns the i-th configured key: 32 bytes in base64, 44
// characters, as 'openssl rand -base64 32' prints them. Negative i gives
// keys that are never configured.
func benchKey(i int) string {
	digest := sha256.Sum256([]byte("bench-key-" + strconv.Itoa(i)))
	return base64.StdEncoding.EncodeToString(digest[:])
}

// benchNearMiss returns key with its last character changed.
func benchNearMiss(key string) string {
	last := key[len(key)-1]
	replacement := byte('A')
	if last == 'A' {
		replacement = 'B'
	}
	return key[:len(key)-1] + string(replacement)
}

// benchConfig selects a provisioned handler. Handlers with the same config
// are shared by the sub-benchmarks, except that instance separates those
// whose throttling state would disturb each other.
type benchConfig struct {
	keys     int
	throttle bool
	instance string
}

var (
	benchHandlersMu sync.Mutex
	benchHandlers   = make(map[benchConfig]*Handler)
)

// benchHandler returns a provisioned handler with config.keys keys and the
// default throttle or none. The keys are given as sha256: digests, so that
// provisioning logs no warning about literal keys. The key of the valid
// requests is benchKey(config.keys - 1).
func benchHandler(b *testing.B, config benchConfig) *Handler {
	b.Helper()
	benchHandlersMu.Lock()
	defer benchHandlersMu.Unlock()
	if h, found := benchHandlers[config]; found {
		return h
	}

	h := &Handler{Keys: make([]ClientKey, config.keys)}
	for i := range h.Keys {
		digest := sha256.Sum256([]byte(benchKey(i)))
		h.Keys[i] = ClientKey{
			Client: fmt.Sprintf("client-%05d", i),
			Key:    digestPrefix + hex.EncodeToString(digest[:]),
		}
	}
	if !config.throttle {
		h.Throttle = &FailureThrottle{Disabled: true}
	}
	if err := provisionQuietly(h); err != nil {
		b.Fatalf("provisioning %d keys: %v", config.keys, err)
	}
	benchHandlers[config] = h
	return h
}

// provisionQuietly provisions h with a bare Caddy context, whose logger is
// a development logger that writes every level to stderr. The logger is
// created during Provision, so stderr points to /dev/null meanwhile: the
// provisioning line alone lists every client name. Afterwards the
// rejection logger is replaced by one at Caddy's default level, Info, so
// that the debug log of each rejection costs what it costs in production.
// The context is never cancelled: the handler lives as long as the process.
func provisionQuietly(h *Handler) error {
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	stderr := os.Stderr
	os.Stderr = devNull
	defer func() { os.Stderr = stderr }()

	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		return err
	}
	infoLogger := zap.New(zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	h.protection.sampledLogger = sampledLogger(infoLogger)
	return nil
}

// benchWriter is a ResponseWriter that keeps only its header map.
type benchWriter struct {
	header http.Header
}

func (w *benchWriter) Header() http.Header         { return w.header }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(int)             {}

// benchNext is a next handler that does nothing.
type benchNext struct{}

func (benchNext) ServeHTTP(http.ResponseWriter, *http.Request) error { return nil }

// countingNext counts the requests that reach it.
type countingNext struct {
	calls int
}

func (n *countingNext) ServeHTTP(http.ResponseWriter, *http.Request) error {
	n.calls++
	return nil
}

// benchRequest returns a GET request from benchClientIP, prepared by
// caddyhttp.PrepareRequest as Caddy's server prepares it, with the given
// values of header, and the writer it was prepared with.
func benchRequest(header string, values []string) (*http.Request, *benchWriter) {
	r := httptest.NewRequest(http.MethodGet, "http://localhost/scanner/scan", nil)
	r.RemoteAddr = benchClientIP + ":41234"
	if values != nil {
		r.Header[header] = values
	}
	w := &benchWriter{header: make(http.Header)}
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, new(caddyhttp.Server)), w
}

// statusOfCall returns the status that Caddy would send for a handler
// result: the handler error's status, or 200 if next was called.
func statusOfCall(err error, next *countingNext) int {
	var handlerErr caddyhttp.HandlerError
	switch {
	case errors.As(err, &handlerErr):
		return handlerErr.StatusCode
	case err != nil:
		return http.StatusInternalServerError
	case next.calls == 1:
		return http.StatusOK
	}
	return 0
}

// benchmarkHandler measures handler.ServeHTTP on a request with the given
// values of header, after checking once that it gets wantStatus. Each
// iteration sets the header again, because an admitted request loses it.
func benchmarkHandler(b *testing.B, handler caddyhttp.MiddlewareHandler, header string,
	values []string, wantStatus int,
) {
	b.Helper()
	r, w := benchRequest(header, values)
	next := new(countingNext)
	if got := statusOfCall(handler.ServeHTTP(w, r, next), next); got != wantStatus {
		b.Fatalf("status %d, want %d", got, wantStatus)
	}

	b.ReportAllocs()
	for b.Loop() {
		if values != nil {
			r.Header[header] = values
		}
		_ = handler.ServeHTTP(w, r, benchNext{})
	}
}

// BenchmarkServeHTTP measures the four kinds of request with 1, 100 and
// 10,000 configured keys. Valid requests are measured with the default
// throttle (on) and without. Rejected requests are measured without a
// throttle, which leaves the pure key check. From one address the default
// throttle would turn them into 429s after 100 failures, the path that
// BenchmarkServeHTTPThrottle measures.
func BenchmarkServeHTTP(b *testing.B) {
	cases := []struct {
		name       string
		throttle   bool
		values     func(validKey string) []string
		wantStatus int
	}{
		{"valid", true, func(key string) []string { return []string{key} }, http.StatusOK},
		{"valid", false, func(key string) []string { return []string{key} }, http.StatusOK},
		{"wrong", false, func(string) []string { return []string{benchKey(-1)} }, http.StatusUnauthorized},
		{"missing", false, func(string) []string { return nil }, http.StatusUnauthorized},
		{"duplicate", false, func(key string) []string { return []string{key, key} }, http.StatusUnauthorized},
	}
	for _, c := range cases {
		for _, keys := range benchKeyCounts {
			name := fmt.Sprintf("case=%s/throttle=%s/keys=%d", c.name, throttleLabel(c.throttle), keys)
			b.Run(name, func(b *testing.B) {
				h := benchHandler(b, benchConfig{keys: keys, throttle: c.throttle})
				benchmarkHandler(b, h, h.keyHeader, c.values(benchKey(keys-1)), c.wantStatus)
			})
		}
	}
}

func throttleLabel(on bool) string {
	if on {
		return "default"
	}
	return "off"
}

// BenchmarkServeHTTPMiss compares wrong keys that differ from the
// configured key in the last character (near), in every character (far),
// and in length (short: 24 bytes, long: 88 bytes), without a throttle.
func BenchmarkServeHTTPMiss(b *testing.B) {
	for _, keys := range []int{1, 10000} {
		validKey := benchKey(keys - 1)
		misses := []struct {
			name string
			key  string
		}{
			{"near", benchNearMiss(validKey)},
			{"far", benchKey(-1)},
			{"short", benchKey(-2)[:24]},
			{"long", benchKey(-3) + benchKey(-4)},
		}
		for _, miss := range misses {
			b.Run(fmt.Sprintf("keys=%d/miss=%s", keys, miss.name), func(b *testing.B) {
				h := benchHandler(b, benchConfig{keys: keys})
				benchmarkHandler(b, h, h.keyHeader, []string{miss.key}, http.StatusUnauthorized)
			})
		}
	}
}

// BenchmarkServeHTTPThrottle measures wrong keys with the default throttle.
// From one address (one-address), every request after the 100th within a
// minute gets 429 without a key check, which is the path measured. From
// 20,000 addresses in turn (many-addresses), twice as many as the throttle
// tracks, every request is checked, gets 401, and is recorded under a new
// entry that evicts the least recently used one.
func BenchmarkServeHTTPThrottle(b *testing.B) {
	b.Run("from=one-address", func(b *testing.B) {
		h := benchHandler(b, benchConfig{keys: 1, throttle: true, instance: "one-address"})
		r, _ := benchRequest(h.keyHeader, []string{benchKey(-1)})
		for range DefaultMaxFailures {
			_ = h.ServeHTTP(&benchWriter{header: make(http.Header)}, r, benchNext{})
		}
		benchmarkHandler(b, h, h.keyHeader, []string{benchKey(-1)}, http.StatusTooManyRequests)
	})

	b.Run("from=many-addresses", func(b *testing.B) {
		h := benchHandler(b, benchConfig{keys: 1, throttle: true, instance: "many-addresses"})
		values := []string{benchKey(-1)}
		r, w := benchRequest(h.keyHeader, values)
		vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)

		// The addresses are boxed once, so that storing one in the vars
		// map allocates nothing.
		addresses := make([]any, 2*DefaultMaxTrackedAddresses)
		for i := range addresses {
			addresses[i] = fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
		}
		for _, address := range addresses {
			vars[caddyhttp.ClientIPVarKey] = address
			_ = h.ServeHTTP(w, r, benchNext{})
		}
		next := new(countingNext)
		if got := statusOfCall(h.ServeHTTP(w, r, next), next); got != http.StatusUnauthorized {
			b.Fatalf("status %d, want 401", got)
		}

		b.ReportAllocs()
		i := 0
		for b.Loop() {
			vars[caddyhttp.ClientIPVarKey] = addresses[i]
			i = (i + 1) % len(addresses)
			r.Header[h.keyHeader] = values
			_ = h.ServeHTTP(w, r, benchNext{})
		}
	})
}

// headerMatcherGate is the plain-Caddyfile recipe as one handler:
//
//	@denied not header X-API-KEY {env.BENCH_API_KEY}
//	respond @denied 401
//
// Caddy evaluates the matcher, then runs the static response or the next
// handler. The route machinery around them is left out.
type headerMatcherGate struct {
	matcher caddyhttp.MatchHeader
	deny    caddyhttp.StaticResponse
}

func (g headerMatcherGate) ServeHTTP(w http.ResponseWriter, r *http.Request,
	next caddyhttp.Handler,
) error {
	matched, err := g.matcher.MatchWithError(r)
	if err != nil {
		return err
	}
	if !matched {
		return g.deny.ServeHTTP(w, r, next)
	}
	return next.ServeHTTP(w, r)
}

// newHeaderMatcherGate parses the header matcher from Caddyfile text, as
// the Caddyfile adapter does, with the key in the BENCH_API_KEY variable.
func newHeaderMatcherGate(b *testing.B, key string) headerMatcherGate {
	b.Helper()
	b.Setenv("BENCH_API_KEY", key)
	var gate headerMatcherGate
	dispenser := caddyfile.NewTestDispenser("header X-API-KEY {env.BENCH_API_KEY}")
	if err := gate.matcher.UnmarshalCaddyfile(dispenser); err != nil {
		b.Fatalf("parsing the header matcher: %v", err)
	}
	gate.deny.StatusCode = caddyhttp.WeakString(strconv.Itoa(http.StatusUnauthorized))
	return gate
}

// benchBasicAuth is basic_auth with one account and the hash cache on, as
// the Caddyfile directive sets it up.
var benchBasicAuth = sync.OnceValues(func() (*caddyauth.Authentication, error) {
	provider, err := json.Marshal(map[string]any{
		"hash":       map[string]string{"algorithm": "bcrypt"},
		"accounts":   []map[string]string{{"username": "bench", "password": benchPasswordHash}},
		"hash_cache": map[string]any{},
	})
	if err != nil {
		return nil, err
	}
	auth := &caddyauth.Authentication{
		ProvidersRaw: caddy.ModuleMap{"http_basic": provider},
	}
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	return auth, auth.Provision(ctx)
})

// basicAuthorization returns the Authorization value for the bench account.
func basicAuthorization(password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("bench:"+password))
}

// BenchmarkAlternatives measures api_key next to the header matcher with a
// placeholder and basic_auth, on requests with the right and a wrong
// secret. api_key runs with its default throttle for valid keys and
// without for wrong ones, because the alternatives have none. The first
// request of each basic_auth case fills its hash cache with one bcrypt
// comparison, so the loop measures a warm cache.
func BenchmarkAlternatives(b *testing.B) {
	validKey := benchKey(0)
	wrongKey := benchKey(-1)
	b.Run("auth=api_key/case=valid", func(b *testing.B) {
		h := benchHandler(b, benchConfig{keys: 1, throttle: true})
		benchmarkHandler(b, h, h.keyHeader, []string{validKey}, http.StatusOK)
	})
	b.Run("auth=api_key/case=wrong", func(b *testing.B) {
		h := benchHandler(b, benchConfig{keys: 1})
		benchmarkHandler(b, h, h.keyHeader, []string{wrongKey}, http.StatusUnauthorized)
	})

	b.Run("auth=header_matcher/case=valid", func(b *testing.B) {
		gate := newHeaderMatcherGate(b, validKey)
		benchmarkHandler(b, gate, "X-Api-Key", []string{validKey}, http.StatusOK)
	})
	b.Run("auth=header_matcher/case=wrong", func(b *testing.B) {
		gate := newHeaderMatcherGate(b, validKey)
		// The static response writes 401 itself and returns no error.
		benchmarkHandler(b, gate, "X-Api-Key", []string{wrongKey}, 0)
	})

	for _, c := range []struct {
		name       string
		password   string
		wantStatus int
	}{
		{"valid", benchPassword, http.StatusOK},
		{"wrong", benchPassword + "-wrong", http.StatusUnauthorized},
	} {
		b.Run("auth=basic_auth/case="+c.name, func(b *testing.B) {
			auth, err := benchBasicAuth()
			if err != nil {
				b.Fatalf("provisioning basic_auth: %v", err)
			}
			benchmarkHandler(b, auth, "Authorization",
				[]string{basicAuthorization(c.password)}, c.wantStatus)
		})
	}
}

// BenchmarkFloor measures parts of the valid path. They are one SHA-256 of
// a 44-byte key, the digest plus one map lookup (the floor the keyring
// aims at), and the keyring's whole lookup. The last part is the header
// map assignment that every ServeHTTP benchmark above makes per iteration.
func BenchmarkFloor(b *testing.B) {
	key := benchKey(0)
	h := benchHandler(b, benchConfig{keys: 1})

	b.Run("op=sha256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = sha256.Sum256([]byte(key))
		}
	})
	b.Run("op=sha256+map", func(b *testing.B) {
		index := map[uint64]int{indexOf(sha256.Sum256([]byte(key))): 0}
		b.ReportAllocs()
		for b.Loop() {
			digest := sha256.Sum256([]byte(key))
			_ = index[binary.BigEndian.Uint64(digest[:8])]
		}
	})
	b.Run("op=lookup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = h.keys.lookup(key)
		}
	})
	// One SHA-256 block holds up to 55 bytes of message, so the long miss
	// of BenchmarkServeHTTPMiss needs two.
	for _, length := range []int{len(key), 2 * len(key)} {
		b.Run(fmt.Sprintf("op=sha256-stack/bytes=%d", length), func(b *testing.B) {
			value := strings.Repeat("k", length)
			var buffer [128]byte
			b.ReportAllocs()
			for b.Loop() {
				_ = sha256.Sum256(append(buffer[:0], value...))
			}
		})
	}
	b.Run("op=header-restore", func(b *testing.B) {
		r, _ := benchRequest(h.keyHeader, []string{key})
		values := []string{key}
		b.ReportAllocs()
		for b.Loop() {
			delete(r.Header, h.keyHeader)
			r.Header[h.keyHeader] = values
		}
	})
}

// BenchmarkTimingMiss times single calls with a near-miss key, a far-miss
// key and a second far-miss key, in random order. It reports whether the
// near and far timings differ by the Mann-Whitney U test, the
// Kolmogorov-Smirnov test and Welch's t on the fastest 90%. Far against
// far2 is a control pair that should not differ. It is a measurement, not
// a test: run it with a fixed count, such as -benchtime=300000x. A p-value
// below 0.001 together with an effect clearly away from 0.5 would point to
// a timing difference.
func BenchmarkTimingMiss(b *testing.B) {
	h := benchHandler(b, benchConfig{keys: 1})
	validKey := benchKey(0)
	keys := [3]string{benchNearMiss(validKey), benchKey(-1), benchKey(-5)}

	b.Run("fn=lookup", func(b *testing.B) {
		benchmarkTiming(b, keys, func(key string, _ []string) {
			_, _ = h.keys.lookup(key)
		})
	})
	b.Run("fn=ServeHTTP", func(b *testing.B) {
		r, w := benchRequest(h.keyHeader, nil)
		benchmarkTiming(b, keys, func(_ string, values []string) {
			r.Header[h.keyHeader] = values
			_ = h.ServeHTTP(w, r, benchNext{})
		})
	})
}

// benchmarkTiming runs call b.N times with keys chosen at random, records
// each call's duration, and reports the test results as metrics.
func benchmarkTiming(b *testing.B, keys [3]string, call func(key string, values []string)) {
	keys = alignKeys(b, keys)
	var values [3][]string
	for i, key := range keys {
		values[i] = []string{key}
	}
	var samples [3][]float64
	for i := range samples {
		samples[i] = make([]float64, 0, b.N/3+b.N/10+16)
	}
	random := rand.New(rand.NewPCG(1, uint64(b.N)))

	b.ResetTimer()
	for range b.N {
		class := random.IntN(3)
		start := time.Now()
		call(keys[class], values[class])
		samples[class] = append(samples[class], float64(time.Since(start)))
	}
	b.StopTimer()

	near, far, control := samples[0], samples[1], samples[2]
	mannWhitney := stats.MannWhitney(near, far)
	b.ReportMetric(mannWhitney.P, "near-far-mwu-p")
	b.ReportMetric(mannWhitney.Effect, "near-far-mwu-effect")
	b.ReportMetric(stats.KolmogorovSmirnov(near, far).P, "near-far-ks-p")
	b.ReportMetric(stats.WelchCropped(near, far, 90).T, "near-far-welch90-t")
	b.ReportMetric(stats.Median(near)-stats.Median(far), "near-far-median-ns")
	controlPair := stats.MannWhitney(far, control)
	b.ReportMetric(controlPair.P, "far-far2-mwu-p")
	b.ReportMetric(controlPair.Effect, "far-far2-mwu-effect")
	b.ReportMetric(stats.KolmogorovSmirnov(far, control).P, "far-far2-ks-p")
}

// alignKeys returns copies of keys that each start a 64-byte cache line.
// Go's allocator places a 192-byte object at a multiple of 192 bytes from
// the start of its span, and spans start on page boundaries. Without this,
// one key of a run could cross a cache line and take longer to copy than
// the others for that reason alone.
func alignKeys(b *testing.B, keys [3]string) [3]string {
	b.Helper()
	var buffer [192]byte
	for i, key := range keys {
		if len(key) > 64 {
			b.Fatalf("key %d has %d bytes, more than the 64 that alignKeys takes", i, len(key))
		}
		copy(buffer[64*i:], key)
	}
	block := string(buffer[:])
	var aligned [3]string
	for i, key := range keys {
		aligned[i] = block[64*i : 64*i+len(key)]
	}
	return aligned
}
