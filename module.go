// Package apikey provides the api_key HTTP handler for Caddy: it admits
// only requests that carry a configured API key in a request header and
// rejects every other request with 401 before any later handler runs.
package apikey

import (
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

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
//		key           <client> <key>
//		forward_key
//		client_header <field>
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

	// ForwardKey passes the key header on to the next handler, and so to
	// the upstream. Default: false, which removes the key header from the
	// request once the key is accepted.
	ForwardKey bool `json:"forward_key,omitempty"`

	// ClientHeader, if set, names a request header that is set to the
	// authenticated client's name before the request goes on. Any value
	// the client sent in that header is replaced. Default: unset.
	ClientHeader string `json:"client_header,omitempty"`

	// The canonical forms of Header and ClientHeader, used on the request
	// path to index http.Header without canonicalizing on every request.
	keyHeader    string
	clientHeader string

	// challenge is the value of the WWW-Authenticate response header.
	challenge string

	keys   *keyring
	logger *zap.Logger
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

	keys, err := newKeyring(caddy.NewReplacer(), h.Keys)
	if err != nil {
		return err
	}
	h.keys = keys

	for _, configured := range h.Keys {
		if len(placeholderNames(configured.Key)) == 0 {
			h.logger.Warn("API key is written in the config; the admin endpoint and "+
				"autosave expose it, so load it with {env.NAME} or {file.PATH} instead",
				zap.String("client", configured.Client))
		}
	}

	h.logger.Info("API keys loaded",
		zap.String("header", h.Header),
		zap.Strings("clients", keys.clientNames()))
	return nil
}

// Validate checks the provisioned handler. Provision has already rejected
// every bad key, so this guards against a handler used without Provision.
func (h *Handler) Validate() error {
	if h.keys == nil || len(h.keys.entries) == 0 {
		return fmt.Errorf("no API keys configured; add a key with 'key <client> <key>'")
	}
	return nil
}

// checkHeaderName reports whether name is usable as a request header field
// that Caddy passes to handlers. The option names the config field in the
// error.
func checkHeaderName(option, name string) error {
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("%s %q is not a valid header field name; "+
				"use letters, digits and '-'", option, name)
		}
	}
	if strings.ContainsAny(name, "_.") {
		return fmt.Errorf("%s %q contains '_' or '.'; Caddy drops request headers "+
			"with such names before handlers run, so use '-' instead", option, name)
	}
	return nil
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110,
// section 5.6.2), the grammar of header field names.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
