package apikey

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// rejection is one reason to turn a request away. Its error carries no
// part of the presented value, because Caddy logs handler errors and
// exposes them to handle_errors as {http.error.message}.
type rejection struct {
	status int
	reason string // logged, and the result label of the metric
	err    error  // returned to Caddy

	// index is the rejection's position in rejectionKinds, which indexes
	// its counters.
	index int
}

var errKeyInvalid = errors.New("API key invalid")

var (
	rejectMissing = &rejection{status: http.StatusUnauthorized, reason: "missing",
		err: errors.New("API key missing")}
	rejectDuplicate = &rejection{status: http.StatusUnauthorized, reason: "duplicate",
		err: errors.New("API key header sent more than once")}
	rejectInvalid = &rejection{status: http.StatusUnauthorized, reason: "invalid",
		err: errKeyInvalid}

	// An expired key gets the same error as an invalid one, so only the
	// log distinguishes them.
	rejectExpired = &rejection{status: http.StatusUnauthorized, reason: "expired",
		err: errKeyInvalid}
	rejectForbidden = &rejection{status: http.StatusForbidden, reason: "forbidden",
		err: errors.New("API key not allowed on this route")}

	rejectThrottled = &rejection{status: http.StatusTooManyRequests,
		reason: resultThrottled, err: errThrottled}
	rejectRateLimited = &rejection{status: http.StatusTooManyRequests,
		reason: resultRateLimited, err: errRateLimited}
)

// authenticatedVar is the Caddy request variable in which an admitting
// handler leaves the key's digest, so that a later api_key handler on the
// same request can check the same key after the header was removed.
const authenticatedVar = "api_key.authenticated"

// authentication is the value of authenticatedVar. It formats as the
// client name, so that a {http.vars.api_key.authenticated} placeholder
// shows no digest.
type authentication struct {
	digest [sha256.Size]byte
	client string
}

func (a *authentication) String() string { return a.client }

// requestTime is the time of one request, read from the handler's clock
// on first use. An admitted request needs no time unless its key has an
// expiry time or a rate limit, or some address is throttled. A clock read
// took about a fifth of such a request in a CPU profile of
// BenchmarkAlternatives on a KVM virtual machine.
type requestTime struct {
	clock func() time.Time
	now   time.Time
	read  bool
}

// get returns the request's time, reading the clock on the first call.
func (t *requestTime) get() time.Time {
	if !t.read {
		t.now, t.read = t.clock(), true
	}
	return t.now
}

// ServeHTTP passes the request to next if it carries exactly one value of
// the key header and that value is a configured, unexpired key of an
// allowed client. Otherwise it returns a 401 or 403 handler error, and next
// is not called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	now := requestTime{clock: h.now}
	wait, address := h.throttledFor(r, &now)
	if wait > 0 {
		setRetryAfter(w, wait)
		h.protection.anonymous[rejectThrottled.index].Inc()
		return h.reject(w, r, rejectThrottled, "")
	}

	values := r.Header[h.keyHeader]
	var entry *keyEntry
	switch {
	case len(values) == 0:
		// An earlier api_key handler may have admitted the request and
		// removed the key header; it left the key's digest behind.
		earlier, found := caddyhttp.GetVar(r.Context(), authenticatedVar).(*authentication)
		if !found {
			return h.rejectFailure(w, r, rejectMissing, address, &now)
		}
		if entry, found = h.keys.lookupDigest(earlier.digest); !found {
			// A key that an earlier handler accepted is no failure of
			// the client address, so it is not counted for throttling.
			h.protection.anonymous[rejectInvalid.index].Inc()
			return h.reject(w, r, rejectInvalid, "")
		}
	case len(values) == 1 && values[0] == "":
		return h.rejectFailure(w, r, rejectMissing, address, &now)
	case len(values) > 1:
		return h.rejectFailure(w, r, rejectDuplicate, address, &now)
	default:
		var found bool
		if entry, found = h.keys.lookup(values[0]); !found {
			return h.rejectFailure(w, r, rejectInvalid, address, &now)
		}
	}

	if !entry.expires.IsZero() && entry.expired(now.get()) {
		entry.counters.expired.Inc()
		h.recordFailure(r, address, &now)
		return h.reject(w, r, rejectExpired, entry.client)
	}
	if !entry.allowed {
		entry.counters.forbidden.Inc()
		return h.reject(w, r, rejectForbidden, entry.client)
	}
	if entry.limiter != nil && !entry.limiter.AllowN(now.get(), 1) {
		entry.counters.rateLimited.Inc()
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter(entry.limiter, now.get())))
		return h.reject(w, r, rejectRateLimited, entry.client)
	}
	entry.counters.allowed.Inc()

	caddyhttp.SetVar(r.Context(), authenticatedVar, entry.authentication)
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("http.auth.user.id", entry.clientID)
	}
	if !h.ForwardKey {
		delete(r.Header, h.keyHeader)
	}
	if h.clientHeader != "" {
		r.Header[h.clientHeader] = []string{entry.client}
		if connection := r.Header["Connection"]; len(connection) > 0 {
			r.Header["Connection"] = removeToken(connection, h.clientHeader)
		}
	}
	if r.Trailer != nil && r.Body != nil && r.Body != http.NoBody {
		r.Body = &trailerFilter{ReadCloser: r.Body, trailer: r.Trailer, names: h.filteredTrailers}
	}

	return next.ServeHTTP(w, r)
}

// removeToken returns the values of a comma-separated header such as
// Connection with every token equal to name, ignoring case, removed. A
// Connection token naming the client header would make reverse_proxy
// remove that header as hop-by-hop. It returns values itself, without
// allocating, when no token matches.
func removeToken(values []string, name string) []string {
	found := false
	for _, value := range values {
		if containsToken(value, name) {
			found = true
			break
		}
	}
	if !found {
		return values
	}

	kept := make([]string, 0, len(values))
	for _, value := range values {
		var tokens []string
		for rest := value; rest != ""; {
			var token string
			token, rest, _ = strings.Cut(rest, ",")
			if !strings.EqualFold(strings.TrimSpace(token), name) {
				tokens = append(tokens, token)
			}
		}
		if len(tokens) > 0 {
			kept = append(kept, strings.Join(tokens, ","))
		}
	}
	return kept
}

// containsToken reports whether the comma-separated value contains name,
// ignoring case and surrounding whitespace.
func containsToken(value, name string) bool {
	for rest := value; rest != ""; {
		var token string
		token, rest, _ = strings.Cut(rest, ",")
		if strings.EqualFold(strings.TrimSpace(token), name) {
			return true
		}
	}
	return false
}

// trailerFilter deletes names from a request's trailers when its body
// reaches the end, which is when net/http fills them in. Declared trailers
// share their map with the request that reverse_proxy forwards, so without
// it a trailer could carry the key, or a second, client-chosen client
// name, to the upstream.
type trailerFilter struct {
	io.ReadCloser
	trailer http.Header
	names   []string
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF {
		for field := range f.trailer {
			for _, name := range f.names {
				if sameFieldName(field, name) {
					delete(f.trailer, field)
				}
			}
		}
	}
	return n, err
}

// sameFieldName reports whether two header field names are equal once case
// is ignored and '_' and '.' are read as '-', as CGI and WSGI backends read
// them. Caddy drops request headers with '_' or '.' but not trailers.
func sameFieldName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldFieldByte(a[i]) != foldFieldByte(b[i]) {
			return false
		}
	}
	return true
}

func foldFieldByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_' || c == '.':
		return '-'
	}
	return c
}

// rejectFailure rejects a request that named no valid client, and counts
// it against the client address.
func (h *Handler) rejectFailure(w http.ResponseWriter, r *http.Request, rejected *rejection,
	address netip.Addr, now *requestTime,
) error {
	h.protection.anonymous[rejected.index].Inc()
	h.recordFailure(r, address, now)
	return h.reject(w, r, rejected, "")
}

// reject logs the rejection and returns its handler error. The client is
// named when the key was valid but expired, not allowed or over its rate
// limit.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, rejected *rejection,
	client string,
) error {
	header := w.Header()
	if rejected.status == http.StatusUnauthorized {
		// Assigning the canonical name skips Set's canonicalization, about
		// 15 ns of a 240 ns rejection in BenchmarkAlternatives.
		header["Www-Authenticate"] = []string{h.challenge}
	}

	// Over HTTP/1.x, a body the handler did not read is drained by net/http
	// before the response is written, because Caddy's body wrappers hide
	// the Expect: 100-continue state from it. A client that waits for
	// 100 Continue then stalls until a read timeout. Closing the connection
	// instead sends the response at once and leaves the body unread.
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		header.Set("Connection", "close")
	}

	h.protection.rejections[rejected.index].Add(1)
	if entry := h.protection.sampledLogger.Check(zapcore.DebugLevel, "request rejected"); entry != nil {
		clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
		fields := []zap.Field{
			zap.String("reason", rejected.reason),
			zap.String("client_ip", clientIP),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
		}
		if client != "" {
			fields = append(fields, zap.String("client", client))
		}
		entry.Write(fields...)
	}

	// caddyhttp.Error would fill in Trace with runtime.Caller and
	// fmt.Sprintf, which took some 60% of a rejection's time in a CPU
	// profile of BenchmarkServeHTTP (Caddy v2.11.9).
	return caddyhttp.HandlerError{
		Err:        rejected.err,
		StatusCode: rejected.status,
		ID:         newErrorID(),
		Trace:      rejectionTrace,
	}
}

// rejectionTrace is the Trace of every rejection's handler error, in the
// form that caddyhttp.Error gives it, without the line number.
const rejectionTrace = "apikey.(*Handler).reject (handler.go)"

// newErrorID returns a random ID of 9 base-32 digits, as long as the IDs of
// caddyhttp.Error, that identifies one rejection in the logs and in
// {http.error.id}.
func newErrorID() string {
	return strconv.FormatUint(rand.Uint64()>>19|1<<45, 32)[1:]
}
