package apikey

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
			for _, secret := range tt.secrets {
				assert.NotContains(t, err.Error(), secret)
			}
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
	config := adaptCaddyfile(t, ":8080 {\n\tapi_key /scanner/* {$APIKEY_TEST_UNSET}\n}\n")
	routes := adaptedRoutes(t, config)
	require.Len(t, routes, 1)
	require.Len(t, routes[0].Handle, 1)
	var h Handler
	require.NoError(t, json.Unmarshal(routes[0].Handle[0], &h))

	err := provisionError(t, &h)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "no API keys configured")
}

// TestCaddyfileShorthandSlashKey checks that a shorthand key starting with
// '/', as one in 64 base64 keys does, fails safe: Caddy reads it as a path
// matcher, and the handler, left without keys, fails to provision.
func TestCaddyfileShorthandSlashKey(t *testing.T) {
	t.Setenv("APIKEY_TEST_SLASH", "/"+mailKey)
	config := adaptCaddyfile(t, ":8080 {\n\tapi_key {$APIKEY_TEST_SLASH}\n}\n")
	routes := adaptedRoutes(t, config)
	require.Len(t, routes, 1)
	require.Len(t, routes[0].Handle, 1)
	var h Handler
	require.NoError(t, json.Unmarshal(routes[0].Handle[0], &h))

	err := provisionError(t, &h)

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
	config := adaptCaddyfile(t, ":8080 {\n"+
		"\tapi_key {\n"+
		"\t\tkey mailserver "+digestOf(mailKey)+" {\n"+
		"\t\t\texpires 2027-01-31T00:00:00Z\n"+
		"\t\t}\n"+
		"\t\tkeys_file "+keysFile+"\n"+
		"\t\tallow mailserver\n"+
		"\t\tallow scanner\n"+
		"\t}\n"+
		"}\n")
	routes := adaptedRoutes(t, config)
	require.Len(t, routes, 1)
	require.Len(t, routes[0].Handle, 1)
	var h Handler
	require.NoError(t, json.Unmarshal(routes[0].Handle[0], &h))
	now := time.Date(2027, 1, 30, 0, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	provisionHandler(t, &h)

	mailBefore := serveWithKey(&h, mailKey)
	scanner := serveWithKey(&h, scannerKey)
	backup := serveWithKey(&h, backupKey)
	now = time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	mailAfter := serveWithKey(&h, mailKey)

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
