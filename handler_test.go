package apikey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

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

func TestServeHTTPRejections(t *testing.T) {
	nearMiss := mailKey[:len(mailKey)-1] + "5"
	tests := []struct {
		name   string
		values []string // values of X-API-KEY, nil for no header
		reason error
	}{
		{"missing", nil, errKeyMissing},
		{"empty value", []string{""}, errKeyMissing},
		{"wrong key", []string{scannerKey}, errKeyInvalid},
		{"near miss at end", []string{nearMiss}, errKeyInvalid},
		{"near miss at start", []string{"n" + mailKey[1:]}, errKeyInvalid},
		{"other case", []string{strings.ToUpper(mailKey)}, errKeyInvalid},
		{"prefix of key", []string{mailKey[:len(mailKey)-4]}, errKeyInvalid},
		{"suffix of key", []string{mailKey[4:]}, errKeyInvalid},
		{"key as prefix", []string{mailKey + "0"}, errKeyInvalid},
		{"key as suffix", []string{"0" + mailKey}, errKeyInvalid},
		{"key with space", []string{mailKey + " "}, errKeyInvalid},
		{"two valid values", []string{mailKey, mailKey}, errKeyDuplicate},
		{"valid then wrong", []string{mailKey, scannerKey}, errKeyDuplicate},
		{"wrong then valid", []string{scannerKey, mailKey}, errKeyDuplicate},
		{"empty then valid", []string{"", mailKey}, errKeyDuplicate},
		{"two empty values", []string{"", ""}, errKeyDuplicate},
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
			assert.ErrorIs(t, err, tt.reason)
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
		assert.ErrorIs(t, err, errKeyMissing)
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
			r, _ := newTestRequest(http.MethodGet, nil)
			for _, value := range tt.values {
				r.Header.Add("X-API-KEY", value)
			}

			_ = h.ServeHTTP(httptest.NewRecorder(), r, new(nextHandler))

			for _, entry := range logs.All() {
				text := entryText(entry)
				assert.NotContains(t, text, mailKey)
				for _, value := range tt.values {
					assert.NotContains(t, text, value)
				}
			}
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
