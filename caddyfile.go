package apikey

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
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
//		max_failures  off | <count> <window>
//		rate          <client|*> <requests>/<interval> [burst <size>]
//	}
//
// The matcher is taken off by Caddy before this runs. The shorthand <key>
// defines one key for the client "default". key, allow and rate may be
// repeated; every other setting may appear once.
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
				return d.Errf("header already set to %s", showToken(h.Header))
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
				return d.Errf("keys_file already set to %q", showPath(h.KeysFile))
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
				return d.Errf("client_header already set to %s", showToken(h.ClientHeader))
			}
			if !d.AllArgs(&h.ClientHeader) {
				return d.Errf("client_header takes one argument, the field name, " +
					"for example: client_header X-Api-Client")
			}

		case "max_failures":
			if h.Throttle != nil {
				return d.Err("max_failures already set")
			}
			throttle, err := parseMaxFailures(d)
			if err != nil {
				return err
			}
			h.Throttle = throttle

		case "rate":
			limit, err := parseRateLine(d)
			if err != nil {
				return err
			}
			h.RateLimits = append(h.RateLimits, limit)

		default:
			return d.Errf("unrecognized api_key subdirective %s; expected header, "+
				"key, keys_file, allow, forward_key, client_header, max_failures or rate",
				quoteIfName(d.Val()))
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
				return key, d.Errf("client %s: expires already set to %q",
					showToken(key.Client), key.Expires)
			}
			if !d.AllArgs(&key.Expires) {
				return key, d.Errf("client %s: expires takes one argument, an RFC 3339 "+
					"time, for example: expires 2027-01-31T00:00:00Z", showToken(key.Client))
			}
			if _, err := parseExpiry(key.Expires); err != nil {
				return key, d.Errf("client %s: %v", showToken(key.Client), err)
			}

		default:
			return key, d.Errf("client %s: unrecognized key option %s; expected expires",
				showToken(key.Client), quoteIfName(d.Val()))
		}
	}
	return key, nil
}

// parseMaxFailures parses "max_failures off" or
// "max_failures <count> <window>".
func parseMaxFailures(d *caddyfile.Dispenser) (*FailureThrottle, error) {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		return &FailureThrottle{Disabled: true}, nil
	}
	if len(args) != 2 {
		return nil, d.Err("max_failures takes 'off', or a count and a window, " +
			"for example: max_failures 10 1m")
	}

	count, err := strconv.Atoi(args[0])
	if err != nil || count <= 0 {
		return nil, d.Errf("max_failures: count %s is not a positive whole number",
			showToken(args[0]))
	}
	window, err := caddy.ParseDuration(args[1])
	if err != nil || window <= 0 {
		return nil, d.Errf("max_failures: window %s is not a positive duration, "+
			"such as 1m or 30s", showToken(args[1]))
	}
	return &FailureThrottle{MaxFailures: count, Window: caddy.Duration(window)}, nil
}

// parseRateLine parses "rate <client|*> <requests>/<interval> [burst <size>]".
func parseRateLine(d *caddyfile.Dispenser) (RateLimit, error) {
	var limit RateLimit
	args := d.RemainingArgs()
	if len(args) != 2 && len(args) != 4 {
		return limit, d.Err("rate takes a client name or '*', a rate and an optional " +
			"burst, for example: rate mailserver 50/s burst 100")
	}

	limit.Client = args[0]
	if limit.Client != AllClients {
		if err := checkClientName(limit.Client); err != nil {
			return limit, d.Errf("rate: %v", err)
		}
	}
	requests, interval, err := parseRate(args[1])
	if err != nil {
		return limit, d.Errf("rate of client %s: %v", showToken(limit.Client), err)
	}
	limit.Requests = requests
	limit.Interval = caddy.Duration(interval)

	if len(args) == 4 {
		if args[2] != "burst" {
			return limit, d.Errf("rate of client %s: expected 'burst', found %s",
				showToken(limit.Client), quoteIfName(args[2]))
		}
		burst, err := strconv.Atoi(args[3])
		if err != nil || burst <= 0 {
			return limit, d.Errf("rate of client %s: burst %s is not a positive whole "+
				"number", showToken(limit.Client), showToken(args[3]))
		}
		limit.Burst = burst
	}
	return limit, nil
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
