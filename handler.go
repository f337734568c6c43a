package apikey

import (
	"errors"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Rejection reasons, as logged. The errors carry no part of the presented
// value, because Caddy logs handler errors and exposes them to
// handle_errors as {http.error.message}.
var (
	errKeyMissing   = errors.New("API key missing")
	errKeyInvalid   = errors.New("API key invalid")
	errKeyDuplicate = errors.New("API key header sent more than once")
)

var rejectionReasons = map[error]string{
	errKeyMissing:   "missing",
	errKeyInvalid:   "invalid",
	errKeyDuplicate: "duplicate",
}

// ServeHTTP passes the request to next if it carries exactly one value of
// the key header and that value is a configured key. Otherwise it returns a
// 401 handler error, and next is not called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	values := r.Header[h.keyHeader]
	switch {
	case len(values) == 0 || (len(values) == 1 && values[0] == ""):
		return h.reject(w, r, errKeyMissing)
	case len(values) > 1:
		return h.reject(w, r, errKeyDuplicate)
	}

	client, ok := h.keys.lookup(values[0])
	if !ok {
		return h.reject(w, r, errKeyInvalid)
	}

	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("http.auth.user.id", client)
	}
	if !h.ForwardKey {
		delete(r.Header, h.keyHeader)
	}
	if h.clientHeader != "" {
		r.Header[h.clientHeader] = []string{client}
	}

	return next.ServeHTTP(w, r)
}

// reject logs the rejection and returns the 401 handler error.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, reason error) error {
	header := w.Header()
	header.Set("Www-Authenticate", h.challenge)

	// Over HTTP/1.x, a body the handler did not read is drained by net/http
	// before the response is written, because Caddy's body wrappers hide
	// the Expect: 100-continue state from it. A client that waits for
	// 100 Continue then stalls until a read timeout. Closing the connection
	// instead sends the 401 at once and leaves the body unread.
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		header.Set("Connection", "close")
	}

	if entry := h.logger.Check(zapcore.DebugLevel, "request rejected"); entry != nil {
		clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
		entry.Write(
			zap.String("reason", rejectionReasons[reason]),
			zap.String("client_ip", clientIP),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
		)
	}

	return caddyhttp.Error(http.StatusUnauthorized, reason)
}
