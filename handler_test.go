package apikey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
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

// Test keys. They are at least MinKeyLength bytes and share no prefix, so
// that a near miss of one is never another.
const (
	mailKey    = "mail-Q8jR2vT5xL0wN3zC6yB9fH1kD4"
	scannerKey = "scan-P7hD2mS9vX1kB6nT3wE8rY5uG0"
	backupKey  = "back-Z4cV7bN1mQ8wE2rT5yU9iO3pA6"

	// testClientIP is the client IP that newTestRequest stores in the
	// request's vars, where Caddy's server puts it.
	testClientIP = "192.0.2.10"
)

// provisionHandler provisions h with a bare Caddy context and fails the test
// if provisioning or validation fails.
func provisionHandler(t *testing.T, h *Handler) *Handler {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	require.NoError(t, h.Provision(ctx))
	require.NoError(t, h.Validate())
	return h
}

// newMailHandler returns a provisioned handler with the single client
// "mailserver".
func newMailHandler(t *testing.T) *Handler {
	t.Helper()
	return provisionHandler(t, &Handler{
		Keys: []ClientKey{{Client: "mailserver", Key: mailKey}},
	})
}

// countingBody is a request body that counts the calls to Read.
type countingBody struct {
	data  io.Reader
	reads int
}

func (b *countingBody) Read(p []byte) (int, error) {
	b.reads++
	return b.data.Read(p)
}

func (b *countingBody) Close() error { return nil }

// newTestRequest returns a request whose context carries what Caddy's
// server puts there before handlers run: a replacer and the vars map with
// the client IP.
func newTestRequest(method string, body io.Reader) (*http.Request, *caddy.Replacer) {
	r := httptest.NewRequest(method, "http://localhost/scanner/scan", body)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.ClientIPVarKey: testClientIP,
	})
	return r.WithContext(ctx), repl
}

// nextHandler records whether it ran and the request it received.
type nextHandler struct {
	calls   int
	request *http.Request
}

func (n *nextHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.calls++
	n.request = r
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// requireHandlerError asserts that err is a caddyhttp.HandlerError and
// returns it.
func requireHandlerError(t *testing.T, err error) caddyhttp.HandlerError {
	t.Helper()
	require.Error(t, err)
	var handlerErr caddyhttp.HandlerError
	require.True(t, errors.As(err, &handlerErr), "error %T is not a caddyhttp.HandlerError", err)
	return handlerErr
}

// requireErrorContains stops the test if err is nil, then checks that the
// error message contains every string of want and none of secrets.
func requireErrorContains(t *testing.T, err error, want, secrets []string) {
	t.Helper()
	require.Error(t, err)
	for _, text := range want {
		assert.Contains(t, err.Error(), text)
	}
	for _, secret := range secrets {
		assert.NotContains(t, err.Error(), secret)
	}
}

func TestServeHTTPRejections(t *testing.T) {
	nearMiss := mailKey[:len(mailKey)-1] + "5"
	tests := []struct {
		name   string
		values []string // values of X-API-KEY, nil for no header
		reason *rejection
	}{
		{"missing", nil, rejectMissing},
		{"empty value", []string{""}, rejectMissing},
		{"wrong key", []string{scannerKey}, rejectInvalid},
		{"near miss at end", []string{nearMiss}, rejectInvalid},
		{"near miss at start", []string{"n" + mailKey[1:]}, rejectInvalid},
		{"other case", []string{strings.ToUpper(mailKey)}, rejectInvalid},
		{"prefix of key", []string{mailKey[:len(mailKey)-4]}, rejectInvalid},
		{"suffix of key", []string{mailKey[4:]}, rejectInvalid},
		{"key as prefix", []string{mailKey + "0"}, rejectInvalid},
		{"key as suffix", []string{"0" + mailKey}, rejectInvalid},
		{"key with space", []string{mailKey + " "}, rejectInvalid},
		{"two valid values", []string{mailKey, mailKey}, rejectDuplicate},
		{"valid then wrong", []string{mailKey, scannerKey}, rejectDuplicate},
		{"wrong then valid", []string{scannerKey, mailKey}, rejectDuplicate},
		{"empty then valid", []string{"", mailKey}, rejectDuplicate},
		{"two empty values", []string{"", ""}, rejectDuplicate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newMailHandler(t)
			r, repl := newTestRequest(http.MethodGet, nil)
			for _, value := range tt.values {
				r.Header.Add("X-API-KEY", value)
			}
			w := httptest.NewRecorder()
			next := new(nextHandler)

			err := h.ServeHTTP(w, r, next)

			handlerErr := requireHandlerError(t, err)
			assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
			assert.ErrorIs(t, err, tt.reason.err)
			assert.Equal(t, `APIKey header="X-API-KEY"`, w.Header().Get("WWW-Authenticate"))
			assert.Empty(t, w.Header().Get("Connection"), "GET without body")
			assert.Zero(t, next.calls, "next handler ran")
			assert.Zero(t, w.Body.Len(), "handler wrote a body")
			_, found := repl.Get("http.auth.user.id")
			assert.False(t, found, "http.auth.user.id set on a rejected request")
			for _, value := range tt.values {
				if value != "" {
					assert.NotContains(t, err.Error(), value)
				}
			}
		})
	}
}

func TestServeHTTPValidKey(t *testing.T) {
	h := newMailHandler(t)
	r, repl := newTestRequest(http.MethodGet, nil)
	r.Header.Set("X-API-KEY", mailKey)
	w := httptest.NewRecorder()
	next := new(nextHandler)

	err := h.ServeHTTP(w, r, next)

	require.NoError(t, err)
	assert.Equal(t, 1, next.calls)
	userID, _ := repl.Get("http.auth.user.id")
	assert.Equal(t, "mailserver", userID)
	require.NotNil(t, next.request)
	assert.Empty(t, next.request.Header.Values("X-API-KEY"), "key header reached next handler")
	assert.Empty(t, w.Header().Get("WWW-Authenticate"))
	assert.Equal(t, http.StatusNoContent, w.Code)
}

func TestServeHTTPSeveralClients(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
			{Client: "backup", Key: backupKey},
		},
		ClientHeader: "X-Api-Client",
	})
	tests := []struct {
		key    string
		client string
	}{
		{mailKey, "mailserver"},
		{scannerKey, "scanner"},
		{backupKey, "backup"},
	}
	for _, tt := range tests {
		t.Run(tt.client, func(t *testing.T) {
			r, repl := newTestRequest(http.MethodPost, strings.NewReader("payload"))
			r.Header.Set("X-API-KEY", tt.key)
			next := new(nextHandler)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			require.NoError(t, err)
			require.Equal(t, 1, next.calls)
			userID, _ := repl.Get("http.auth.user.id")
			assert.Equal(t, tt.client, userID)
			assert.Equal(t, []string{tt.client}, next.request.Header.Values("X-Api-Client"))
		})
	}
}

func TestServeHTTPClientHeader(t *testing.T) {
	tests := []struct {
		name string
		sent []string // values of X-Api-Client sent by the client
	}{
		{"not sent", nil},
		{"forged value", []string{"backup"}},
		{"same value", []string{"mailserver"}},
		{"several values", []string{"backup", "mailserver", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionHandler(t, &Handler{
				Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
				ClientHeader: "x-api-client",
			})
			r, _ := newTestRequest(http.MethodGet, nil)
			r.Header.Set("X-API-KEY", mailKey)
			for _, value := range tt.sent {
				r.Header.Add("X-Api-Client", value)
			}
			next := new(nextHandler)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			require.NoError(t, err)
			require.Equal(t, 1, next.calls)
			assert.Equal(t, []string{"mailserver"}, next.request.Header.Values("X-Api-Client"))
		})
	}
}

func TestServeHTTPRejectionLeavesHeaders(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
		ClientHeader: "X-Api-Client",
	})
	r, _ := newTestRequest(http.MethodGet, nil)
	r.Header.Set("X-API-KEY", scannerKey)
	r.Header.Set("X-Api-Client", "forged")

	err := h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

	handlerErr := requireHandlerError(t, err)
	assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
	assert.Equal(t, []string{"forged"}, r.Header.Values("X-Api-Client"),
		"a rejected request was changed")
	assert.Equal(t, []string{scannerKey}, r.Header.Values("X-API-KEY"),
		"a rejected request was changed")
}

func TestServeHTTPForwardKey(t *testing.T) {
	tests := []struct {
		name       string
		forwardKey bool
		want       []string
	}{
		{"default removes key", false, nil},
		{"forward_key keeps key", true, []string{mailKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionHandler(t, &Handler{
				Keys:       []ClientKey{{Client: "mailserver", Key: mailKey}},
				ForwardKey: tt.forwardKey,
			})
			r, _ := newTestRequest(http.MethodGet, nil)
			r.Header.Set("X-API-KEY", mailKey)
			next := new(nextHandler)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			require.NoError(t, err)
			require.Equal(t, 1, next.calls)
			assert.Equal(t, tt.want, next.request.Header.Values("X-API-KEY"))
		})
	}
}

func TestServeHTTPCustomHeader(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Header: "X-Scanner-Token",
		Keys:   []ClientKey{{Client: "mailserver", Key: mailKey}},
	})

	t.Run("custom header admitted", func(t *testing.T) {
		r, repl := newTestRequest(http.MethodGet, nil)
		r.Header.Set("X-Scanner-Token", mailKey)
		next := new(nextHandler)

		err := h.ServeHTTP(httptest.NewRecorder(), r, next)

		require.NoError(t, err)
		assert.Equal(t, 1, next.calls)
		userID, _ := repl.Get("http.auth.user.id")
		assert.Equal(t, "mailserver", userID)
		assert.Empty(t, next.request.Header.Values("X-Scanner-Token"))
	})

	t.Run("default header ignored", func(t *testing.T) {
		r, _ := newTestRequest(http.MethodGet, nil)
		r.Header.Set("X-API-KEY", mailKey)
		w := httptest.NewRecorder()
		next := new(nextHandler)

		err := h.ServeHTTP(w, r, next)

		handlerErr := requireHandlerError(t, err)
		assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
		assert.ErrorIs(t, err, rejectMissing.err)
		assert.Equal(t, `APIKey header="X-Scanner-Token"`, w.Header().Get("WWW-Authenticate"))
		assert.Zero(t, next.calls)
	})
}

func TestServeHTTPMethods(t *testing.T) {
	methods := []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodConnect,
		http.MethodTrace, "PROPFIND",
	}
	h := newMailHandler(t)
	for _, method := range methods {
		t.Run(method+" without key", func(t *testing.T) {
			r, _ := newTestRequest(method, nil)
			next := new(nextHandler)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			handlerErr := requireHandlerError(t, err)
			assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
			assert.Zero(t, next.calls)
		})

		t.Run(method+" with key", func(t *testing.T) {
			r, repl := newTestRequest(method, nil)
			r.Header.Set("X-API-KEY", mailKey)
			next := new(nextHandler)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			require.NoError(t, err)
			assert.Equal(t, 1, next.calls)
			userID, _ := repl.Get("http.auth.user.id")
			assert.Equal(t, "mailserver", userID)
		})
	}
}

func TestServeHTTPConnectionClose(t *testing.T) {
	tests := []struct {
		name          string
		protoMajor    int
		protoMinor    int
		contentLength int64
		wantClose     bool
	}{
		{"HTTP/1.1 with body", 1, 1, 2_000_000, true},
		{"HTTP/1.1 chunked body", 1, 1, -1, true},
		{"HTTP/1.0 with body", 1, 0, 10, true},
		{"HTTP/1.1 without body", 1, 1, 0, false},
		{"HTTP/2 with body", 2, 0, 2_000_000, false},
		{"HTTP/2 unknown length", 2, 0, -1, false},
		{"HTTP/3 with body", 3, 0, 2_000_000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newMailHandler(t)
			body := &countingBody{data: strings.NewReader(strings.Repeat("x", 4096))}
			r, _ := newTestRequest(http.MethodPost, body)
			r.ProtoMajor, r.ProtoMinor = tt.protoMajor, tt.protoMinor
			r.Proto = fmt.Sprintf("HTTP/%d.%d", tt.protoMajor, tt.protoMinor)
			r.ContentLength = tt.contentLength
			r.Header.Set("Expect", "100-continue")
			r.Header.Set("X-API-KEY", scannerKey)
			w := httptest.NewRecorder()
			next := new(nextHandler)

			err := h.ServeHTTP(w, r, next)

			handlerErr := requireHandlerError(t, err)
			assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
			if tt.wantClose {
				assert.Equal(t, "close", w.Header().Get("Connection"))
			} else {
				assert.Empty(t, w.Header().Get("Connection"))
			}
			assert.Zero(t, body.reads, "handler read the body of a rejected request")
			assert.Zero(t, next.calls)
		})
	}
}

func TestServeHTTPValidKeyBodyUntouched(t *testing.T) {
	h := newMailHandler(t)
	body := &countingBody{data: strings.NewReader("payload")}
	r, _ := newTestRequest(http.MethodPost, body)
	r.ContentLength = int64(len("payload"))
	r.Header.Set("X-API-KEY", mailKey)
	w := httptest.NewRecorder()
	next := new(nextHandler)

	err := h.ServeHTTP(w, r, next)

	require.NoError(t, err)
	assert.Zero(t, body.reads, "handler read the body before the next handler")
	assert.Empty(t, w.Header().Get("Connection"))
	require.Equal(t, 1, next.calls)
	assert.Same(t, body, next.request.Body)
}

func TestServeHTTPWithoutReplacer(t *testing.T) {
	h := newMailHandler(t)
	r := httptest.NewRequest(http.MethodGet, "http://localhost/scanner/scan", nil)
	r.Header.Set("X-API-KEY", mailKey)
	next := new(nextHandler)

	err := h.ServeHTTP(httptest.NewRecorder(), r, next)

	require.NoError(t, err)
	assert.Equal(t, 1, next.calls)
}

func TestServeHTTPNextError(t *testing.T) {
	h := newMailHandler(t)
	r, _ := newTestRequest(http.MethodGet, nil)
	r.Header.Set("X-API-KEY", mailKey)
	upstreamErr := caddyhttp.Error(http.StatusBadGateway, errors.New("upstream down"))
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		return upstreamErr
	})

	err := h.ServeHTTP(httptest.NewRecorder(), r, next)

	handlerErr := requireHandlerError(t, err)
	assert.Equal(t, http.StatusBadGateway, handlerErr.StatusCode)
}

// observeLogs replaces the handler's logger with one that records every
// entry at Debug level and above.
func observeLogs(h *Handler) *observer.ObservedLogs {
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	if h.protection != nil {
		h.protection.sampledLogger = sampledLogger(h.logger)
	}
	return logs
}

// entryText renders a log entry with all its fields, for substring checks.
func entryText(entry observer.LoggedEntry) string {
	return fmt.Sprintf("%s %v", entry.Message, entry.ContextMap())
}

func TestServeHTTPLogsNoKey(t *testing.T) {
	nearMiss := mailKey[:len(mailKey)-1] + "5"
	tests := []struct {
		name   string
		values []string
	}{
		{"valid", []string{mailKey}},
		{"wrong", []string{scannerKey}},
		{"near miss", []string{nearMiss}},
		{"duplicate", []string{mailKey, scannerKey}},
		{"duplicate valid", []string{mailKey, mailKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newMailHandler(t)
			logs := observeLogs(h)

			_ = serveFrom(h, testClientIP, tt.values...)

			assertLogsNoSecret(t, logs, append([]string{mailKey}, tt.values...)...)
		})
	}
}

func TestServeHTTPLogsRejection(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		reason string
	}{
		{"missing", nil, "missing"},
		{"empty", []string{""}, "missing"},
		{"invalid", []string{scannerKey}, "invalid"},
		{"duplicate", []string{mailKey, scannerKey}, "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newMailHandler(t)
			logs := observeLogs(h)
			r, _ := newTestRequest(http.MethodDelete, nil)
			for _, value := range tt.values {
				r.Header.Add("X-API-KEY", value)
			}

			_ = h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

			entries := logs.All()
			require.Len(t, entries, 1)
			entry := entries[0]
			fields := entry.ContextMap()
			assert.Equal(t, zapcore.DebugLevel, entry.Level)
			assert.Equal(t, tt.reason, fields["reason"])
			assert.Equal(t, testClientIP, fields["client_ip"])
			assert.Equal(t, http.MethodDelete, fields["method"])
			assert.Equal(t, "/scanner/scan", fields["path"])
		})
	}
}

func TestServeHTTPLogsNothingOnSuccess(t *testing.T) {
	h := newMailHandler(t)
	logs := observeLogs(h)
	r, _ := newTestRequest(http.MethodGet, nil)
	r.Header.Set("X-API-KEY", mailKey)

	err := h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

	require.NoError(t, err)
	assert.Zero(t, logs.Len())
}

func TestServeHTTPRejectionLogLevel(t *testing.T) {
	h := newMailHandler(t)
	core, logs := observer.New(zapcore.InfoLevel)
	h.logger = zap.New(core)
	h.protection.sampledLogger = sampledLogger(h.logger)
	r, _ := newTestRequest(http.MethodGet, nil)
	r.Header.Set("X-API-KEY", scannerKey)

	_ = h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

	assert.Zero(t, logs.Len())
}

func TestServeHTTPConcurrent(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
		},
		ClientHeader: "X-Api-Client",
		// Half of the requests fail; throttling would turn them into 429s.
		Throttle: &FailureThrottle{Disabled: true},
	})
	keys := []string{mailKey, scannerKey, backupKey, ""}
	wantClients := []string{"mailserver", "scanner", "", ""}
	const workers, requestsPerWorker = 8, 200
	failures := make(chan string, workers*requestsPerWorker)
	var wg sync.WaitGroup

	for worker := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range requestsPerWorker {
				keyIndex := (worker + i) % len(keys)
				r, repl := newTestRequest(http.MethodGet, nil)
				r.Header.Set("X-API-KEY", keys[keyIndex])
				next := new(nextHandler)

				err := h.ServeHTTP(httptest.NewRecorder(), r, next)

				userID, _ := repl.Get("http.auth.user.id")
				admitted := err == nil && next.calls == 1
				if admitted != (wantClients[keyIndex] != "") || (admitted && userID != wantClients[keyIndex]) {
					failures <- fmt.Sprintf("key %d: err %v, next calls %d, user %v",
						keyIndex, err, next.calls, userID)
				}
			}
		}()
	}
	wg.Wait()
	close(failures)

	for failure := range failures {
		t.Error(failure)
	}
}

// served is the outcome of one request sent with serveWithKey.
type served struct {
	err      error
	recorder *httptest.ResponseRecorder
	next     *nextHandler
	repl     *caddy.Replacer
}

// serveWithKey sends one GET request with the key header set to key
// through h.
func serveWithKey(h *Handler, key string) served {
	r, repl := newTestRequest(http.MethodGet, nil)
	r.Header.Set("X-API-KEY", key)
	result := served{recorder: httptest.NewRecorder(), next: new(nextHandler), repl: repl}
	result.err = h.ServeHTTP(result.recorder, r, result.next)
	return result
}

func TestServeHTTPHashedKey(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: digestOf(mailKey)},
			{Client: "scanner", Key: scannerKey},
		},
		ClientHeader: "X-Api-Client",
	})
	tests := []struct {
		name   string
		key    string
		client string // "" for a rejected key
	}{
		{"plaintext of digest", mailKey, "mailserver"},
		{"plaintext key", scannerKey, "scanner"},
		{"digest itself", digestOf(mailKey), ""},
		{"hex of digest", strings.TrimPrefix(digestOf(mailKey), digestPrefix), ""},
		{"digest of plaintext key", digestOf(scannerKey), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := serveWithKey(h, tt.key)

			if tt.client == "" {
				handlerErr := requireHandlerError(t, got.err)
				assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
				assert.ErrorIs(t, got.err, errKeyInvalid)
				assert.Zero(t, got.next.calls)
				return
			}
			require.NoError(t, got.err)
			require.Equal(t, 1, got.next.calls)
			userID, _ := got.repl.Get("http.auth.user.id")
			assert.Equal(t, tt.client, userID)
			assert.Equal(t, []string{tt.client}, got.next.request.Header.Values("X-Api-Client"))
			assert.Empty(t, got.next.request.Header.Values("X-API-KEY"))
		})
	}
}

// newExpiringHandler returns a provisioned handler whose client
// "mailserver" has a key that expires at expires, and whose client
// "scanner" has a key without expiry. Its clock returns *now.
func newExpiringHandler(t *testing.T, expires time.Time, now *time.Time) *Handler {
	t.Helper()
	*now = expires.Add(-time.Hour)
	return provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey, Expires: expires.Format(time.RFC3339Nano)},
			{Client: "scanner", Key: scannerKey},
		},
		now: func() time.Time { return *now },
	})
}

func TestServeHTTPExpiry(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		now      time.Time
		admitted bool
	}{
		{"a day before", expires.Add(-24 * time.Hour), true},
		{"one nanosecond before", expires.Add(-time.Nanosecond), true},
		{"at expiry", expires, true},
		{"one nanosecond after", expires.Add(time.Nanosecond), false},
		{"a year after", expires.AddDate(1, 0, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var now time.Time
			h := newExpiringHandler(t, expires, &now)
			now = tt.now

			got := serveWithKey(h, mailKey)
			withoutExpiry := serveWithKey(h, scannerKey)

			require.NoError(t, withoutExpiry.err, "a key without expiry")
			assert.Equal(t, 1, withoutExpiry.next.calls)
			if tt.admitted {
				require.NoError(t, got.err)
				assert.Equal(t, 1, got.next.calls)
				return
			}
			handlerErr := requireHandlerError(t, got.err)
			assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
			assert.ErrorIs(t, got.err, errKeyInvalid)
			assert.Equal(t, `APIKey header="X-API-KEY"`, got.recorder.Header().Get("WWW-Authenticate"))
			assert.Zero(t, got.next.calls, "next handler ran")
			_, found := got.repl.Get("http.auth.user.id")
			assert.False(t, found, "http.auth.user.id set for an expired key")
		})
	}
}

// TestServeHTTPExpiredLikeInvalid checks that a client cannot tell an
// expired key from an invalid one.
func TestServeHTTPExpiredLikeInvalid(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	var now time.Time
	h := newExpiringHandler(t, expires, &now)
	now = expires.Add(time.Second)

	expired := serveWithKey(h, mailKey)
	invalid := serveWithKey(h, backupKey)

	expiredErr := requireHandlerError(t, expired.err)
	invalidErr := requireHandlerError(t, invalid.err)
	assert.Equal(t, invalidErr.StatusCode, expiredErr.StatusCode)
	assert.ErrorIs(t, expired.err, errKeyInvalid)
	assert.Equal(t, invalidErr.Err.Error(), expiredErr.Err.Error())
	assert.Equal(t, invalid.recorder.Header(), expired.recorder.Header())
	assert.Equal(t, invalid.recorder.Code, expired.recorder.Code)
	assert.Equal(t, invalid.recorder.Body.String(), expired.recorder.Body.String())
}

func TestServeHTTPForbidden(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
			{Client: "backup", Key: digestOf(backupKey)},
		},
		Allow:        []string{"scanner", "backup"},
		ClientHeader: "X-Api-Client",
	})

	t.Run("not allowed", func(t *testing.T) {
		r, repl := newTestRequest(http.MethodGet, nil)
		r.Header.Set("X-API-KEY", mailKey)
		r.Header.Set("X-Api-Client", "forged")
		w := httptest.NewRecorder()
		next := new(nextHandler)

		err := h.ServeHTTP(w, r, next)

		handlerErr := requireHandlerError(t, err)
		assert.Equal(t, http.StatusForbidden, handlerErr.StatusCode)
		assert.ErrorIs(t, err, rejectForbidden.err)
		assert.Equal(t, "API key not allowed on this route", handlerErr.Err.Error())
		assert.NotContains(t, err.Error(), mailKey)
		assert.NotContains(t, err.Error(), "mailserver")
		assert.Empty(t, w.Header().Values("WWW-Authenticate"), "403 with a challenge")
		assert.Zero(t, next.calls, "next handler ran")
		assert.Zero(t, w.Body.Len(), "handler wrote a body")
		_, found := repl.Get("http.auth.user.id")
		assert.False(t, found, "http.auth.user.id set on a forbidden request")
		assert.Equal(t, []string{"forged"}, r.Header.Values("X-Api-Client"), "a forbidden request was changed")
		assert.Equal(t, []string{mailKey}, r.Header.Values("X-API-KEY"), "a forbidden request was changed")
	})

	for key, client := range map[string]string{scannerKey: "scanner", backupKey: "backup"} {
		t.Run(client+" allowed", func(t *testing.T) {
			got := serveWithKey(h, key)

			require.NoError(t, got.err)
			assert.Equal(t, 1, got.next.calls)
			userID, _ := got.repl.Get("http.auth.user.id")
			assert.Equal(t, client, userID)
		})
	}

	t.Run("unknown key", func(t *testing.T) {
		got := serveWithKey(h, "unkn0wn-key-0123456789")

		handlerErr := requireHandlerError(t, got.err)
		assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
		assert.Equal(t, `APIKey header="X-API-KEY"`, got.recorder.Header().Get("WWW-Authenticate"))
		assert.Zero(t, got.next.calls)
	})
}

// TestServeHTTPForbiddenWithBody checks that a forbidden request with a
// body closes its HTTP/1.1 connection without reading the body, as a 401
// does.
func TestServeHTTPForbiddenWithBody(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
		},
		Allow: []string{"scanner"},
	})
	body := &countingBody{data: strings.NewReader("payload")}
	r, _ := newTestRequest(http.MethodPost, body)
	r.ContentLength = int64(len("payload"))
	r.Header.Set("X-API-KEY", mailKey)
	w := httptest.NewRecorder()

	err := h.ServeHTTP(w, r, new(nextHandler))

	handlerErr := requireHandlerError(t, err)
	assert.Equal(t, http.StatusForbidden, handlerErr.StatusCode)
	assert.Equal(t, "close", w.Header().Get("Connection"))
	assert.Zero(t, body.reads)
}

// TestServeHTTPExpiredNotAllowed checks that an expired key of a client
// left out of the allow list gets 401, as an invalid key does, and not
// 403, which would show that the key was once valid.
func TestServeHTTPExpiredNotAllowed(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	now := expires.Add(-time.Hour)
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey, Expires: "2027-01-31T00:00:00Z"},
			{Client: "scanner", Key: scannerKey},
		},
		Allow: []string{"scanner"},
		now:   func() time.Time { return now },
	})
	now = expires.Add(time.Hour)

	got := serveWithKey(h, mailKey)

	handlerErr := requireHandlerError(t, got.err)
	assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
	assert.ErrorIs(t, got.err, errKeyInvalid)
	assert.Equal(t, `APIKey header="X-API-KEY"`, got.recorder.Header().Get("WWW-Authenticate"))
	assert.Zero(t, got.next.calls)
}

func TestServeHTTPLogsExpiredAndForbidden(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	now := expires.Add(-time.Hour)
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey, Expires: "2027-01-31T00:00:00Z"},
			{Client: "scanner", Key: scannerKey},
			{Client: "backup", Key: backupKey},
		},
		Allow: []string{"mailserver", "scanner"},
		now:   func() time.Time { return now },
	})
	now = expires.Add(time.Hour)
	tests := []struct {
		key    string
		reason string
		client any // nil for no client field
	}{
		{mailKey, "expired", "mailserver"},
		{backupKey, "forbidden", "backup"},
		{"unkn0wn-key-0123456789", "invalid", nil},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			logs := observeLogs(h)
			r, _ := newTestRequest(http.MethodGet, nil)
			r.Header.Set("X-API-KEY", tt.key)

			_ = h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

			entries := logs.All()
			require.Len(t, entries, 1)
			fields := entries[0].ContextMap()
			assert.Equal(t, zapcore.DebugLevel, entries[0].Level)
			assert.Equal(t, "request rejected", entries[0].Message)
			assert.Equal(t, tt.reason, fields["reason"])
			assert.Equal(t, tt.client, fields["client"])
			assert.Equal(t, testClientIP, fields["client_ip"])
			assert.NotContains(t, entryText(entries[0]), tt.key)
		})
	}
}

func TestServeHTTPConnectionHeader(t *testing.T) {
	tests := []struct {
		name       string
		connection []string // values of Connection sent by the client
		want       []string // tokens expected to remain, in order
	}{
		{"only client header", []string{"X-Api-Client"}, nil},
		{"after keep-alive", []string{"keep-alive, X-Api-Client"}, []string{"keep-alive"}},
		{"before keep-alive", []string{"X-Api-Client, keep-alive"}, []string{"keep-alive"}},
		{"lowercase", []string{"keep-alive, x-api-client"}, []string{"keep-alive"}},
		{"uppercase", []string{"X-API-CLIENT,Upgrade"}, []string{"Upgrade"}},
		{"no spaces", []string{"keep-alive,X-Api-Client,Upgrade"}, []string{"keep-alive", "Upgrade"}},
		{"extra whitespace", []string{"keep-alive ,\t X-Api-Client \t, Upgrade"}, []string{"keep-alive", "Upgrade"}},
		{"twice", []string{"X-Api-Client, keep-alive, x-api-client"}, []string{"keep-alive"}},
		{"in second value", []string{"keep-alive", "Upgrade, X-Api-Client"}, []string{"keep-alive", "Upgrade"}},
		{"similar names kept", []string{"X-Api-Client-Id, X-Api-Clients"}, []string{"X-Api-Client-Id", "X-Api-Clients"}},
		{"without client header", []string{"keep-alive"}, []string{"keep-alive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionHandler(t, &Handler{
				Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
				ClientHeader: "X-Api-Client",
			})
			r, _ := newTestRequest(http.MethodGet, nil)
			r.Header.Set("X-API-KEY", mailKey)
			r.Header["Connection"] = append([]string(nil), tt.connection...)
			next := new(nextHandler)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			require.NoError(t, err)
			require.Equal(t, 1, next.calls)
			assert.Equal(t, tt.want, connectionTokens(r.Header["Connection"]))
			assert.Equal(t, []string{"mailserver"}, r.Header.Values("X-Api-Client"))
		})
	}
}

// connectionTokens splits the values of a Connection header into trimmed,
// non-empty tokens.
func connectionTokens(values []string) []string {
	var tokens []string
	for _, value := range values {
		for token := range strings.SplitSeq(value, ",") {
			if token = strings.TrimSpace(token); token != "" {
				tokens = append(tokens, token)
			}
		}
	}
	return tokens
}

// TestServeHTTPConnectionHeaderUntouched checks the requests whose
// Connection header the handler leaves as it is: without client_header,
// and when the request is rejected.
func TestServeHTTPConnectionHeaderUntouched(t *testing.T) {
	t.Run("no client_header", func(t *testing.T) {
		h := newMailHandler(t)
		r, _ := newTestRequest(http.MethodGet, nil)
		r.Header.Set("X-API-KEY", mailKey)
		r.Header.Set("Connection", "keep-alive, X-Api-Client")

		err := h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

		require.NoError(t, err)
		assert.Equal(t, []string{"keep-alive, X-Api-Client"}, r.Header["Connection"])
	})

	t.Run("rejected", func(t *testing.T) {
		h := provisionHandler(t, &Handler{
			Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
			ClientHeader: "X-Api-Client",
		})
		r, _ := newTestRequest(http.MethodGet, nil)
		r.Header.Set("X-API-KEY", scannerKey)
		r.Header.Set("Connection", "keep-alive, X-Api-Client")

		err := h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

		requireHandlerError(t, err)
		assert.Equal(t, []string{"keep-alive, X-Api-Client"}, r.Header["Connection"])
	})
}

func TestRemoveToken(t *testing.T) {
	values := []string{"keep-alive, Upgrade"}

	kept := removeToken(values, "X-Api-Client")

	assert.Equal(t, []string{"keep-alive, Upgrade"}, kept)
	assert.Same(t, &values[0], &kept[0], "values copied although no token matched")
}

// trailerBody is a request body that fills in its request's trailers when
// it reaches the end, as net/http's server does.
type trailerBody struct {
	data     io.Reader
	trailer  http.Header
	received http.Header // the trailer fields the client sent
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.data.Read(p)
	if err == io.EOF {
		for name, values := range b.received {
			b.trailer[name] = values
		}
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

// trailerRecorder is a next handler that reads the whole body and records
// the request's trailers afterwards, as a proxy does.
type trailerRecorder struct {
	calls   int
	body    string
	trailer http.Header
}

func (n *trailerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.calls++
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	n.body = string(body)
	n.trailer = r.Trailer.Clone()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func TestServeHTTPTrailers(t *testing.T) {
	tests := []struct {
		name         string
		forwardKey   bool
		clientHeader string
		want         http.Header
	}{
		{
			name:         "key and client header removed",
			clientHeader: "X-Api-Client",
			want:         http.Header{"X-Checksum": {"abc123"}},
		},
		{
			name: "key removed without client_header",
			want: http.Header{"X-Api-Client": {"admin"}, "X-Checksum": {"abc123"}},
		},
		{
			name:         "forward_key keeps key trailer",
			forwardKey:   true,
			clientHeader: "X-Api-Client",
			want:         http.Header{"X-Api-Key": {scannerKey}, "X-Checksum": {"abc123"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionHandler(t, &Handler{
				Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
				ForwardKey:   tt.forwardKey,
				ClientHeader: tt.clientHeader,
			})
			r, _ := newTestRequest(http.MethodPost, nil)
			r.Header.Set("X-API-KEY", mailKey)
			r.ContentLength = -1
			r.Trailer = http.Header{"X-Api-Client": nil, "X-Api-Key": nil, "X-Checksum": nil}
			r.Body = &trailerBody{
				data:    strings.NewReader("payload"),
				trailer: r.Trailer,
				received: http.Header{
					"X-Api-Client": {"admin"},
					"X-Api-Key":    {scannerKey},
					"X-Checksum":   {"abc123"},
				},
			}
			next := new(trailerRecorder)

			err := h.ServeHTTP(httptest.NewRecorder(), r, next)

			require.NoError(t, err)
			require.Equal(t, 1, next.calls)
			assert.Equal(t, "payload", next.body)
			assert.Equal(t, tt.want, next.trailer)
		})
	}
}

// TestServeHTTPNoTrailersBodyUntouched checks that a request without
// declared trailers keeps its own body.
func TestServeHTTPNoTrailersBodyUntouched(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
		ClientHeader: "X-Api-Client",
	})
	body := &countingBody{data: strings.NewReader("payload")}
	r, _ := newTestRequest(http.MethodPost, body)
	r.Header.Set("X-API-KEY", mailKey)
	next := new(nextHandler)

	err := h.ServeHTTP(httptest.NewRecorder(), r, next)

	require.NoError(t, err)
	require.Equal(t, 1, next.calls)
	assert.Same(t, body, next.request.Body)
}

// TestServeHTTPRejectionError checks the handler error of each kind of
// rejection: the fields that caddyhttp.Error would fill in are set, and
// every rejection gets its own ID for {http.error.id} and the logs.
func TestServeHTTPRejectionError(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 3, Window: caddy.Duration(time.Minute)})
	idPattern := regexp.MustCompile(`^[0-9a-v]{9}$`)
	requests := []struct {
		name     string
		clientIP string
		keys     []string
	}{
		{"wrong key", "192.0.2.1", []string{"wrong-key-0123456789abcdef"}},
		{"no header", "192.0.2.1", nil},
		{"header twice", "192.0.2.1", []string{mailKey, mailKey}},
		{"throttled", "192.0.2.1", []string{mailKey}},
		{"forbidden", "192.0.2.2", []string{backupKey}},
	}

	ids := make(map[string]string)
	for _, request := range requests {
		got := serveFrom(h, request.clientIP, request.keys...)
		handlerErr := requireHandlerError(t, got.err)

		assert.Regexp(t, idPattern, handlerErr.ID, request.name)
		assert.Equal(t, rejectionTrace, handlerErr.Trace, request.name)
		assert.NotContains(t, handlerErr.Error(), mailKey, request.name)
		if earlier, found := ids[handlerErr.ID]; found {
			t.Errorf("%s got the ID %s of %s", request.name, handlerErr.ID, earlier)
		}
		ids[handlerErr.ID] = request.name
	}
}

// TestServeHTTPErrorIDsDiffer checks that many rejections get distinct IDs.
func TestServeHTTPErrorIDsDiffer(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys:     []ClientKey{{Client: "mailserver", Key: mailKey}},
		Throttle: &FailureThrottle{Disabled: true},
	})
	seen := make(map[string]bool)
	for range 1000 {
		r, _ := newTestRequest(http.MethodGet, nil)
		handlerErr := requireHandlerError(t, h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler)))
		seen[handlerErr.ID] = true
	}
	assert.Len(t, seen, 1000, "distinct IDs")
}

// TestServeHTTPClockReads checks that a request reads the clock at most
// once, and only when a check needs the time: an expiry time, a rate
// limit, a failure to count or a running throttling.
func TestServeHTTPClockReads(t *testing.T) {
	var reads atomic.Int64
	h := provisionWithCleanup(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey, Expires: "2099-01-01T00:00:00Z"},
			{Client: "backup", Key: backupKey, Expires: "2099-01-01T00:00:00Z"},
		},
		RateLimits: []RateLimit{
			{Client: "backup", Requests: 1000, Interval: caddy.Duration(time.Minute)},
		},
		Throttle: &FailureThrottle{MaxFailures: 2, Window: caddy.Duration(time.Minute)},
		now: func() time.Time {
			reads.Add(1)
			return throttleStart
		},
	})
	tests := []struct {
		name     string
		clientIP string
		keys     []string
		want     int64
	}{
		{"valid key", "192.0.2.1", []string{mailKey}, 0},
		{"key with expiry", "192.0.2.1", []string{scannerKey}, 1},
		{"key with expiry and rate limit", "192.0.2.1", []string{backupKey}, 1},
		{"wrong key", "192.0.2.2", []string{"wrong-key-0123456789abcdef"}, 1},
		{"no header", "192.0.2.2", nil, 1},
		{"valid key while another address is throttled", "192.0.2.1", []string{mailKey}, 1},
		{"throttled address", "192.0.2.2", []string{mailKey}, 1},
	}
	for _, tt := range tests {
		reads.Store(0)
		serveFrom(h, tt.clientIP, tt.keys...)
		assert.Equal(t, tt.want, reads.Load(), tt.name)
	}
}
