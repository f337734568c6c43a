package apikey

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  Handler
	}{
		{
			name:  "shorthand literal",
			input: `api_key ` + mailKey,
			want:  Handler{Keys: []ClientKey{{Client: DefaultClient, Key: mailKey}}},
		},
		{
			name:  "shorthand placeholder",
			input: `api_key {env.MAILSERVER_API_KEY}`,
			want:  Handler{Keys: []ClientKey{{Client: "default", Key: "{env.MAILSERVER_API_KEY}"}}},
		},
		{
			name:  "shorthand quoted",
			input: `api_key "{file./run/secrets/api key}"`,
			want:  Handler{Keys: []ClientKey{{Client: "default", Key: "{file./run/secrets/api key}"}}},
		},
		{
			name: "block with one key",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY}
			}`,
			want: Handler{Keys: []ClientKey{{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}"}}},
		},
		{
			name: "block with every subdirective",
			input: `api_key {
				header X-Scanner-Token
				key mailserver {env.MAILSERVER_API_KEY}
				key scanner {file./run/secrets/scanner}
				forward_key
				client_header X-Api-Client
			}`,
			want: Handler{
				Header: "X-Scanner-Token",
				Keys: []ClientKey{
					{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}"},
					{Client: "scanner", Key: "{file./run/secrets/scanner}"},
				},
				ForwardKey:   true,
				ClientHeader: "X-Api-Client",
			},
		},
		{
			name: "shorthand and block",
			input: `api_key {env.DEFAULT_KEY} {
				key mailserver {env.MAILSERVER_API_KEY}
				client_header X-Api-Client
			}`,
			want: Handler{
				Keys: []ClientKey{
					{Client: "default", Key: "{env.DEFAULT_KEY}"},
					{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}"},
				},
				ClientHeader: "X-Api-Client",
			},
		},
		{
			name: "keys_file",
			input: `api_key {
				keys_file /etc/caddy/api-keys
			}`,
			want: Handler{KeysFile: "/etc/caddy/api-keys"},
		},
		{
			name: "keys_file with placeholder",
			input: `api_key {
				keys_file {env.CREDENTIALS_DIRECTORY}/api-keys
			}`,
			want: Handler{KeysFile: "{env.CREDENTIALS_DIRECTORY}/api-keys"},
		},
		{
			name: "allow lines accumulate",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY}
				key scanner {env.SCANNER_API_KEY}
				key backup {env.BACKUP_API_KEY}
				allow mailserver
				allow scanner backup
			}`,
			want: Handler{
				Keys: []ClientKey{
					{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}"},
					{Client: "scanner", Key: "{env.SCANNER_API_KEY}"},
					{Client: "backup", Key: "{env.BACKUP_API_KEY}"},
				},
				Allow: []string{"mailserver", "scanner", "backup"},
			},
		},
		{
			name: "key with expires block",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expires 2027-01-31T00:00:00Z
				}
				key scanner {env.SCANNER_API_KEY}
			}`,
			want: Handler{Keys: []ClientKey{
				{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}", Expires: "2027-01-31T00:00:00Z"},
				{Client: "scanner", Key: "{env.SCANNER_API_KEY}"},
			}},
		},
		{
			name: "expires with offset",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expires 2027-01-31T01:00:00+01:00
				}
			}`,
			want: Handler{Keys: []ClientKey{
				{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}", Expires: "2027-01-31T01:00:00+01:00"},
			}},
		},
		{
			name: "key with empty block",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
				}
			}`,
			want: Handler{Keys: []ClientKey{{Client: "mailserver", Key: "{env.MAILSERVER_API_KEY}"}}},
		},
		{
			name: "hashed key",
			input: `api_key {
				key mailserver ` + digestOf(mailKey) + `
			}`,
			want: Handler{Keys: []ClientKey{{Client: "mailserver", Key: digestOf(mailKey)}}},
		},
		{
			name: "every new subdirective",
			input: `api_key {
				key mailserver ` + digestOf(mailKey) + ` {
					expires 2027-01-31T00:00:00Z
				}
				keys_file /etc/caddy/api-keys
				allow mailserver scanner
				client_header X-Api-Client
			}`,
			want: Handler{
				Keys: []ClientKey{
					{Client: "mailserver", Key: digestOf(mailKey), Expires: "2027-01-31T00:00:00Z"},
				},
				KeysFile:     "/etc/caddy/api-keys",
				Allow:        []string{"mailserver", "scanner"},
				ClientHeader: "X-Api-Client",
			},
		},
		{
			name:  "empty block",
			input: "api_key {env.DEFAULT_KEY} {\n}",
			want:  Handler{Keys: []ClientKey{{Client: "default", Key: "{env.DEFAULT_KEY}"}}},
		},
		{
			name:  "no arguments",
			input: `api_key`,
			want:  Handler{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))

			require.NoError(t, err)
			assert.Equal(t, tt.want, h)
		})
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	const secret = "Zm9vYmFyYmF6cXV4cXV1eA=="
	tests := []struct {
		name  string
		input string
		// want lists substrings the error must contain, including the
		// position "Testfile:<line>".
		want []string
		// secrets lists values the error must not contain.
		secrets []string
	}{
		{
			name: "unknown subdirective",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY}
				forwardkey
			}`,
			want: []string{`"forwardkey"`, "unrecognized", "Testfile:3"},
		},
		{
			name: "unknown subdirective with arguments",
			input: `api_key {
				keys mailserver ` + secret + `
			}`,
			want:    []string{`"keys"`, "Testfile:2"},
			secrets: []string{secret},
		},
		{
			name: "key on a line of its own",
			input: `api_key {
				` + secret + `
			}`,
			want:    []string{"unrecognized", "(not shown)", "Testfile:2"},
			secrets: []string{secret},
		},
		{
			name: "hex key on a line of its own",
			input: `api_key {
				0123456789abcdef0123456789abcdef
			}`,
			want:    []string{"(not shown)", "Testfile:2"},
			secrets: []string{"0123456789abcdef"},
		},
		{
			name: "long lowercase token",
			input: `api_key {
				mailserverkeyisverysecret
			}`,
			want:    []string{"(not shown)", "Testfile:2"},
			secrets: []string{"mailserverkeyisverysecret"},
		},
		{
			// A key of 16 or more lowercase letters passes every key
			// check, so it must not be echoed either.
			name: "lowercase key on a line of its own",
			input: `api_key {
				correcthorsebattery
			}`,
			want:    []string{"(not shown)", "Testfile:2"},
			secrets: []string{"correcthorsebattery"},
		},
		{
			name: "placeholder on a line of its own",
			input: `api_key {
				{env.MAILSERVER_API_KEY}
			}`,
			want: []string{"(not shown)", "Testfile:2"},
		},
		{
			name: "header without argument",
			input: `api_key {
				header
			}`,
			want: []string{"header takes one argument", "Testfile:2"},
		},
		{
			name: "header with two arguments",
			input: `api_key {
				header X-Api-Key X-Other
			}`,
			want: []string{"header takes one argument", "Testfile:2"},
		},
		{
			name: "header twice",
			input: `api_key {
				header X-Api-Key
				header X-Other
			}`,
			want: []string{"header already set", `"X-Api-Key"`, "Testfile:3"},
		},
		{
			name: "key without arguments",
			input: `api_key {
				key
			}`,
			want: []string{"key takes two arguments", "Testfile:2"},
		},
		{
			name: "key without client",
			input: `api_key {
				key ` + secret + `
			}`,
			want:    []string{"key takes two arguments", "Testfile:2"},
			secrets: []string{secret},
		},
		{
			name: "key with three arguments",
			input: `api_key {
				key mailserver ` + secret + ` extra
			}`,
			want:    []string{"key takes two arguments", "Testfile:2"},
			secrets: []string{secret},
		},
		{
			name: "key split over two tokens",
			input: `api_key {
				key mailserver Zm9vYmFy YmF6cXV4cXV1eA==
			}`,
			want:    []string{"key takes two arguments", "Testfile:2"},
			secrets: []string{"Zm9vYmFy", "YmF6cXV4cXV1eA=="},
		},
		{
			name: "forward_key with argument",
			input: `api_key {
				forward_key yes
			}`,
			want: []string{"forward_key takes no arguments", "Testfile:2"},
		},
		{
			name: "forward_key twice",
			input: `api_key {
				forward_key
				forward_key
			}`,
			want: []string{"forward_key already set", "Testfile:3"},
		},
		{
			name: "client_header without argument",
			input: `api_key {
				client_header
			}`,
			want: []string{"client_header takes one argument", "Testfile:2"},
		},
		{
			name: "client_header with two arguments",
			input: `api_key {
				client_header X-Api-Client X-Other
			}`,
			want: []string{"client_header takes one argument", "Testfile:2"},
		},
		{
			name: "client_header twice",
			input: `api_key {
				client_header X-Api-Client
				client_header X-Other
			}`,
			want: []string{"client_header already set", `"X-Api-Client"`, "Testfile:3"},
		},
		{
			name: "key with invalid client name",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY}
				key mail/server {env.SCANNER_API_KEY}
			}`,
			want:    []string{"client name is invalid", "not shown", "Testfile:3"},
			secrets: []string{"mail/server"},
		},
		{
			name: "key before client name",
			input: `api_key {
				key ` + secret + ` mailserver
			}`,
			want:    []string{"client name is invalid", "put the name before the key", "Testfile:2"},
			secrets: []string{secret, "Zm9vYmFy"},
		},
		{
			name: "key with client name too long",
			input: `api_key {
				key ` + strings.Repeat("m", 65) + ` {env.MAILSERVER_API_KEY}
			}`,
			want:    []string{"client name is invalid", "Testfile:2"},
			secrets: []string{strings.Repeat("m", 65)},
		},
		{
			name: "expires not RFC 3339",
			input: `api_key {
				key mailserver ` + secret + ` {
					expires 2027-01-31
				}
			}`,
			want:    []string{`client "mailserver"`, `"2027-01-31" is not an RFC 3339 time`, "Testfile:3"},
			secrets: []string{secret},
		},
		{
			name: "expires without zone",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expires 2027-01-31T00:00:00
				}
			}`,
			want: []string{`client "mailserver"`, "not an RFC 3339 time", "Testfile:3"},
		},
		{
			name: "expires without argument",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expires
				}
			}`,
			want: []string{`client "mailserver"`, "expires takes one argument", "Testfile:3"},
		},
		{
			name: "expires with two arguments",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expires 2027-01-31 00:00:00Z
				}
			}`,
			want: []string{`client "mailserver"`, "expires takes one argument", "Testfile:3"},
		},
		{
			name: "expires twice",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expires 2027-01-31T00:00:00Z
					expires 2028-01-31T00:00:00Z
				}
			}`,
			want: []string{`client "mailserver"`, "expires already set", "Testfile:4"},
		},
		{
			name: "unknown key option",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					expiry 2027-01-31T00:00:00Z
				}
			}`,
			want: []string{`client "mailserver"`, `unrecognized key option "expiry"`, "Testfile:3"},
		},
		{
			name: "key in key block",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY} {
					` + secret + `
				}
			}`,
			want:    []string{"unrecognized key option (not shown)", "Testfile:3"},
			secrets: []string{secret},
		},
		{
			name: "keys_file without argument",
			input: `api_key {
				keys_file
			}`,
			want: []string{"keys_file takes one argument", "Testfile:2"},
		},
		{
			name: "keys_file with two arguments",
			input: `api_key {
				keys_file /etc/caddy/api-keys /etc/caddy/more-keys
			}`,
			want: []string{"keys_file takes one argument", "Testfile:2"},
		},
		{
			name: "keys_file twice",
			input: `api_key {
				keys_file /etc/caddy/api-keys
				keys_file /etc/caddy/more-keys
			}`,
			want: []string{"keys_file already set", `"/etc/caddy/api-keys"`, "Testfile:3"},
		},
		{
			name: "allow without argument",
			input: `api_key {
				key mailserver {env.MAILSERVER_API_KEY}
				allow
			}`,
			want: []string{"allow takes one or more client names", "Testfile:3"},
		},
		{
			name:    "two shorthand keys",
			input:   `api_key ` + mailKey + ` ` + secret,
			want:    []string{"at most one key argument", "Testfile:1"},
			secrets: []string{mailKey, secret},
		},
		{
			name: "two shorthand keys before block",
			input: `api_key ` + mailKey + ` ` + secret + ` {
				key scanner {env.SCANNER_API_KEY}
			}`,
			want:    []string{"at most one key argument", "Testfile:1"},
			secrets: []string{mailKey, secret},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))

			requireErrorContains(t, err, tt.want, tt.secrets)
		})
	}
}

// adaptCaddyfile adapts a Caddyfile to JSON with Caddy's caddyfile adapter
// and fails the test on an error or a warning.
func adaptCaddyfile(t *testing.T, input string) []byte {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	require.NotNil(t, adapter, "caddyfile adapter not registered")
	result, warnings, err := adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	require.NoError(t, err)
	assert.Empty(t, warnings)
	return result
}

// adaptedRoute is the part of an adapted HTTP route that these tests read.
type adaptedRoute struct {
	Match  []map[string]json.RawMessage `json:"match"`
	Handle []json.RawMessage            `json:"handle"`
}

// adaptedRoutes returns the routes of the server "srv0" in an adapted
// config.
func adaptedRoutes(t *testing.T, config []byte) []adaptedRoute {
	t.Helper()
	var parsed struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []adaptedRoute `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	require.NoError(t, json.Unmarshal(config, &parsed))
	server, found := parsed.Apps.HTTP.Servers["srv0"]
	require.True(t, found, "no server srv0 in %s", config)
	return server.Routes
}

// adaptedHandler adapts a Caddyfile and returns the handler of its route,
// decoded from the JSON but not provisioned. It fails the test unless the
// server "srv0" has exactly one route with one handler.
func adaptedHandler(t *testing.T, input string) *Handler {
	t.Helper()
	routes := adaptedRoutes(t, adaptCaddyfile(t, input))
	require.Len(t, routes, 1)
	require.Len(t, routes[0].Handle, 1)
	h := new(Handler)
	require.NoError(t, json.Unmarshal(routes[0].Handle[0], h))
	return h
}

func TestCaddyfileMatcher(t *testing.T) {
	config := adaptCaddyfile(t, ":8080 {\n\tapi_key /scanner/* {env.K}\n}\n")

	routes := adaptedRoutes(t, config)
	require.Len(t, routes, 1)
	require.Len(t, routes[0].Match, 1)
	assert.JSONEq(t, `["/scanner/*"]`, string(routes[0].Match[0]["path"]))
	require.Len(t, routes[0].Handle, 1)
	assert.JSONEq(t,
		`{"handler": "api_key", "keys": [{"client": "default", "key": "{env.K}"}]}`,
		string(routes[0].Handle[0]))
}

func TestCaddyfileNamedMatcher(t *testing.T) {
	config := adaptCaddyfile(t, ":8080 {\n"+
		"\t@scanner path /scanner/*\n"+
		"\tapi_key @scanner {\n"+
		"\t\tkey mailserver {env.K}\n"+
		"\t}\n"+
		"}\n")

	routes := adaptedRoutes(t, config)
	require.Len(t, routes, 1)
	require.Len(t, routes[0].Match, 1)
	assert.JSONEq(t, `["/scanner/*"]`, string(routes[0].Match[0]["path"]))
	require.Len(t, routes[0].Handle, 1)
	assert.JSONEq(t,
		`{"handler": "api_key", "keys": [{"client": "mailserver", "key": "{env.K}"}]}`,
		string(routes[0].Handle[0]))
}

func TestCaddyfileParseErrorPosition(t *testing.T) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	require.NotNil(t, adapter)
	input := ":8080 {\n" +
		"\tapi_key /scanner/* {\n" +
		"\t\tkey mailserver {env.K}\n" +
		"\t\tclient_header\n" +
		"\t}\n" +
		"}\n"

	_, _, err := adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})

	require.Error(t, err)
	assert.Contains(t, err.Error(), "client_header takes one argument")
	assert.Contains(t, err.Error(), "Caddyfile:4")
}

// TestCaddyfileUnsetEnvShorthand shows what happens to a shorthand key
// written as {$NAME} when NAME is unset: the adapter drops the token, and
// the handler then fails to provision for lack of keys.
func TestCaddyfileUnsetEnvShorthand(t *testing.T) {
	unsetEnv(t, "APIKEY_TEST_UNSET")
	h := adaptedHandler(t, ":8080 {\n\tapi_key /scanner/* {$APIKEY_TEST_UNSET}\n}\n")

	err := provisionError(t, h)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "no API keys configured")
}

// TestCaddyfileShorthandSlashKey checks that a shorthand key starting with
// '/', as one in 64 base64 keys does, fails safe: Caddy reads it as a path
// matcher, and the handler, left without keys, fails to provision.
func TestCaddyfileShorthandSlashKey(t *testing.T) {
	t.Setenv("APIKEY_TEST_SLASH", "/"+mailKey)
	h := adaptedHandler(t, ":8080 {\n\tapi_key {$APIKEY_TEST_SLASH}\n}\n")

	err := provisionError(t, h)

	assert.Empty(t, h.Keys)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no API keys configured")
	assert.NotContains(t, err.Error(), mailKey)
}

// TestCaddyfileKeyOptionsProvision adapts a Caddyfile with a hashed key
// that expires, a keys file and an allow list, loads the handler from the
// JSON and checks which keys it admits before and after the expiry.
func TestCaddyfileKeyOptionsProvision(t *testing.T) {
	keysFile := writeKeysFile(t, "scanner "+scannerKey+"\nbackup "+backupKey+"\n", 0o600)
	h := adaptedHandler(t, ":8080 {\n"+
		"\tapi_key {\n"+
		"\t\tkey mailserver "+digestOf(mailKey)+" {\n"+
		"\t\t\texpires 2027-01-31T00:00:00Z\n"+
		"\t\t}\n"+
		"\t\tkeys_file "+keysFile+"\n"+
		"\t\tallow mailserver\n"+
		"\t\tallow scanner\n"+
		"\t}\n"+
		"}\n")
	now := time.Date(2027, 1, 30, 0, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	provisionHandler(t, h)

	mailBefore := serveWithKey(h, mailKey)
	scanner := serveWithKey(h, scannerKey)
	backup := serveWithKey(h, backupKey)
	now = time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	mailAfter := serveWithKey(h, mailKey)

	assert.NoError(t, mailBefore.err)
	assert.NoError(t, scanner.err)
	assert.Equal(t, http.StatusForbidden, requireHandlerError(t, backup.err).StatusCode)
	assert.Equal(t, http.StatusUnauthorized, requireHandlerError(t, mailAfter.err).StatusCode)
}

func TestHandlerJSON(t *testing.T) {
	input := `{
		"handler": "api_key",
		"keys": [{"client": "mailserver", "key": "{env.K}", "expires": "2027-01-31T00:00:00Z"}],
		"keys_file": "/etc/caddy/api-keys",
		"allow": ["mailserver", "scanner"]
	}`
	var h Handler

	err := json.Unmarshal([]byte(input), &h)

	require.NoError(t, err)
	assert.Equal(t, Handler{
		Keys:     []ClientKey{{Client: "mailserver", Key: "{env.K}", Expires: "2027-01-31T00:00:00Z"}},
		KeysFile: "/etc/caddy/api-keys",
		Allow:    []string{"mailserver", "scanner"},
	}, h)
}

func TestUnmarshalCaddyfileProtection(t *testing.T) {
	tests := []struct {
		name  string
		lines string
		want  Handler
	}{
		{
			name:  "max_failures off",
			lines: "max_failures off",
			want:  Handler{Throttle: &FailureThrottle{Disabled: true}},
		},
		{
			name:  "max_failures count and window",
			lines: "max_failures 10 1m",
			want:  Handler{Throttle: &FailureThrottle{MaxFailures: 10, Window: caddy.Duration(time.Minute)}},
		},
		{
			name:  "max_failures window in seconds",
			lines: "max_failures 5 30s",
			want:  Handler{Throttle: &FailureThrottle{MaxFailures: 5, Window: caddy.Duration(30 * time.Second)}},
		},
		{
			name:  "max_failures window in days",
			lines: "max_failures 1000 1d",
			want:  Handler{Throttle: &FailureThrottle{MaxFailures: 1000, Window: caddy.Duration(24 * time.Hour)}},
		},
		{
			name:  "rate per second",
			lines: "rate mailserver 50/s",
			want: Handler{RateLimits: []RateLimit{
				{Client: "mailserver", Requests: 50, Interval: caddy.Duration(time.Second)},
			}},
		},
		{
			name:  "rate per minute with burst",
			lines: "rate * 600/m burst 100",
			want: Handler{RateLimits: []RateLimit{
				{Client: "*", Requests: 600, Interval: caddy.Duration(time.Minute), Burst: 100},
			}},
		},
		{
			name:  "rate per hour",
			lines: "rate backup 10/h",
			want: Handler{RateLimits: []RateLimit{
				{Client: "backup", Requests: 10, Interval: caddy.Duration(time.Hour)},
			}},
		},
		{
			name:  "rate per Go duration",
			lines: "rate scanner.v2 10/1m30s burst 1",
			want: Handler{RateLimits: []RateLimit{
				{Client: "scanner.v2", Requests: 10, Interval: caddy.Duration(90 * time.Second), Burst: 1},
			}},
		},
		{
			name:  "rate lines accumulate",
			lines: "rate mailserver 50/s\n\t\t\t\tmax_failures 5 1m\n\t\t\t\trate * 1/s",
			want: Handler{
				Throttle: &FailureThrottle{MaxFailures: 5, Window: caddy.Duration(time.Minute)},
				RateLimits: []RateLimit{
					{Client: "mailserver", Requests: 50, Interval: caddy.Duration(time.Second)},
					{Client: "*", Requests: 1, Interval: caddy.Duration(time.Second)},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := "api_key {\n\t\t\t\t" + tt.lines + "\n\t\t\t}"
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

			require.NoError(t, err)
			assert.Equal(t, tt.want, h)
		})
	}
}

// TestUnmarshalCaddyfileProtectionErrors checks every malformed
// max_failures and rate line. Each error names its line, and none shows a
// token that would pass as a key, since a key pasted onto the wrong line
// would otherwise end up in logs and in the admin API's response.
func TestUnmarshalCaddyfileProtectionErrors(t *testing.T) {
	const secret = "Zm9vYmFyYmF6cXV4cXV1eA=="
	tests := []struct {
		name    string
		lines   string // lines of the api_key block after the key line
		want    []string
		secrets []string
	}{
		{"max_failures without arguments", "max_failures", []string{"max_failures takes 'off'"}, nil},
		{"max_failures with count only", "max_failures 10", []string{"max_failures takes 'off'"}, nil},
		{"max_failures on", "max_failures on", []string{"max_failures takes 'off'"}, nil},
		{"max_failures off with window", "max_failures off 1m", []string{"max_failures", `"off"`}, nil},
		{"max_failures with three arguments", "max_failures 10 1m 5", []string{"max_failures takes 'off'"}, nil},
		{"max_failures zero", "max_failures 0 1m", []string{`count "0" is not a positive whole number`}, nil},
		{"max_failures negative", "max_failures -1 1m", []string{`count "-1" is not a positive`}, nil},
		{"max_failures fraction", "max_failures 1.5 1m", []string{`count "1.5" is not a positive`}, nil},
		{"max_failures word", "max_failures ten 1m", []string{`count "ten" is not a positive`}, nil},
		{"max_failures zero window", "max_failures 10 0s", []string{`window "0s" is not a positive duration`}, nil},
		{"max_failures negative window", "max_failures 10 -1m", []string{`window "-1m" is not a positive`}, nil},
		{"max_failures window without unit", "max_failures 10 60", []string{`window "60" is not a positive`}, nil},
		{"max_failures unknown unit", "max_failures 10 1x", []string{`window "1x" is not a positive`}, nil},
		{"max_failures twice", "max_failures 10 1m\n\t\t\t\tmax_failures 20 1m", []string{"max_failures already set"}, nil},
		{"max_failures off twice", "max_failures off\n\t\t\t\tmax_failures off", []string{"max_failures already set"}, nil},
		{"max_failures key as count", "max_failures " + secret + " 1m", []string{"max_failures"}, []string{secret}},
		{"max_failures key as window", "max_failures 10 " + secret, []string{"max_failures"}, []string{secret}},
		{"rate without arguments", "rate", []string{"rate takes a client name or '*'"}, nil},
		{"rate without rate", "rate mailserver", []string{"rate takes a client name or '*'"}, nil},
		{"rate with burst keyword only", "rate mailserver 50/s burst", []string{"rate takes a client name"}, nil},
		{"rate with five arguments", "rate mailserver 50/s burst 10 20", []string{"rate takes a client name"}, nil},
		{"rate without interval", "rate mailserver 50", []string{`client "mailserver"`, "no '/'"}, nil},
		{"rate of zero", "rate mailserver 0/s", []string{`client "mailserver"`, "not a positive whole number"}, nil},
		{"rate negative", "rate mailserver -5/s", []string{`client "mailserver"`, "not a positive whole number"}, nil},
		{"rate per day", "rate mailserver 50/d", []string{`client "mailserver"`, "not s, m, h or a positive"}, nil},
		{"rate zero interval", "rate mailserver 50/0s", []string{`client "mailserver"`, "not s, m, h or a positive"}, nil},
		{"rate negative interval", "rate mailserver 50/-1m", []string{`client "mailserver"`, "not s, m, h or a positive"}, nil},
		{"burst zero", "rate mailserver 50/s burst 0", []string{`client "mailserver"`, `burst "0" is not a positive`}, nil},
		{"burst negative", "rate mailserver 50/s burst -1", []string{`burst "-1" is not a positive`}, nil},
		{"burst word", "rate mailserver 50/s burst many", []string{`burst "many" is not a positive`}, nil},
		{"burst misspelt", "rate mailserver 50/s bust 10", []string{"expected 'burst'", `"bust"`}, nil},
		{"rate invalid client", "rate mail/server 50/s", []string{"rate:", "client name is invalid"}, []string{"mail/server"}},
		{"rate two stars", "rate ** 50/s", []string{"rate:", "client name is invalid"}, nil},
		{"rate key as client", "rate " + secret + " 50/s", []string{"client name is invalid"}, []string{secret}},
		{"rate key as rate", "rate mailserver " + secret, []string{`client "mailserver"`}, []string{secret}},
		{"rate key with slash as rate", "rate mailserver abc/defghijklmnopqr", []string{`client "mailserver"`}, []string{"defghijklmnopqr"}},
		{"rate key as burst", "rate mailserver 50/s burst " + secret, []string{`client "mailserver"`}, []string{secret}},
		{"rate key in place of burst", "rate mailserver 50/s " + secret + " 10", []string{"expected 'burst'"}, []string{secret}},
		{
			// A client name that passes as a key may be a key written in
			// the wrong place.
			name:    "rate key-like client with bad rate",
			lines:   "rate correcthorsebatterystaple 50/x",
			want:    []string{"not s, m, h or a positive"},
			secrets: []string{"correcthorsebatterystaple"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := "api_key {\n\t\t\t\tkey mailserver {env.MAILSERVER_API_KEY}\n\t\t\t\t" +
				tt.lines + "\n\t\t\t}"
			line := 3 + strings.Count(tt.lines, "\n")
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

			requireErrorContains(t, err, tt.want, tt.secrets)
			assert.Contains(t, err.Error(), fmt.Sprintf("Testfile:%d", line))
		})
	}
}

// TestCaddyfileProtectionProvision adapts a Caddyfile with max_failures
// and rate lines, loads the handler from the JSON and checks that both
// take effect.
func TestCaddyfileProtectionProvision(t *testing.T) {
	h := adaptedHandler(t, ":8080 {\n"+
		"\tapi_key {\n"+
		"\t\tkey mailserver {env.APIKEY_TEST_MAIL}\n"+
		"\t\tkey scanner {env.APIKEY_TEST_SCANNER}\n"+
		"\t\tmax_failures 3 1m\n"+
		"\t\trate mailserver 2/m burst 1\n"+
		"\t\trate * 5/h\n"+
		"\t}\n"+
		"}\n")
	t.Setenv("APIKEY_TEST_MAIL", mailKey)
	t.Setenv("APIKEY_TEST_SCANNER", scannerKey)
	clock := newTestClock(rateStart)
	h.now = clock.Now
	provisionWithCleanup(t, h)

	mail := admitted(h, mailKey, 5)
	scanner := admitted(h, scannerKey, 10)
	failFrom(t, h, testClientIP, 3)
	throttled := serveWithKey(h, scannerKey)

	assert.Equal(t, 1, mail, "rate mailserver 2/m burst 1")
	assert.Equal(t, 5, scanner, "rate * 5/h")
	assertThrottled(t, throttled)
	assert.Equal(t, FailureThrottle{
		MaxFailures:         3,
		Window:              caddy.Duration(time.Minute),
		MaxTrackedAddresses: DefaultMaxTrackedAddresses,
	}, *h.Throttle)
}

// TestCaddyfileRateConfigErrors adapts Caddyfiles whose rate lines parse
// but cannot be provisioned, and checks that the config fails to load.
func TestCaddyfileRateConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		lines string
		want  []string
	}{
		{"unknown client", "rate backup 1/s", []string{`"backup"`, "not configured"}},
		{"same client twice", "rate mailserver 1/s\n\t\trate mailserver 2/s", []string{`"mailserver"`, "set twice"}},
		{"star twice", "rate * 1/s\n\t\trate * 1/s", []string{`"*"`, "set twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := adaptedHandler(t, ":8080 {\n\tapi_key {\n"+
				"\t\tkey mailserver "+mailKey+"\n\t\t"+tt.lines+"\n\t}\n}\n")
			t.Cleanup(func() { _ = h.Cleanup() })

			err := provisionError(t, h)

			requireErrorContains(t, err, tt.want, []string{mailKey})
		})
	}
}

func TestHandlerJSONProtection(t *testing.T) {
	input := `{
		"handler": "api_key",
		"keys": [{"client": "mailserver", "key": "{env.K}"}],
		"throttle": {"disabled": false, "max_failures": 20, "window": "30s", "max_tracked_addresses": 500},
		"rate_limits": [
			{"client": "mailserver", "requests": 50, "interval": "1m", "burst": 10},
			{"client": "*", "requests": 5}
		]
	}`
	var h Handler

	err := json.Unmarshal([]byte(input), &h)

	require.NoError(t, err)
	assert.Equal(t, Handler{
		Keys: []ClientKey{{Client: "mailserver", Key: "{env.K}"}},
		Throttle: &FailureThrottle{
			MaxFailures:         20,
			Window:              caddy.Duration(30 * time.Second),
			MaxTrackedAddresses: 500,
		},
		RateLimits: []RateLimit{
			{Client: "mailserver", Requests: 50, Interval: caddy.Duration(time.Minute), Burst: 10},
			{Client: "*", Requests: 5},
		},
	}, h)
}

func TestHandlerJSONThrottleDisabled(t *testing.T) {
	var h Handler

	err := json.Unmarshal([]byte(`{"throttle": {"disabled": true}}`), &h)

	require.NoError(t, err)
	require.NotNil(t, h.Throttle)
	assert.True(t, h.Throttle.Disabled)
}
