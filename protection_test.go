package apikey

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// limitedKey is the key of the client "limited" in newProtectedHandler.
const limitedKey = "lim1-K5nB8vC2xZ7qW4eR1tY6uI9oP3"

var (
	// scannerExpiry is when the key of the client "scanner" in
	// newProtectedHandler expires.
	scannerExpiry = time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)

	// throttleStart is the time of the first request in the throttling
	// tests, after scannerExpiry.
	throttleStart = time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
)

// testClock is a settable clock for Handler.now. It is safe for
// concurrent use, because the sweep goroutine that Provision starts reads
// it too.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock(now time.Time) *testClock {
	return &testClock{now: now}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
}

// provisionWithCleanup provisions h like provisionHandler and calls its
// Cleanup when the test ends, as Caddy does when a config is unloaded,
// so that no rate limiter outlives the test.
func provisionWithCleanup(t *testing.T, h *Handler) *Handler {
	t.Helper()
	provisionHandler(t, h)
	t.Cleanup(func() {
		assert.NoError(t, h.Cleanup())
	})
	return h
}

// newProtectedHandler returns a provisioned handler with four clients and
// its clock set to throttleStart. The key of mailserver is valid, and that
// of scanner expired at scannerExpiry. The allow list leaves out backup,
// and limited may make one request an hour.
func newProtectedHandler(t *testing.T, throttle *FailureThrottle) (*Handler, *testClock) {
	t.Helper()
	clock := newTestClock(scannerExpiry.Add(-time.Hour))
	h := provisionWithCleanup(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey, Expires: scannerExpiry.Format(time.RFC3339)},
			{Client: "backup", Key: backupKey},
			{Client: "limited", Key: limitedKey},
		},
		Allow:        []string{"mailserver", "scanner", "limited"},
		ClientHeader: "X-Api-Client",
		Throttle:     throttle,
		RateLimits: []RateLimit{
			{Client: "limited", Requests: 1, Interval: caddy.Duration(time.Hour)},
		},
		now: clock.Now,
	})
	clock.Set(throttleStart)
	return h, clock
}

// newRequestFrom returns a GET request like newTestRequest's whose client
// IP, as Caddy's server determined it, is clientIP.
func newRequestFrom(clientIP string) (*http.Request, *caddy.Replacer) {
	r, repl := newTestRequest(http.MethodGet, nil)
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	vars[caddyhttp.ClientIPVarKey] = clientIP
	return r, repl
}

// serveFrom sends one GET request from clientIP through h with the given
// values of X-API-KEY, or without the header if there are none.
func serveFrom(h *Handler, clientIP string, keys ...string) served {
	r, repl := newRequestFrom(clientIP)
	for _, key := range keys {
		r.Header.Add("X-API-KEY", key)
	}
	result := served{recorder: httptest.NewRecorder(), next: new(nextHandler), repl: repl}
	result.err = h.ServeHTTP(result.recorder, r, result.next)
	return result
}

// statusOf returns the status of a served request: that of its handler
// error, or the recorder's if the request was admitted.
func statusOf(s served) int {
	if s.err == nil {
		return s.recorder.Code
	}
	var handlerErr caddyhttp.HandlerError
	if errors.As(s.err, &handlerErr) {
		return handlerErr.StatusCode
	}
	return -1
}

// failFrom sends count requests with a wrong key from clientIP and fails
// the test unless each gets 401.
func failFrom(t *testing.T, h *Handler, clientIP string, count int) {
	t.Helper()
	for i := range count {
		got := serveFrom(h, clientIP, "wrong-key-0123456789abcdef")
		require.Equal(t, http.StatusUnauthorized, statusOf(got), "failure %d of %d", i+1, count)
	}
}

// assertThrottled checks that a request was rejected by throttling.
func assertThrottled(t *testing.T, got served) {
	t.Helper()
	assert.Equal(t, http.StatusTooManyRequests, statusOf(got))
	assert.ErrorIs(t, got.err, errThrottled)
	assert.Zero(t, got.next.calls, "next handler ran")
	assert.NotEmpty(t, got.recorder.Header().Get("Retry-After"), "no Retry-After")
	assert.Empty(t, got.recorder.Header().Get("Www-Authenticate"), "429 with a challenge")
	_, found := got.repl.Get("http.auth.user.id")
	assert.False(t, found, "http.auth.user.id set on a throttled request")
}

func TestServeHTTPThrottle(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 5, Window: caddy.Duration(time.Minute)})
	failFrom(t, h, "192.0.2.1", 5)

	attacker := serveFrom(h, "192.0.2.1", mailKey)
	other := serveFrom(h, "192.0.2.2", mailKey)
	otherWrong := serveFrom(h, "192.0.2.2", "wrong-key-0123456789abcdef")

	assertThrottled(t, attacker)
	assert.Equal(t, "60", attacker.recorder.Header().Get("Retry-After"))
	assert.Equal(t, http.StatusNoContent, statusOf(other), "valid key from another address")
	assert.Equal(t, 1, other.next.calls)
	assert.Equal(t, http.StatusUnauthorized, statusOf(otherWrong), "wrong key from another address")
}

func TestServeHTTPThrottleDefault(t *testing.T) {
	h, _ := newProtectedHandler(t, nil)
	failFrom(t, h, "192.0.2.1", DefaultMaxFailures)

	got := serveFrom(h, "192.0.2.1", mailKey)

	assertThrottled(t, got)
}

// TestServeHTTPThrottleFailureKinds checks that every kind of bad key
// counts as a failure.
func TestServeHTTPThrottleFailureKinds(t *testing.T) {
	tests := []struct {
		name string
		keys []string
	}{
		{"missing", nil},
		{"empty", []string{""}},
		{"invalid", []string{"wrong-key-0123456789abcdef"}},
		{"duplicate", []string{mailKey, mailKey}},
		{"expired", []string{scannerKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 3, Window: caddy.Duration(time.Minute),
			})
			for i := range 3 {
				got := serveFrom(h, "192.0.2.1", tt.keys...)
				require.Equal(t, http.StatusUnauthorized, statusOf(got), "request %d", i+1)
			}

			got := serveFrom(h, "192.0.2.1", mailKey)

			assertThrottled(t, got)
		})
	}
}

// TestServeHTTPThrottleIgnoresValidKeys checks that requests with a valid
// key that are rejected all the same, with 403 or by a rate limit, do not
// count as failures.
func TestServeHTTPThrottleIgnoresValidKeys(t *testing.T) {
	tests := []struct {
		name   string
		key    string
		status int
		err    error
	}{
		{"forbidden", backupKey, http.StatusForbidden, rejectForbidden.err},
		{"rate limited", limitedKey, http.StatusTooManyRequests, errRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 3, Window: caddy.Duration(time.Minute),
			})
			if tt.key == limitedKey {
				require.NoError(t, serveFrom(h, "192.0.2.1", limitedKey).err, "first request")
			}
			for i := range 10 {
				got := serveFrom(h, "192.0.2.1", tt.key)
				require.Equal(t, tt.status, statusOf(got), "request %d", i+1)
				require.ErrorIs(t, got.err, tt.err, "request %d", i+1)
			}

			got := serveFrom(h, "192.0.2.1", mailKey)

			require.NoError(t, got.err)
			assert.Equal(t, 1, got.next.calls)
		})
	}
}

// TestServeHTTPThrottleSkipsKeyCheck checks that a throttled address gets
// 429 whatever key it sends, and that the key is not looked at: the
// rejection is counted and logged without a client.
func TestServeHTTPThrottleSkipsKeyCheck(t *testing.T) {
	tests := []struct {
		name string
		keys []string
	}{
		{"valid", []string{mailKey}},
		{"expired", []string{scannerKey}},
		{"forbidden", []string{backupKey}},
		{"rate limited client", []string{limitedKey}},
		{"duplicate", []string{mailKey, mailKey}},
		{"missing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 2, Window: caddy.Duration(time.Minute),
			})
			failFrom(t, h, "192.0.2.1", 2)
			logs := observeLogs(h)
			before := requestCounts(t)

			got := serveFrom(h, "192.0.2.1", tt.keys...)

			assertThrottled(t, got)
			assert.Equal(t, map[string]float64{"/throttled": 1}, countDeltas(before, requestCounts(t)))
			rejected := logs.FilterMessage("request rejected").All()
			require.Len(t, rejected, 1)
			fields := rejected[0].ContextMap()
			assert.Equal(t, "throttled", fields["reason"])
			assert.Equal(t, "192.0.2.1", fields["client_ip"])
			assert.NotContains(t, fields, "client", "a throttled request named a client")
		})
	}
}

func TestServeHTTPThrottleRetryAfter(t *testing.T) {
	const window = time.Minute
	tests := []struct {
		after time.Duration // time since the failure that reached the limit
		want  string
	}{
		{0, "60"},
		{time.Nanosecond, "60"},
		{500 * time.Millisecond, "60"},
		{time.Second, "59"},
		{30 * time.Second, "30"},
		{30*time.Second + time.Nanosecond, "30"},
		{59 * time.Second, "1"},
		{59*time.Second + 500*time.Millisecond, "1"},
		{window - time.Nanosecond, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.after.String(), func(t *testing.T) {
			h, clock := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 5, Window: caddy.Duration(window),
			})
			failFrom(t, h, "192.0.2.1", 5)
			clock.Set(throttleStart.Add(tt.after))

			got := serveFrom(h, "192.0.2.1", mailKey)

			assertThrottled(t, got)
			assert.Equal(t, tt.want, got.recorder.Header().Get("Retry-After"))
		})
	}
}

// TestServeHTTPThrottleWindowEnd checks that a throttling ends exactly one
// window after the failure that reached the limit, and that failures then
// count from zero.
func TestServeHTTPThrottleWindowEnd(t *testing.T) {
	const window = time.Minute
	tests := []struct {
		name      string
		after     time.Duration
		throttled bool
	}{
		{"one nanosecond before the end", window - time.Nanosecond, true},
		{"at the end", window, false},
		{"one nanosecond after the end", window + time.Nanosecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, clock := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 5, Window: caddy.Duration(window),
			})
			// The first failure comes 10 s before the one that reaches the
			// limit, so a throttling that ran from the first would end early.
			failFrom(t, h, "192.0.2.1", 1)
			clock.Set(throttleStart.Add(10 * time.Second))
			failFrom(t, h, "192.0.2.1", 4)
			clock.Set(throttleStart.Add(10 * time.Second).Add(tt.after))

			got := serveFrom(h, "192.0.2.1", mailKey)

			if tt.throttled {
				assertThrottled(t, got)
				return
			}
			require.NoError(t, got.err)
			assert.Equal(t, 1, got.next.calls)
			failFrom(t, h, "192.0.2.1", 4)
			assert.NoError(t, serveFrom(h, "192.0.2.1", mailKey).err,
				"throttled after 4 failures following the release")
			failFrom(t, h, "192.0.2.1", 1)
			assertThrottled(t, serveFrom(h, "192.0.2.1", mailKey))
		})
	}
}

func TestServeHTTPThrottleIPv6Prefix(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 5, Window: caddy.Duration(time.Minute)})
	failFrom(t, h, "2001:db8:1:2::1", 3)
	failFrom(t, h, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", 2)

	samePrefix := serveFrom(h, "2001:db8:1:2::ffff", mailKey)
	otherPrefix := serveFrom(h, "2001:db8:1:3::1", mailKey)

	assertThrottled(t, samePrefix)
	assert.NoError(t, otherPrefix.err, "an address of another /64 was throttled")
}

func TestServeHTTPThrottleMappedIPv4(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 5, Window: caddy.Duration(time.Minute)})
	failFrom(t, h, "192.0.2.1", 3)
	failFrom(t, h, "::ffff:192.0.2.1", 2)

	plain := serveFrom(h, "192.0.2.1", mailKey)
	mapped := serveFrom(h, "::ffff:192.0.2.1", mailKey)
	neighbour := serveFrom(h, "::ffff:192.0.2.2", mailKey)

	assertThrottled(t, plain)
	assertThrottled(t, mapped)
	assert.NoError(t, neighbour.err, "the mapped form of another IPv4 address was throttled")
	assert.Equal(t, 1, h.protection.throttle.tracked())
}

// TestServeHTTPThrottleUnknownAddress checks that requests whose client IP
// cannot be parsed are never throttled, and never tracked.
func TestServeHTTPThrottleUnknownAddress(t *testing.T) {
	for _, clientIP := range []string{"", "not-an-ip", "192.0.2.1:8080", "[2001:db8::1]", "300.0.0.1"} {
		t.Run(fmt.Sprintf("%q", clientIP), func(t *testing.T) {
			h, _ := newProtectedHandler(t, &FailureThrottle{
				MaxFailures: 3, Window: caddy.Duration(time.Minute),
			})
			failFrom(t, h, clientIP, 50)

			got := serveFrom(h, clientIP, mailKey)

			require.NoError(t, got.err)
			assert.Equal(t, 1, got.next.calls)
			assert.Zero(t, h.protection.throttle.tracked())
		})
	}

	t.Run("no client IP", func(t *testing.T) {
		h, _ := newProtectedHandler(t, &FailureThrottle{
			MaxFailures: 3, Window: caddy.Duration(time.Minute),
		})
		for i := range 50 {
			r := httptest.NewRequest(http.MethodGet, "http://localhost/scanner/scan", nil)
			err := h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))
			require.ErrorIs(t, err, rejectMissing.err, "request %d", i+1)
		}
		r := httptest.NewRequest(http.MethodGet, "http://localhost/scanner/scan", nil)
		r.Header.Set("X-API-KEY", mailKey)
		next := new(nextHandler)

		err := h.ServeHTTP(httptest.NewRecorder(), r, next)

		require.NoError(t, err)
		assert.Equal(t, 1, next.calls)
		assert.Zero(t, h.protection.throttle.tracked())
	})
}

func TestServeHTTPThrottleDisabled(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{Disabled: true})
	failFrom(t, h, "192.0.2.1", 3*DefaultMaxFailures)

	got := serveFrom(h, "192.0.2.1", mailKey)

	require.NoError(t, got.err)
	assert.Equal(t, 1, got.next.calls)
	assert.Nil(t, h.protection.throttle)
}

func TestServeHTTPThrottleLogs(t *testing.T) {
	h, clock := newProtectedHandler(t, &FailureThrottle{MaxFailures: 3, Window: caddy.Duration(time.Minute)})
	logs := observeLogs(h)
	failFrom(t, h, "192.0.2.1", 3)
	failFrom(t, h, "192.0.2.2", 2)
	for range 5 {
		serveFrom(h, "192.0.2.1", "wrong-key-0123456789abcdef")
	}

	started := logs.FilterMessage("client address throttled").All()

	require.Len(t, started, 1)
	assert.Equal(t, zapcore.InfoLevel, started[0].Level)
	fields := started[0].ContextMap()
	assert.Equal(t, "192.0.2.1", fields["client_ip"])
	assert.Equal(t, int64(3), fields["max_failures"])
	assert.Equal(t, time.Minute, fields["window"])
	assert.Equal(t, throttleStart.Add(time.Minute), fields["until"])

	clock.Set(throttleStart.Add(time.Minute - time.Nanosecond))
	h.protection.releaseThrottled(h.logger, clock.Now())
	assert.Zero(t, logs.FilterMessage("client address no longer throttled").Len(),
		"released before the end of the throttling")

	clock.Set(throttleStart.Add(time.Minute))
	h.protection.releaseThrottled(h.logger, clock.Now())
	released := logs.FilterMessage("client address no longer throttled").All()
	require.Len(t, released, 1)
	assert.Equal(t, zapcore.InfoLevel, released[0].Level)
	assert.Equal(t, map[string]any{"client_ip": "192.0.2.1"}, released[0].ContextMap())
}

func TestReleaseThrottledLogs(t *testing.T) {
	tests := []struct {
		addresses int
		lines     int // lines naming one address each
		count     int // count in the summary line, or 0 for none
	}{
		{0, 0, 0},
		{1, 1, 0},
		{10, 10, 0},
		{11, 0, 11},
		{500, 0, 500},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.addresses), func(t *testing.T) {
			p := &protection{throttle: newFailureTracker(1, time.Minute, 1000)}
			for i := range tt.addresses {
				p.throttle.recordFailure(testIPv4(i), throttleStart)
			}
			core, logs := observer.New(zapcore.DebugLevel)

			p.releaseThrottled(zap.New(core), throttleStart.Add(time.Minute))

			single := logs.FilterMessage("client address no longer throttled").All()
			assert.Len(t, single, tt.lines)
			for _, entry := range single {
				assert.Equal(t, zapcore.InfoLevel, entry.Level)
			}
			summary := logs.FilterMessage("client addresses no longer throttled").All()
			if tt.count == 0 {
				assert.Empty(t, summary)
				return
			}
			require.Len(t, summary, 1)
			assert.Equal(t, zapcore.InfoLevel, summary[0].Level)
			assert.Equal(t, int64(tt.count), summary[0].ContextMap()["count"])
		})
	}
}

// TestReleaseThrottledLogsIPv6Prefix checks that a released IPv6 client is
// logged by the /64 prefix under which it was tracked.
func TestReleaseThrottledLogsIPv6Prefix(t *testing.T) {
	p := &protection{throttle: newFailureTracker(1, time.Minute, 1000)}
	p.throttle.recordFailure(netip.MustParseAddr("2001:db8:1:2::7"), throttleStart)
	core, logs := observer.New(zapcore.DebugLevel)

	p.releaseThrottled(zap.New(core), throttleStart.Add(time.Minute))

	released := logs.FilterMessage("client address no longer throttled").All()
	require.Len(t, released, 1)
	assert.Equal(t, "2001:db8:1:2::/64", released[0].ContextMap()["client_ip"])
}

func TestReleaseThrottledDisabled(t *testing.T) {
	p := new(protection)
	core, logs := observer.New(zapcore.DebugLevel)

	p.releaseThrottled(zap.New(core), throttleStart)

	assert.Zero(t, logs.Len())
}

// TestServeHTTPLogSampling sends 1,000 rejections of every reason within
// one second of the handler's clock. The log must stay bounded, and the
// summary must count each rejection. The sampler runs on the real clock,
// so the bound allows for the loop crossing one second boundary.
func TestServeHTTPLogSampling(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 400, Window: caddy.Duration(time.Minute)})
	logs := observeLogs(h)
	sends := []struct {
		count int
		keys  []string
	}{
		{150, []string{backupKey}},                    // forbidden
		{1, []string{limitedKey}},                     // allowed
		{150, []string{limitedKey}},                   // rate_limited
		{100, nil},                                    // missing
		{100, []string{"wrong-key-0123456789abcdef"}}, // invalid
		{100, []string{mailKey, mailKey}},             // duplicate
		{100, []string{scannerKey}},                   // expired, the last reaching the limit
		{300, []string{mailKey}},                      // throttled
	}
	rejections := 0
	for _, send := range sends {
		for range send.count {
			if serveFrom(h, "192.0.2.1", send.keys...).err != nil {
				rejections++
			}
		}
	}
	require.Equal(t, 1000, rejections)
	summaryCore, summaryLogs := observer.New(zapcore.DebugLevel)
	summaryLogger := zap.New(summaryCore)

	h.protection.logSummary(summaryLogger)
	h.protection.logSummary(summaryLogger)

	written := logs.FilterMessage("request rejected").Len()
	assert.Positive(t, written, "no rejection logged")
	assert.LessOrEqual(t, written, 20, "rejections logged one by one")
	assert.Equal(t, 1, logs.FilterMessage("client address throttled").Len())
	summaries := summaryLogs.All()
	require.Len(t, summaries, 1, "summary after the counts were reset")
	assert.Equal(t, "requests rejected since the last summary", summaries[0].Message)
	assert.Equal(t, zapcore.InfoLevel, summaries[0].Level)
	assert.Equal(t, map[string]any{
		"missing":      int64(100),
		"invalid":      int64(100),
		"duplicate":    int64(100),
		"expired":      int64(100),
		"forbidden":    int64(150),
		"throttled":    int64(300),
		"rate_limited": int64(150),

		"throttlings_started": int64(1),
	}, summaries[0].ContextMap())
}

func TestLogSummaryEmpty(t *testing.T) {
	h := newMailHandler(t)
	core, logs := observer.New(zapcore.DebugLevel)

	h.protection.logSummary(zap.New(core))

	assert.Zero(t, logs.Len())
}

// TestLogSummaryPartial checks that the summary names only the reasons
// that occurred.
func TestLogSummaryPartial(t *testing.T) {
	h := newMailHandler(t)
	for range 3 {
		serveWithKey(h, scannerKey)
	}
	core, logs := observer.New(zapcore.DebugLevel)

	h.protection.logSummary(zap.New(core))

	require.Equal(t, 1, logs.Len())
	assert.Equal(t, map[string]any{"invalid": int64(3)}, logs.All()[0].ContextMap())
}

func TestProvisionThrottleDefaults(t *testing.T) {
	h := newMailHandler(t)

	require.NotNil(t, h.Throttle)
	assert.Equal(t, FailureThrottle{
		MaxFailures:         DefaultMaxFailures,
		Window:              caddy.Duration(DefaultFailureWindow),
		MaxTrackedAddresses: DefaultMaxTrackedAddresses,
	}, *h.Throttle)
	require.NotNil(t, h.protection.throttle)
	assert.Equal(t, 100, h.protection.throttle.maxFailures)
	assert.Equal(t, time.Minute, h.protection.throttle.window)
	assert.Equal(t, 10000, h.protection.throttle.maxTracked)
}

func TestProvisionThrottleSettings(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{{Client: "mailserver", Key: mailKey}},
		Throttle: &FailureThrottle{
			MaxFailures:         7,
			Window:              caddy.Duration(30 * time.Second),
			MaxTrackedAddresses: 25,
		},
	})

	require.NotNil(t, h.protection.throttle)
	assert.Equal(t, 7, h.protection.throttle.maxFailures)
	assert.Equal(t, 30*time.Second, h.protection.throttle.window)
	assert.Equal(t, 25, h.protection.throttle.maxTracked)
}

func TestProvisionThrottleErrors(t *testing.T) {
	tests := []struct {
		name     string
		throttle FailureThrottle
	}{
		{"negative max_failures", FailureThrottle{MaxFailures: -1}},
		{"negative window", FailureThrottle{Window: caddy.Duration(-time.Minute)}},
		{"negative max_tracked_addresses", FailureThrottle{MaxTrackedAddresses: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			throttle := tt.throttle
			h := &Handler{
				Keys:     []ClientKey{{Client: "mailserver", Key: mailKey}},
				Throttle: &throttle,
			}

			err := provisionError(t, h)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "max_failures")
			assert.Contains(t, err.Error(), "must be positive")
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

func TestSetRetryAfter(t *testing.T) {
	tests := []struct {
		wait time.Duration
		want string
	}{
		{0, "1"},
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{59*time.Second + 500*time.Millisecond, "60"},
		{time.Minute, "60"},
		{time.Hour, "3600"},
	}
	for _, tt := range tests {
		t.Run(tt.wait.String(), func(t *testing.T) {
			w := httptest.NewRecorder()

			setRetryAfter(w, tt.wait)

			assert.Equal(t, tt.want, w.Header().Get("Retry-After"))
		})
	}
}

func TestClientAddress(t *testing.T) {
	tests := []struct {
		clientIP any // value of the client_ip var, nil for none
		want     netip.Addr
	}{
		{"192.0.2.10", netip.MustParseAddr("192.0.2.10")},
		{"2001:db8::1", netip.MustParseAddr("2001:db8::1")},
		{"fe80::1%eth0", netip.MustParseAddr("fe80::1%eth0")},
		{"", netip.Addr{}},
		{"192.0.2.10:443", netip.Addr{}},
		{"localhost", netip.Addr{}},
		{42, netip.Addr{}},
		{nil, netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.clientIP), func(t *testing.T) {
			r, _ := newTestRequest(http.MethodGet, nil)
			vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
			if tt.clientIP == nil {
				delete(vars, caddyhttp.ClientIPVarKey)
			} else {
				vars[caddyhttp.ClientIPVarKey] = tt.clientIP
			}

			assert.Equal(t, tt.want, clientAddress(r))
		})
	}
}

// TestServeHTTPThrottleMaxTracked sends failures from ten times as many
// addresses as the handler may track.
func TestServeHTTPThrottleMaxTracked(t *testing.T) {
	const maxTracked = 50
	h, _ := newProtectedHandler(t, &FailureThrottle{
		MaxFailures: 2, Window: caddy.Duration(time.Minute), MaxTrackedAddresses: maxTracked,
	})

	for i := range 10 * maxTracked {
		failFrom(t, h, testIPv4(i).String(), 1)
	}

	assert.Equal(t, maxTracked, h.protection.throttle.tracked())
	failFrom(t, h, testIPv4(10*maxTracked-1).String(), 1)
	assertThrottled(t, serveFrom(h, testIPv4(10*maxTracked-1).String(), mailKey))
	failFrom(t, h, testIPv4(0).String(), 1)
	assert.NoError(t, serveFrom(h, testIPv4(0).String(), mailKey).err,
		"an evicted address kept its failures")
}

// TestServeHTTPThrottleConcurrent sends failures and valid keys from many
// goroutines while the sweep runs, with fewer tracked addresses than
// clients, for the race detector. An address that never fails must never
// be throttled, and the summary must count every rejection.
func TestServeHTTPThrottleConcurrent(t *testing.T) {
	h, clock := newProtectedHandler(t, &FailureThrottle{
		MaxFailures: 5, Window: caddy.Duration(time.Minute), MaxTrackedAddresses: 10,
	})
	const workers, requestsPerWorker = 8, 200
	var wg sync.WaitGroup
	rejections := make(chan int, workers)
	failures := make(chan string, workers*requestsPerWorker)
	done := make(chan struct{})
	sweeperDone := make(chan struct{})
	go func() {
		defer close(sweeperDone)
		for step := range 100_000 {
			select {
			case <-done:
				return
			default:
			}
			h.protection.releaseThrottled(zap.NewNop(), clock.Now().Add(time.Duration(step)*time.Second))
		}
	}()

	for worker := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			count := 0
			for i := range requestsPerWorker {
				attacker := testIPv4(worker*requestsPerWorker + i%20).String()
				if serveFrom(h, attacker, "wrong-key-0123456789abcdef").err != nil {
					count++
				}
				if got := serveFrom(h, "192.0.2.200", mailKey); got.err != nil {
					failures <- fmt.Sprintf("worker %d, request %d: %v", worker, i, got.err)
				}
			}
			rejections <- count
		}()
	}
	wg.Wait()
	close(done)
	<-sweeperDone
	close(rejections)
	close(failures)
	core, logs := observer.New(zapcore.DebugLevel)
	h.protection.logSummary(zap.New(core))

	for failure := range failures {
		t.Error(failure)
	}
	total := 0
	for count := range rejections {
		total += count
	}
	assert.Equal(t, workers*requestsPerWorker, total)
	assert.LessOrEqual(t, h.protection.throttle.tracked(), 10)
	require.Equal(t, 1, logs.Len())
	summed := int64(0)
	for _, value := range logs.All()[0].ContextMap() {
		summed += value.(int64)
	}
	assert.Equal(t, int64(total), summed)
}
