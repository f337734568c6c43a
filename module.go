// Package apikey provides the api_key HTTP handler for Caddy: it admits
// only requests that carry a configured API key in a request header and
// rejects every other request with 401 before any later handler runs.
package apikey

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// expiryWarning is how long before its expiry a key is logged as
// expiring soon when the config loads.
const expiryWarning = 14 * 24 * time.Hour

// DefaultHeader is the request header that carries the key unless the
// configuration names another one.
const DefaultHeader = "X-API-KEY"

// Handler admits a request only when it carries exactly one value of the
// key header and that value equals one of the configured keys. Every other
// request gets 401 Unauthorized with a WWW-Authenticate challenge, returned
// as a handler error so that handle_errors can shape the response. A
// rejected request never reaches the next handler, and its body is never
// read.
//
// After a request is admitted, the placeholder {http.auth.user.id} holds
// the client's name (the access log shows it as user_id), the key header is
// removed from the request unless forward_key is set, and client_header, if
// set, carries the client's name to the upstream.
//
// Keys are resolved once, when the config is provisioned. A key that
// resolves to nothing, or only in part, stops the config from loading.
//
// Caddyfile syntax:
//
//	api_key [<matcher>] [<key>] {
//		header        <field>
//		key           <client> <key> [{
//			expires <time>
//		}]
//		keys_file     <path>
//		allow         <client...>
//		forward_key
//		client_header <field>
//		max_failures  off | <count> <window>
//		rate          <client|*> <requests>/<interval> [burst <size>]
//	}
//
// The shorthand argument <key> defines one key for the client "default".
type Handler struct {
	// Header is the request header field that carries the key. Its name
	// must not contain '_' or '.', because Caddy drops such request
	// headers by default. Default: X-API-KEY.
	Header string `json:"header,omitempty"`

	// Keys lists the accepted keys, one entry per client. Several entries
	// let keys be rotated without downtime: add the new key under a new
	// client name, move the client over, then remove the old entry.
	Keys []ClientKey `json:"keys,omitempty"`

	// KeysFile is the path of a file with more keys, one "NAME KEY
	// [EXPIRES]" entry a line, where KEY is a secret or a "sha256:"
	// digest and EXPIRES an RFC 3339 time. Blank lines and lines that
	// start with '#' are skipped. The path may contain {env.NAME}
	// placeholders. The file is read when the config loads, so
	// "caddy reload --force" rereads it. Default: unset.
	KeysFile string `json:"keys_file,omitempty"`

	// Allow limits this handler to the named clients, which must be
	// configured in Keys or KeysFile. A valid key of another client gets
	// 403 Forbidden, so one set of keys can serve routes with different
	// permissions. Default: every configured client is allowed.
	Allow []string `json:"allow,omitempty"`

	// ForwardKey passes the key header on to the next handler, and so to
	// the upstream. Default: false, which removes the key header from the
	// request once the key is accepted.
	ForwardKey bool `json:"forward_key,omitempty"`

	// ClientHeader, if set, names a request header that is set to the
	// authenticated client's name before the request goes on. Any value
	// the client sent in that header is replaced. Default: unset.
	ClientHeader string `json:"client_header,omitempty"`

	// Throttle slows down client addresses that send many requests with
	// bad keys. Default: on, with 100 failures a minute.
	Throttle *FailureThrottle `json:"throttle,omitempty"`

	// RateLimits limit how often each authenticated client may call,
	// beyond which requests get 429 Too Many Requests. The state of a
	// limit is kept per Caddy instance, and survives a config reload that
	// keeps the client's limit. Default: no limits.
	RateLimits []RateLimit `json:"rate_limits,omitempty"`

	// The canonical forms of Header and ClientHeader, used on the request
	// path to index http.Header without canonicalizing on every request.
	keyHeader    string
	clientHeader string

	// challenge is the value of the WWW-Authenticate response header.
	challenge string

	// filteredTrailers names the request trailers that are removed from
	// an admitted request: the key header, unless forwarded, and the
	// client header.
	filteredTrailers []string

	keys       *keyring
	logger     *zap.Logger
	protection *protection

	// now returns the current time; tests replace it.
	now func() time.Time
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_key",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and resolves every configured key. It fails when
// a key is missing, empty, too short, only partly resolved, or shared.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()

	if h.Header == "" {
		h.Header = DefaultHeader
	}
	if err := checkHeaderName("header", h.Header); err != nil {
		return err
	}
	h.keyHeader = http.CanonicalHeaderKey(h.Header)
	h.challenge = fmt.Sprintf(`APIKey header="%s"`, h.Header)

	if h.ClientHeader != "" {
		if err := checkHeaderName("client_header", h.ClientHeader); err != nil {
			return err
		}
		h.clientHeader = http.CanonicalHeaderKey(h.ClientHeader)
		if h.clientHeader == h.keyHeader {
			return fmt.Errorf("client_header %q is the key header; choose another field, "+
				"such as X-Api-Client", h.ClientHeader)
		}
	}

	h.filteredTrailers = nil
	if !h.ForwardKey {
		h.filteredTrailers = append(h.filteredTrailers, h.keyHeader)
	}
	if h.clientHeader != "" {
		h.filteredTrailers = append(h.filteredTrailers, h.clientHeader)
	}

	if h.now == nil {
		h.now = time.Now
	}
	keys, err := h.loadKeys()
	if err != nil {
		return err
	}
	h.keys = keys

	if err := h.provisionProtection(ctx); err != nil {
		return err
	}

	h.logger.Info("API keys loaded",
		zap.String("header", h.Header),
		zap.Strings("clients", keys.clientNames()),
		zap.Strings("allow", h.Allow))
	return nil
}

// loadKeys builds the keyring from Keys and KeysFile, checks expiry times
// and the allow list, and logs warnings about keys that are exposed or
// expire soon.
func (h *Handler) loadKeys() (*keyring, error) {
	repl := caddy.NewReplacer()
	resolved, err := resolveClientKeys(repl, h.Keys)
	if err != nil {
		return nil, err
	}

	if h.KeysFile != "" {
		// A key written in place of the path must not reach logs or errors.
		shownPath := showPath(h.KeysFile)
		for _, name := range placeholderNames(h.KeysFile) {
			if !strings.HasPrefix(name, "env.") {
				return nil, fmt.Errorf("keys_file %s: only {env.NAME} placeholders are "+
					"supported in the path", shownPath)
			}
		}
		path, err := repl.ReplaceOrErr(h.KeysFile, true, true)
		if err != nil {
			return nil, fmt.Errorf("keys_file %s: %v", shownPath, err)
		}
		file, err := readKeysFile(path)
		if err != nil {
			return nil, err
		}
		if file.worldReadable {
			h.logger.Warn("keys file is readable by every user on this machine; "+
				"restrict it, for example with chmod 640",
				zap.String("keys_file", shownPath))
		}
		if file.writable {
			h.logger.Warn("keys file is writable by users other than its owner, who "+
				"could add keys; restrict it, for example with chmod 640",
				zap.String("keys_file", shownPath))
		}
		resolved = append(resolved, file.keys...)
	}

	now := h.now()
	for _, key := range resolved {
		if key.long {
			h.logger.Warn("API key is longer than 4 KiB; Caddy responds with 431 to requests "+
				"whose headers exceed the server's max_header_size (16 KiB by default), "+
				"so use a shorter key or raise max_header_size",
				zap.String("client", key.client))
		}
		if key.expires.IsZero() {
			continue
		}
		if now.After(key.expires) {
			return nil, fmt.Errorf("client %s (%s): the key expired at %s; remove it, "+
				"or set a later expiry if it is still in use",
				showToken(key.client), key.origin, key.expires.Format(time.RFC3339))
		}
		if key.expires.Sub(now) <= expiryWarning {
			h.logger.Warn("API key expires soon; rotate it",
				zap.String("client", key.client),
				zap.Time("expires", key.expires))
		}
	}

	ring, err := newKeyring(resolved)
	if err != nil {
		return nil, err
	}

	// Logged only now that newKeyring has ruled out names that are keys.
	for _, configured := range h.Keys {
		literal := len(placeholderNames(configured.Key)) == 0
		if literal && !hasDigestPrefix(configured.Key) {
			h.logger.Warn("API key is written in the config; the admin endpoint and "+
				"autosave expose it, so load it with {env.NAME} or {file.PATH}, or "+
				"give its sha256: digest instead",
				zap.String("client", configured.Client))
		}
	}
	if err := ring.restrict(h.Allow); err != nil {
		return nil, err
	}
	return ring, nil
}

// Validate checks the provisioned handler. Provision has already rejected
// every bad key, so this guards against a handler used without Provision.
func (h *Handler) Validate() error {
	if h.keys == nil || len(h.keys.entries) == 0 {
		return fmt.Errorf("no API keys configured; add a key with 'key <client> <key>' " +
			"or keys_file")
	}
	return nil
}

// checkHeaderName reports whether name is usable as a request header field
// that Caddy passes to handlers. The option names the config field in the
// error.
func checkHeaderName(option, name string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("%s %s is not a valid header field name; "+
			"use letters, digits and '-'", option, showToken(name))
	}
	if looksLikeKey(name) {
		return fmt.Errorf("%s (not shown) looks like a key, and header names are "+
			"sent in responses; use a field name such as X-API-KEY", option)
	}
	if strings.ContainsAny(name, "_.") {
		return fmt.Errorf("%s %s contains '_' or '.'; Caddy drops request headers "+
			"with such names before handlers run, so use '-' instead", option, showToken(name))
	}
	switch http.CanonicalHeaderKey(name) {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Host", "Content-Length":
		return fmt.Errorf("%s %q is a header that HTTP or reverse_proxy handles "+
			"itself; choose another field, such as X-Api-Client", option, name)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
