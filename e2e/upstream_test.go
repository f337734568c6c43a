package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recordedRequest is what the upstream saw of one proxied request.
type recordedRequest struct {
	Method     string
	Path       string
	RawPath    string
	RequestURI string
	Header     http.Header
	BodyLength int64
}

// upstream replaces the Django scanner in tests. It records every request
// and responds to each one with a small JSON verdict.
type upstream struct {
	server *httptest.Server

	mu       sync.Mutex
	requests []recordedRequest
}

// startUpstream starts a recording upstream on 127.0.0.1 and closes it when
// the test ends.
func startUpstream(t *testing.T) *upstream {
	t.Helper()
	up := &upstream{}
	up.server = httptest.NewServer(http.HandlerFunc(up.serveHTTP))
	t.Cleanup(up.server.Close)
	return up
}

func (up *upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	bodyLength, _ := io.Copy(io.Discard, r.Body)

	up.mu.Lock()
	up.requests = append(up.requests, recordedRequest{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawPath:    r.URL.RawPath,
		RequestURI: r.RequestURI,
		Header:     r.Header.Clone(),
		BodyLength: bodyLength,
	})
	up.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"verdict":"clean"}`)
}

// address returns the host:port that reverse_proxy dials.
func (up *upstream) address() string {
	return strings.TrimPrefix(up.server.URL, "http://")
}

// take returns the requests recorded so far and clears the record.
func (up *upstream) take() []recordedRequest {
	up.mu.Lock()
	defer up.mu.Unlock()
	requests := up.requests
	up.requests = nil
	return requests
}
