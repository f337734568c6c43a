package apikey

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// DefaultClient is the client name of the key given as the directive's
// shorthand argument.
const DefaultClient = "default"

func init() {
	httpcaddyfile.RegisterHandlerDirective("api_key", parseCaddyfile)

	// Authentication runs before anything that rewrites headers or
	// proxies, wherever the directive appears in a site block.
	httpcaddyfile.RegisterDirectiveOrder("api_key", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	api_key [<matcher>] [<key>] {
//		header        <field>
//		key           <client> <key>
//		forward_key
//		client_header <field>
//	}
//
// The matcher is taken off by Caddy before this runs. The shorthand <key>
// defines one key for the client "default". Every setting but key may
// appear once.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the directive name

	if d.NextArg() {
		h.Keys = append(h.Keys, ClientKey{Client: DefaultClient, Key: d.Val()})
	}
	if d.NextArg() {
		return d.Err("api_key takes at most one key argument; define several keys " +
			"with 'key <client> <key>' lines in a block")
	}

	for d.NextBlock(0) {
		switch d.Val() {
		case "header":
			if h.Header != "" {
				return d.Errf("header already set to %q", h.Header)
			}
			if !d.AllArgs(&h.Header) {
				return d.Errf("header takes one argument, the field name, " +
					"for example: header X-API-KEY")
			}

		case "key":
			var client, key string
			if !d.AllArgs(&client, &key) {
				return d.Errf("key takes two arguments, the client name and the key, " +
					"for example: key mailserver {env.MAILSERVER_API_KEY}")
			}
			h.Keys = append(h.Keys, ClientKey{Client: client, Key: key})

		case "forward_key":
			if h.ForwardKey {
				return d.Err("forward_key already set")
			}
			if d.NextArg() {
				return d.Err("forward_key takes no arguments")
			}
			h.ForwardKey = true

		case "client_header":
			if h.ClientHeader != "" {
				return d.Errf("client_header already set to %q", h.ClientHeader)
			}
			if !d.AllArgs(&h.ClientHeader) {
				return d.Errf("client_header takes one argument, the field name, " +
					"for example: client_header X-Api-Client")
			}

		default:
			return d.Errf("unrecognized api_key subdirective %s; expected header, "+
				"key, forward_key or client_header", quoteIfName(d.Val()))
		}
	}
	return nil
}

// quoteIfName quotes token for an error message if it looks like a
// subdirective name: lowercase letters and '_', and shorter than
// MinKeyLength, so that it cannot be a valid key. Any other token may be a
// key written on the wrong line, so it is left out of the message.
func quoteIfName(token string) string {
	if len(token) >= MinKeyLength {
		return "(not shown)"
	}
	for i := 0; i < len(token); i++ {
		if (token[i] < 'a' || token[i] > 'z') && token[i] != '_' {
			return "(not shown)"
		}
	}
	return strconv.Quote(token)
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
