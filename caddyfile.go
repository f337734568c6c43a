package apikey

import (
	"strconv"
	"time"

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
//		key           <client> <key> [{
//			expires <time>
//		}]
//		keys_file     <path>
//		allow         <client...>
//		forward_key
//		client_header <field>
//	}
//
// The matcher is taken off by Caddy before this runs. The shorthand <key>
// defines one key for the client "default". key and allow may be repeated;
// every other setting may appear once.
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
			key, err := parseKeyLine(d)
			if err != nil {
				return err
			}
			h.Keys = append(h.Keys, key)

		case "keys_file":
			if h.KeysFile != "" {
				return d.Errf("keys_file already set to %q", h.KeysFile)
			}
			if !d.AllArgs(&h.KeysFile) {
				return d.Err("keys_file takes one argument, the path of the file, " +
					"for example: keys_file /run/secrets/api_keys")
			}

		case "allow":
			clients := d.RemainingArgs()
			if len(clients) == 0 {
				return d.Err("allow takes one or more client names, " +
					"for example: allow mailserver backup")
			}
			h.Allow = append(h.Allow, clients...)

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
				"key, keys_file, allow, forward_key or client_header", quoteIfName(d.Val()))
		}
	}
	return nil
}

// parseKeyLine parses "key <client> <key>" and its optional block.
func parseKeyLine(d *caddyfile.Dispenser) (ClientKey, error) {
	var key ClientKey
	if !d.AllArgs(&key.Client, &key.Key) {
		return key, d.Err("key takes two arguments, the client name and the key, " +
			"for example: key mailserver {env.MAILSERVER_API_KEY}")
	}
	if err := checkClientName(key.Client); err != nil {
		return key, d.Errf("key: %v", err)
	}

	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "expires":
			if key.Expires != "" {
				return key, d.Errf("client %q: expires already set to %q",
					key.Client, key.Expires)
			}
			if !d.AllArgs(&key.Expires) {
				return key, d.Errf("client %q: expires takes one argument, an RFC 3339 "+
					"time, for example: expires 2027-01-31T00:00:00Z", key.Client)
			}
			if _, err := time.Parse(time.RFC3339, key.Expires); err != nil {
				return key, d.Errf("client %q: expires %q is not an RFC 3339 time; "+
					"write it like 2027-01-31T00:00:00Z", key.Client, key.Expires)
			}

		default:
			return key, d.Errf("client %q: unrecognized key option %s; expected expires",
				key.Client, quoteIfName(d.Val()))
		}
	}
	return key, nil
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
