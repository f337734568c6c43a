package apikey

import (
	"crypto/sha256"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/caddyserver/caddy/v2"
)

// rateStart is the time of the first request in the rate limit tests.
var rateStart = time.Date(2027, 4, 1, 8, 0, 0, 0, time.UTC)

// newLimitedHandler returns a provisioned handler with the clients
// mailserver, scanner and backup, the given rate limits and a clock set to
// rateStart. Its rate limiters are released when the test ends.
func newLimitedHandler(t *testing.T, limits ...RateLimit) (*Handler, *testClock) {
	t.Helper()
	clock := newTestClock(rateStart)
	h := provisionWithCleanup(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
			{Client: "backup", Key: backupKey},
		},
		RateLimits: limits,
		// Some tests send more requests than throttling would allow, all
		// with valid keys; throttling must not be what stops them.
		Throttle: &FailureThrottle{Disabled: true},
		now:      clock.Now,
	})
	return h, clock
}

// perMinute returns a rate limit of client with requests a minute and the
// given burst, 0 for the default.
func perMinute(client string, requests, burst int) RateLimit {
	return RateLimit{Client: client, Requests: requests, Interval: caddy.Duration(time.Minute), Burst: burst}
}

// admitted sends count requests with key through h and returns how many
// of them reached the next handler.
func admitted(h *Handler, key string, count int) int {
	passed := 0
	for range count {
		if got := serveWithKey(h, key); got.err == nil && got.next.calls == 1 {
			passed++
		}
	}
	return passed
}

// assertRateLimited checks that a request was rejected by its client's
// rate limit with the given Retry-After.
func assertRateLimited(t *testing.T, got served, retryAfter string) {
	t.Helper()
	assert.Equal(t, http.StatusTooManyRequests, statusOf(got))
	assert.ErrorIs(t, got.err, errRateLimited)
	assert.Zero(t, got.next.calls, "next handler ran")
	assert.Equal(t, retryAfter, got.recorder.Header().Get("Retry-After"))
	assert.Empty(t, got.recorder.Header().Get("Www-Authenticate"), "429 with a challenge")
	_, found := got.repl.Get("http.auth.user.id")
	assert.False(t, found, "http.auth.user.id set on a rate-limited request")
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		text     string
		requests int
		interval time.Duration
	}{
		{"50/s", 50, time.Second},
		{"600/m", 600, time.Minute},
		{"10/h", 10, time.Hour},
		{"10/5s", 10, 5 * time.Second},
		{"1/1m30s", 1, 90 * time.Second},
		{"3/500ms", 3, 500 * time.Millisecond},
		{"1/24h", 1, 24 * time.Hour},
		// Long enough to pass as a secret, which once made it an error.
		{"100/1h30m15s500ms", 100, time.Hour + 30*time.Minute + 15*time.Second + 500*time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			requests, interval, err := parseRate(tt.text)

			require.NoError(t, err)
			assert.Equal(t, tt.requests, requests)
			assert.Equal(t, tt.interval, interval)
		})
	}
}

func TestParseRateErrors(t *testing.T) {
	tests := []struct {
		text string
		want string
	}{
		{"50", "no '/'"},
		{"", "no '/'"},
		{"50/", "not s, m, h or a positive duration"},
		{"/s", "not a positive whole number"},
		{"0/s", "not a positive whole number"},
		{"-1/s", "not a positive whole number"},
		{"x/s", "not a positive whole number"},
		{"1.5/s", "not a positive whole number"},
		{"50/d", "not s, m, h or a positive duration"},
		{"50/1d", "not s, m, h or a positive duration"},
		{"50/0s", "not s, m, h or a positive duration"},
		{"50/-1s", "not s, m, h or a positive duration"},
		{"50/S", "not s, m, h or a positive duration"},
		{"50/s/s", "not s, m, h or a positive duration"},
		{"50/sec", "not s, m, h or a positive duration"},
		{"100/1h30m15s500mx", "(not shown, in case it is a key)"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			_, _, err := parseRate(tt.text)

			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestRateLimitProvision(t *testing.T) {
	tests := []struct {
		name  string
		limit RateLimit
		want  RateLimit
	}{
		{
			name:  "defaults",
			limit: RateLimit{Client: "mailserver", Requests: 5},
			want:  RateLimit{Client: "mailserver", Requests: 5, Interval: caddy.Duration(time.Second), Burst: 5},
		},
		{
			name:  "burst below requests",
			limit: perMinute("mailserver", 60, 2),
			want:  perMinute("mailserver", 60, 2),
		},
		{
			name:  "burst above requests",
			limit: perMinute("*", 1, 10),
			want:  perMinute("*", 1, 10),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit

			err := limit.provision()

			require.NoError(t, err)
			assert.Equal(t, tt.want, limit)
		})
	}
}

func TestRateLimitProvisionErrors(t *testing.T) {
	tests := []struct {
		name  string
		limit RateLimit
		want  string
	}{
		{"no requests", RateLimit{Client: "mailserver"}, "at least one request"},
		{"negative requests", RateLimit{Client: "mailserver", Requests: -1}, "at least one request"},
		{"negative interval", RateLimit{Client: "mailserver", Requests: 1, Interval: -1}, "positive interval"},
		{"negative burst", RateLimit{Client: "mailserver", Requests: 1, Burst: -1}, "burst must be at least 1"},
		{"empty client", RateLimit{Requests: 1}, "client name is empty"},
		{"invalid client", RateLimit{Client: "mail server", Requests: 1}, "client name is invalid"},
		{"two stars", RateLimit{Client: "**", Requests: 1}, "client name is invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit

			err := limit.provision()

			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name     string
		limiter  func() *rate.Limiter
		requests int // sent at rateStart before the check
		after    time.Duration
		want     int
	}{
		{"1/m drained", func() *rate.Limiter { return rate.NewLimiter(rate.Every(time.Minute), 1) }, 1, 0, 60},
		{"1/m half a second later", func() *rate.Limiter { return rate.NewLimiter(rate.Every(time.Minute), 1) }, 1, 500 * time.Millisecond, 60},
		{"1/m 59.5 s later", func() *rate.Limiter { return rate.NewLimiter(rate.Every(time.Minute), 1) }, 1, 59500 * time.Millisecond, 1},
		{"3/m drained", func() *rate.Limiter { return rate.NewLimiter(rate.Every(20*time.Second), 3) }, 3, 0, 20},
		{"10/s drained", func() *rate.Limiter { return rate.NewLimiter(10, 10) }, 10, 0, 1},
		{"tokens left", func() *rate.Limiter { return rate.NewLimiter(rate.Every(time.Minute), 2) }, 1, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limiter := tt.limiter()
			for i := range tt.requests {
				require.True(t, limiter.AllowN(rateStart, 1), "request %d", i+1)
			}
			now := rateStart.Add(tt.after)

			first := retryAfter(limiter, now)
			second := retryAfter(limiter, now)

			assert.Equal(t, tt.want, first)
			assert.Equal(t, tt.want, second, "retryAfter took a token")
		})
	}
}

// TestRetryAfterKeepsTokens checks that asking for the wait does not
// delay the next request.
func TestRetryAfterKeepsTokens(t *testing.T) {
	limiter := rate.NewLimiter(rate.Every(time.Minute), 1)
	require.True(t, limiter.AllowN(rateStart, 1))

	for range 10 {
		retryAfter(limiter, rateStart)
	}

	assert.False(t, limiter.AllowN(rateStart.Add(time.Minute-time.Nanosecond), 1))
	assert.True(t, limiter.AllowN(rateStart.Add(time.Minute), 1))
}

func TestServeHTTPRateLimit(t *testing.T) {
	h, clock := newLimitedHandler(t, perMinute("mailserver", 3, 0))

	passed := admitted(h, mailKey, 3)
	over := serveWithKey(h, mailKey)
	clock.Set(rateStart.Add(500 * time.Millisecond))
	halfSecond := serveWithKey(h, mailKey)
	// golang.org/x/time/rate computes tokens in float64, so a request
	// nanoseconds before the refill may already pass; 19.5 s is clear of it.
	clock.Set(rateStart.Add(19500 * time.Millisecond))
	almost := serveWithKey(h, mailKey)
	clock.Set(rateStart.Add(20 * time.Second))
	refilled := serveWithKey(h, mailKey)
	overAgain := serveWithKey(h, mailKey)

	assert.Equal(t, 3, passed)
	assertRateLimited(t, over, "20")
	assertRateLimited(t, halfSecond, "20")
	assertRateLimited(t, almost, "1")
	require.NoError(t, refilled.err, "request after one interval of the refill")
	assert.Equal(t, 1, refilled.next.calls)
	userID, _ := refilled.repl.Get("http.auth.user.id")
	assert.Equal(t, "mailserver", userID)
	assertRateLimited(t, overAgain, "20")
}

// TestServeHTTPRateLimitBurst checks the burst boundary: exactly burst
// requests pass at once, and afterwards the bucket refills at the rate.
func TestServeHTTPRateLimitBurst(t *testing.T) {
	h, clock := newLimitedHandler(t, RateLimit{
		Client: "mailserver", Requests: 1, Interval: caddy.Duration(time.Second), Burst: 5,
	})

	atOnce := admitted(h, mailKey, 6)
	clock.Set(rateStart.Add(time.Second))
	afterOneSecond := admitted(h, mailKey, 3)
	clock.Set(rateStart.Add(time.Hour))
	afterQuiet := admitted(h, mailKey, 10)

	assert.Equal(t, 5, atOnce)
	assert.Equal(t, 1, afterOneSecond)
	assert.Equal(t, 5, afterQuiet, "a quiet period filled the bucket beyond its burst")
}

// TestServeHTTPRateLimitDefaultBurst checks that the burst defaults to the
// number of requests.
func TestServeHTTPRateLimitDefaultBurst(t *testing.T) {
	h, _ := newLimitedHandler(t, RateLimit{Client: "mailserver", Requests: 7})

	assert.Equal(t, 7, admitted(h, mailKey, 20))
	assert.Equal(t, 7, h.RateLimits[0].Burst)
	assert.Equal(t, caddy.Duration(time.Second), h.RateLimits[0].Interval)
}

func TestServeHTTPRateLimitOwnBeatsAll(t *testing.T) {
	h, _ := newLimitedHandler(t,
		perMinute(AllClients, 10, 0),
		perMinute("mailserver", 2, 0),
	)

	mail := admitted(h, mailKey, 20)
	scanner := admitted(h, scannerKey, 20)

	assert.Equal(t, 2, mail, "mailserver's own limit")
	assert.Equal(t, 10, scanner, "the '*' limit")
}

// TestServeHTTPRateLimitAllPerClient checks that the "*" limit gives each
// client a bucket of its own.
func TestServeHTTPRateLimitAllPerClient(t *testing.T) {
	h, _ := newLimitedHandler(t, perMinute(AllClients, 4, 0))

	mail := admitted(h, mailKey, 10)
	scanner := admitted(h, scannerKey, 10)
	backup := admitted(h, backupKey, 10)

	assert.Equal(t, 4, mail)
	assert.Equal(t, 4, scanner)
	assert.Equal(t, 4, backup)
}

func TestServeHTTPRateLimitOtherClientsUnlimited(t *testing.T) {
	h, _ := newLimitedHandler(t, perMinute("mailserver", 1, 0))

	mail := admitted(h, mailKey, 5)
	scanner := admitted(h, scannerKey, 500)

	assert.Equal(t, 1, mail)
	assert.Equal(t, 500, scanner)
	assert.Nil(t, h.keys.entries[1].limiter, "scanner has a limiter")
}

// TestServeHTTPRateLimitAfterKeyCheck checks that rejected keys do not use
// up a client's requests.
func TestServeHTTPRateLimitAfterKeyCheck(t *testing.T) {
	h, _ := newLimitedHandler(t, perMinute(AllClients, 2, 0))

	for range 10 {
		require.Error(t, serveWithKey(h, "wrong-key-0123456789abcdef").err)
	}

	assert.Equal(t, 2, admitted(h, mailKey, 5))
}

func TestProvisionRateLimitErrors(t *testing.T) {
	tests := []struct {
		name    string
		limits  []RateLimit
		want    []string
		secrets []string
	}{
		{
			name:   "unknown client",
			limits: []RateLimit{perMinute("nobody", 1, 0)},
			want:   []string{`"nobody"`, "not configured"},
		},
		{
			name:   "unknown client beside a known one",
			limits: []RateLimit{perMinute("mailserver", 1, 0), perMinute("mail-server", 1, 0)},
			want:   []string{`"mail-server"`, "not configured"},
		},
		{
			name:   "same client twice",
			limits: []RateLimit{perMinute("mailserver", 1, 0), perMinute("mailserver", 2, 0)},
			want:   []string{`"mailserver"`, "set twice"},
		},
		{
			name:   "same limit twice",
			limits: []RateLimit{perMinute("mailserver", 1, 0), perMinute("mailserver", 1, 0)},
			want:   []string{`"mailserver"`, "set twice"},
		},
		{
			name:   "star twice",
			limits: []RateLimit{perMinute(AllClients, 1, 0), perMinute(AllClients, 2, 0)},
			want:   []string{`"*"`, "set twice"},
		},
		{
			name:   "no requests",
			limits: []RateLimit{{Client: "mailserver"}},
			want:   []string{`"mailserver"`, "at least one request"},
		},
		{
			name:   "negative burst",
			limits: []RateLimit{{Client: "mailserver", Requests: 1, Burst: -2}},
			want:   []string{`"mailserver"`, "burst"},
		},
		{
			name:    "invalid client name",
			limits:  []RateLimit{perMinute("mail/server", 1, 0)},
			want:    []string{"client name is invalid"},
			secrets: []string{"mail/server"},
		},
		{
			// A client name that would pass as a key may be a key
			// written in the wrong place.
			name:    "unknown client shaped like a key",
			limits:  []RateLimit{perMinute("correcthorsebatterystaple", 1, 0)},
			want:    []string{"not configured"},
			secrets: []string{"correcthorsebatterystaple"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{
				Keys:       []ClientKey{{Client: "mailserver", Key: mailKey}},
				RateLimits: tt.limits,
			}
			t.Cleanup(func() { _ = h.Cleanup() })

			err := provisionError(t, h)

			requireErrorContains(t, err, tt.want, tt.secrets)
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

// TestRateLimitSurvivesProvision empties a bucket and provisions a second
// handler with the same limit, as a config reload does before it cleans up
// the old config. The bucket must stay empty, also after the first handler
// is cleaned up.
func TestRateLimitSurvivesProvision(t *testing.T) {
	limit := perMinute("mailserver", 3, 0)
	first, clock := newLimitedHandler(t, limit)
	require.Equal(t, 3, admitted(first, mailKey, 5))

	second := provisionWithCleanup(t, &Handler{
		Keys:       []ClientKey{{Client: "mailserver", Key: mailKey}},
		RateLimits: []RateLimit{limit},
		now:        clock.Now,
	})
	beforeCleanup := admitted(second, mailKey, 1)
	require.NoError(t, first.Cleanup())
	afterCleanup := admitted(second, mailKey, 1)

	assert.Zero(t, beforeCleanup, "the reloaded handler got a fresh bucket")
	assert.Zero(t, afterCleanup, "cleaning up the old handler reset the bucket")
}

// TestRateLimitSameLimitWrittenDifferently checks that an interval written
// in another unit is the same limit.
func TestRateLimitSameLimitWrittenDifferently(t *testing.T) {
	first, clock := newLimitedHandler(t, perMinute("mailserver", 2, 0))
	require.Equal(t, 2, admitted(first, mailKey, 3))
	_, interval, err := parseRate("2/60s")
	require.NoError(t, err)

	second := provisionWithCleanup(t, &Handler{
		Keys: []ClientKey{{Client: "mailserver", Key: mailKey}},
		RateLimits: []RateLimit{
			{Client: "mailserver", Requests: 2, Interval: caddy.Duration(interval), Burst: 2},
		},
		now: clock.Now,
	})

	assert.Zero(t, admitted(second, mailKey, 1))
}

// TestRateLimitResetsOnChange checks that a changed limit starts with a
// full bucket.
func TestRateLimitResetsOnChange(t *testing.T) {
	tests := []struct {
		name    string
		changed RateLimit
		want    int
	}{
		{"more requests", perMinute("mailserver", 4, 0), 4},
		{"fewer requests", perMinute("mailserver", 2, 0), 2},
		{"longer interval", RateLimit{Client: "mailserver", Requests: 3, Interval: caddy.Duration(time.Hour)}, 3},
		{"larger burst", perMinute("mailserver", 3, 5), 5},
		{"from own limit to star", perMinute(AllClients, 3, 1), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, clock := newLimitedHandler(t, perMinute("mailserver", 3, 0))
			require.Equal(t, 3, admitted(first, mailKey, 5))

			second := provisionWithCleanup(t, &Handler{
				Keys:       []ClientKey{{Client: "mailserver", Key: mailKey}},
				RateLimits: []RateLimit{tt.changed},
				Throttle:   &FailureThrottle{Disabled: true},
				now:        clock.Now,
			})

			assert.Equal(t, tt.want, admitted(second, mailKey, 10))
			assert.Zero(t, admitted(first, mailKey, 1), "the old bucket was refilled")
		})
	}
}

func TestCleanupReleasesLimiters(t *testing.T) {
	limits := []RateLimit{perMinute("cleanup-a", 1, 0), perMinute(AllClients, 2, 0)}
	newHandler := func() *Handler {
		return &Handler{
			Keys: []ClientKey{
				{Client: "cleanup-a", Key: mailKey},
				{Client: "cleanup-b", Key: scannerKey},
			},
			RateLimits: append([]RateLimit(nil), limits...),
		}
	}
	first := provisionHandler(t, newHandler())
	keyA := first.RateLimits[0].poolKey("cleanup-a", sha256.Sum256([]byte(mailKey)))
	keyB := first.RateLimits[1].poolKey("cleanup-b", sha256.Sum256([]byte(scannerKey)))
	references := func(key string) int {
		count, _ := rateLimiters.References(key)
		return count
	}

	afterFirst := []int{references(keyA), references(keyB)}
	second := provisionHandler(t, newHandler())
	afterSecond := []int{references(keyA), references(keyB)}
	require.NoError(t, first.Cleanup())
	afterFirstCleanup := []int{references(keyA), references(keyB)}
	require.NoError(t, first.Cleanup())
	afterRepeatedCleanup := []int{references(keyA), references(keyB)}
	require.NoError(t, second.Cleanup())
	_, foundA := rateLimiters.References(keyA)
	_, foundB := rateLimiters.References(keyB)

	assert.Equal(t, []int{1, 1}, afterFirst)
	assert.Equal(t, []int{2, 2}, afterSecond)
	assert.Equal(t, []int{1, 1}, afterFirstCleanup)
	assert.Equal(t, []int{1, 1}, afterRepeatedCleanup, "a second Cleanup released again")
	assert.False(t, foundA, "limiter of cleanup-a left in the pool")
	assert.False(t, foundB, "limiter of cleanup-b left in the pool")
}

func TestCleanupWithoutProvision(t *testing.T) {
	assert.NoError(t, new(Handler).Cleanup())
}

// TestCleanupAfterFailedProvision checks that the limiters taken before
// provisioning failed are released by Cleanup, which Caddy calls on a
// module whose Provision failed.
func TestCleanupAfterFailedProvision(t *testing.T) {
	h := &Handler{
		Keys:       []ClientKey{{Client: "failed-provision", Key: mailKey}},
		RateLimits: []RateLimit{perMinute("failed-provision", 1, 0), perMinute("nobody", 1, 0)},
	}
	require.Error(t, provisionError(t, h))
	key := h.RateLimits[0].poolKey("failed-provision", sha256.Sum256([]byte(mailKey)))

	require.NoError(t, h.Cleanup())

	_, found := rateLimiters.References(key)
	assert.False(t, found, "limiter left in the pool")
}

// TestServeHTTPRateLimitKeysFileClient checks that a rate limit may name a
// client that only the keys file configures.
func TestServeHTTPRateLimitKeysFileClient(t *testing.T) {
	path := writeKeysFile(t, "file-client "+scannerKey+"\n", 0o600)
	clock := newTestClock(rateStart)
	h := provisionWithCleanup(t, &Handler{
		Keys:       []ClientKey{{Client: "mailserver", Key: mailKey}},
		KeysFile:   path,
		RateLimits: []RateLimit{perMinute("file-client", 2, 0)},
		now:        clock.Now,
	})

	assert.Equal(t, 2, admitted(h, scannerKey, 5))
	assert.Equal(t, 5, admitted(h, mailKey, 5))
}
