package apikey

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// provisionError provisions h and returns the error of Provision, or of
// Validate if Provision succeeded.
func provisionError(t *testing.T, h *Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		return err
	}
	return h.Validate()
}

func TestCaddyModule(t *testing.T) {
	info := Handler{}.CaddyModule()

	assert.Equal(t, caddy.ModuleID("http.handlers.api_key"), info.ID)
	require.NotNil(t, info.New)
	assert.IsType(t, new(Handler), info.New())
}

func TestModuleRegistered(t *testing.T) {
	info, err := caddy.GetModule("http.handlers.api_key")

	require.NoError(t, err)
	_, isMiddleware := info.New().(caddyhttp.MiddlewareHandler)
	assert.True(t, isMiddleware)
}

func TestProvisionDefaults(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{{Client: "mailserver", Key: mailKey}},
	})

	assert.Equal(t, DefaultHeader, h.Header)
	assert.Equal(t, "X-Api-Key", h.keyHeader)
	assert.Equal(t, `APIKey header="X-API-KEY"`, h.challenge)
	assert.Empty(t, h.clientHeader)
	assert.False(t, h.ForwardKey)
}

func TestProvisionCanonicalHeaders(t *testing.T) {
	h := provisionHandler(t, &Handler{
		Header:       "x-scanner-token",
		ClientHeader: "x-api-client",
		Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
	})

	assert.Equal(t, "X-Scanner-Token", h.keyHeader)
	assert.Equal(t, "X-Api-Client", h.clientHeader)
	assert.Equal(t, `APIKey header="x-scanner-token"`, h.challenge)
}

func TestProvisionHeaderErrors(t *testing.T) {
	tests := []struct {
		name         string
		header       string
		clientHeader string
		want         []string
	}{
		{"header with underscore", "X_API_KEY", "", []string{"header", `"X_API_KEY"`, "'_' or '.'"}},
		{"header with dot", "X.Api.Key", "", []string{"header", `"X.Api.Key"`, "'_' or '.'"}},
		{"header with space", "X API KEY", "", []string{"header", `"X API KEY"`, "not a valid header"}},
		{"header with colon", "X-Api-Key:", "", []string{"header", `"X-Api-Key:"`, "not a valid header"}},
		{"header non-ASCII", "X-Schlüssel", "", []string{"header", "not a valid header"}},
		{"header with newline", "X-Api\nKey", "", []string{"header", "not a valid header"}},
		{"client_header with underscore", "", "X_Api_Client", []string{"client_header", `"X_Api_Client"`, "'_' or '.'"}},
		{"client_header with dot", "", "X.Api.Client", []string{"client_header", `"X.Api.Client"`, "'_' or '.'"}},
		{"client_header invalid", "", "X Api Client", []string{"client_header", `"X Api Client"`, "not a valid header"}},
		{"client_header is default header", "", "x-api-key", []string{"client_header", `"x-api-key"`, "key header"}},
		{"client_header is header", "X-Scanner-Token", "X-SCANNER-TOKEN", []string{"client_header", `"X-SCANNER-TOKEN"`, "key header"}},
		{"client_header hop-by-hop", "", "keep-alive", []string{"client_header", `"keep-alive"`, "handles itself"}},
		{"client_header connection", "", "Connection", []string{"client_header", `"Connection"`, "handles itself"}},
		{"client_header te", "", "TE", []string{"client_header", `"TE"`, "handles itself"}},
		{"header upgrade", "Upgrade", "", []string{"header", `"Upgrade"`, "handles itself"}},
		{"header host", "host", "", []string{"header", `"host"`, "handles itself"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{
				Header:       tt.header,
				ClientHeader: tt.clientHeader,
				Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
			}

			err := provisionError(t, h)

			requireErrorContains(t, err, tt.want, []string{mailKey})
		})
	}
}

func TestProvisionKeyErrors(t *testing.T) {
	tests := []struct {
		name    string
		keys    func(t *testing.T) []ClientKey
		want    []string
		secrets []string
	}{
		{
			name: "no keys",
			keys: func(t *testing.T) []ClientKey { return nil },
			want: []string{"no API keys configured"},
		},
		{
			name: "env unset",
			keys: func(t *testing.T) []ClientKey {
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return []ClientKey{
					{Client: "mailserver", Key: mailKey},
					{Client: "scanner", Key: "{env.APIKEY_TEST_UNSET}"},
				}
			},
			want:    []string{`"scanner"`, "{env.APIKEY_TEST_UNSET}"},
			secrets: []string{mailKey},
		},
		{
			name: "partial key",
			keys: func(t *testing.T) []ClientKey {
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return []ClientKey{{Client: "mailserver", Key: "Lit3ralPrefix{env.APIKEY_TEST_UNSET}"}}
			},
			want:    []string{`"mailserver"`, "{env.APIKEY_TEST_UNSET}"},
			secrets: []string{"Lit3ralPrefix"},
		},
		{
			name: "short key",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Sh0rt-k3y-15byt"}}
			},
			want:    []string{`"mailserver"`, "shorter than 16 bytes"},
			secrets: []string{"Sh0rt-k3y-15byt"},
		},
		{
			name: "shared key",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_SCANNER", mailKey)
				return []ClientKey{
					{Client: "mailserver", Key: mailKey},
					{Client: "scanner", Key: "{env.APIKEY_TEST_SCANNER}"},
				}
			},
			want:    []string{`"mailserver"`, `"scanner"`, "same key"},
			secrets: []string{mailKey},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Keys: tt.keys(t)}

			err := provisionError(t, h)

			requireErrorContains(t, err, tt.want, tt.secrets)
		})
	}
}

func TestValidateWithoutProvision(t *testing.T) {
	h := &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}}

	err := h.Validate()

	require.Error(t, err)
	assert.Contains(t, err.Error(), "no API keys configured")
	assert.NotContains(t, err.Error(), mailKey)
}

func TestProvisionAgainReplacesKeys(t *testing.T) {
	t.Setenv("APIKEY_TEST_ROTATING", mailKey)
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_ROTATING}"}},
	})
	_, found := h.keys.lookup(mailKey)
	require.True(t, found)

	t.Setenv("APIKEY_TEST_ROTATING", scannerKey)
	provisionHandler(t, h)

	_, found = h.keys.lookup(mailKey)
	assert.False(t, found, "old key still accepted after provisioning again")
	_, found = h.keys.lookup(scannerKey)
	assert.True(t, found, "new key not accepted after provisioning again")
}

// loadKeysLogged runs the key-loading step of Provision with a logger that
// records every entry, and returns the keyring, the log and the error.
// Provision itself logs through ctx.Logger, which writes to stderr when no
// config is loaded.
func loadKeysLogged(h *Handler) (*keyring, *observer.ObservedLogs, error) {
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	if h.now == nil {
		h.now = time.Now
	}
	ring, err := h.loadKeys()
	return ring, logs, err
}

// warnings returns the Warn entries of logs whose message starts with
// prefix.
func warnings(logs *observer.ObservedLogs, prefix string) []observer.LoggedEntry {
	return logs.Filter(func(entry observer.LoggedEntry) bool {
		return entry.Level == zapcore.WarnLevel && strings.HasPrefix(entry.Message, prefix)
	}).All()
}

// assertLogsNoSecret checks that no log entry contains any of secrets.
func assertLogsNoSecret(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, entry := range logs.All() {
		text := entryText(entry)
		for _, secret := range secrets {
			assert.NotContains(t, text, secret)
		}
	}
}

func TestProvisionKeysFile(t *testing.T) {
	path := writeKeysFile(t, "# clients\n"+
		"scanner "+digestOf(scannerKey)+"\n"+
		"backup\t"+backupKey+"\t2099-01-01T00:00:00Z\n", 0o600)
	h := provisionHandler(t, &Handler{
		Keys:     []ClientKey{{Client: "mailserver", Key: mailKey}},
		KeysFile: path,
	})

	assert.Equal(t, []string{"mailserver", "scanner", "backup"}, h.keys.clientNames())
	for key, wantClient := range map[string]string{
		mailKey:    "mailserver",
		scannerKey: "scanner",
		backupKey:  "backup",
	} {
		client, found := lookupClient(h.keys, key)
		assert.True(t, found, "key of %s not found", wantClient)
		assert.Equal(t, wantClient, client)
	}
}

func TestProvisionKeysFileOnly(t *testing.T) {
	path := writeKeysFile(t, "mailserver "+mailKey+"\n", 0o600)
	h := provisionHandler(t, &Handler{KeysFile: path})

	client, found := lookupClient(h.keys, mailKey)

	assert.True(t, found)
	assert.Equal(t, "mailserver", client)
}

func TestProvisionKeysFileEnvPath(t *testing.T) {
	path := writeKeysFile(t, "mailserver "+mailKey+"\n", 0o600)
	t.Setenv("APIKEY_TEST_KEYS_DIR", filepath.Dir(path))
	h := provisionHandler(t, &Handler{KeysFile: "{env.APIKEY_TEST_KEYS_DIR}/api-keys"})

	client, found := lookupClient(h.keys, mailKey)

	assert.True(t, found)
	assert.Equal(t, "mailserver", client)
}

// TestProvisionAgainRereadsKeysFile checks that provisioning again, as a
// forced reload does, reads the keys file again.
func TestProvisionAgainRereadsKeysFile(t *testing.T) {
	path := writeKeysFile(t, "mailserver "+mailKey+"\n", 0o600)
	h := provisionHandler(t, &Handler{KeysFile: path})
	require.NoError(t, os.WriteFile(path, []byte("mailserver "+scannerKey+"\n"), 0o600))

	provisionHandler(t, h)

	_, found := h.keys.lookup(mailKey)
	assert.False(t, found, "old key still accepted after provisioning again")
	_, found = h.keys.lookup(scannerKey)
	assert.True(t, found, "new key not accepted after provisioning again")
}

func TestProvisionKeysFileErrors(t *testing.T) {
	tests := []struct {
		name string
		// handler sets up the case and returns the handler and the path of
		// its keys file if the error must name it, or "".
		handler func(t *testing.T) (*Handler, string)
		want    []string
	}{
		{
			name: "env in path unset",
			handler: func(t *testing.T) (*Handler, string) {
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return &Handler{KeysFile: "{env.APIKEY_TEST_UNSET}/api-keys"}, ""
			},
			want: []string{"keys_file {env.APIKEY_TEST_UNSET}/api-keys"},
		},
		{
			name: "missing file",
			handler: func(t *testing.T) (*Handler, string) {
				path := filepath.Join(t.TempDir(), "missing-keys")
				return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}, KeysFile: path}, path
			},
			want: []string{"no such file or directory"},
		},
		{
			name: "empty file and no key lines",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "# no clients yet\n", 0o600)
				return &Handler{KeysFile: path}, ""
			},
			want: []string{"no API keys configured"},
		},
		{
			name: "client in key line and file",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "scanner "+scannerKey+"\nmailserver "+backupKey+"\n", 0o600)
				return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}, KeysFile: path}, path
			},
			want: []string{`client "mailserver" is configured twice`, "keys[0]", ", line 2"},
		},
		{
			name: "client twice in file",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "mailserver "+mailKey+"\n\nmailserver "+scannerKey+"\n", 0o600)
				return &Handler{KeysFile: path}, path
			},
			want: []string{`client "mailserver" is configured twice`, ", line 1", ", line 3"},
		},
		{
			name: "key in key line and file",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "scanner "+mailKey+"\n", 0o600)
				return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}, KeysFile: path}, ""
			},
			want: []string{`"mailserver"`, `"scanner"`, "same key"},
		},
		{
			name: "digest in file of key in key line",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "scanner "+digestOf(mailKey)+"\n", 0o600)
				return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}, KeysFile: path}, ""
			},
			want: []string{`"mailserver"`, `"scanner"`, "same key"},
		},
		{
			name: "bad line",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "scanner "+scannerKey+" "+mailKey+"\n", 0o600)
				return &Handler{KeysFile: path}, path
			},
			want: []string{", line 1:", `client "scanner"`, "not an RFC 3339"},
		},
		{
			name: "expired key in file",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "mailserver "+mailKey+"\nbackup "+backupKey+
					" 2020-01-01T00:00:00Z\n", 0o600)
				return &Handler{KeysFile: path}, path
			},
			want: []string{`client "backup"`, ", line 2)", "expired at 2020-01-01T00:00:00Z"},
		},
		{
			name: "allow names unknown client",
			handler: func(t *testing.T) (*Handler, string) {
				path := writeKeysFile(t, "scanner "+scannerKey+"\n", 0o600)
				return &Handler{
					Keys:     []ClientKey{{Client: "mailserver", Key: mailKey}},
					KeysFile: path,
					Allow:    []string{"backup"},
				}, ""
			},
			want: []string{`"backup"`, "not configured", "configured clients: mailserver, scanner"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, path := tt.handler(t)

			err := provisionError(t, h)

			requireErrorContains(t, err, tt.want, []string{mailKey, scannerKey, backupKey})
			if path != "" {
				assert.Contains(t, err.Error(), path)
			}
		})
	}
}

func TestProvisionKeysFileWarning(t *testing.T) {
	tests := []struct {
		perm     os.FileMode
		warnings int
	}{
		{0o600, 0},
		{0o640, 0},
		{0o644, 1},
		{0o666, 1},
	}
	for _, tt := range tests {
		t.Run(tt.perm.String(), func(t *testing.T) {
			path := writeKeysFile(t, "mailserver "+mailKey+"\nscanner "+scannerKey+"\n", tt.perm)
			h := &Handler{KeysFile: path}

			_, logs, err := loadKeysLogged(h)

			require.NoError(t, err)
			found := warnings(logs, "keys file is readable by every user")
			require.Len(t, found, tt.warnings)
			if tt.warnings > 0 {
				assert.Equal(t, path, found[0].ContextMap()["keys_file"])
			}
			assert.Empty(t, warnings(logs, "API key is written in the config"),
				"keys from a keys file are not in the config")
			assertLogsNoSecret(t, logs, mailKey, scannerKey)
		})
	}
}

func TestProvisionLiteralKeyWarning(t *testing.T) {
	tests := []struct {
		name string
		// key sets up the environment and files of the case and returns
		// the configured key.
		key  func(t *testing.T) string
		warn bool
	}{
		{"literal", func(t *testing.T) string { return mailKey }, true},
		{"literal digest", func(t *testing.T) string { return digestOf(mailKey) }, false},
		{"literal digest uppercase", func(t *testing.T) string { return strings.ToUpper(digestOf(mailKey)) }, false},
		{"env", func(t *testing.T) string {
			t.Setenv("APIKEY_TEST_MAIL", mailKey)
			return "{env.APIKEY_TEST_MAIL}"
		}, false},
		{"env digest", func(t *testing.T) string {
			t.Setenv("APIKEY_TEST_MAIL", digestOf(mailKey))
			return "{env.APIKEY_TEST_MAIL}"
		}, false},
		{"file", func(t *testing.T) string {
			return "{file." + writeKeyFile(t, mailKey+"\n") + "}"
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Keys: []ClientKey{{Client: "mailserver", Key: tt.key(t)}}}

			_, logs, err := loadKeysLogged(h)

			require.NoError(t, err)
			found := warnings(logs, "API key is written in the config")
			if !tt.warn {
				assert.Empty(t, found)
				return
			}
			require.Len(t, found, 1)
			assert.Equal(t, "mailserver", found[0].ContextMap()["client"])
			assertLogsNoSecret(t, logs, mailKey)
		})
	}
}

func TestProvisionExpiryWarning(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		now  time.Time
		warn bool
	}{
		{"a year before", expires.AddDate(-1, 0, 0), false},
		{"15 days before", expires.Add(-15 * 24 * time.Hour), false},
		{"just over 14 days before", expires.Add(-14*24*time.Hour - time.Nanosecond), false},
		{"14 days before", expires.Add(-14 * 24 * time.Hour), true},
		{"a day before", expires.Add(-24 * time.Hour), true},
		{"one nanosecond before", expires.Add(-time.Nanosecond), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{
				Keys: []ClientKey{
					{Client: "mailserver", Key: "{env.APIKEY_TEST_MAIL}", Expires: expires.Format(time.RFC3339)},
					{Client: "scanner", Key: "{env.APIKEY_TEST_SCANNER}"},
				},
				now: func() time.Time { return tt.now },
			}
			t.Setenv("APIKEY_TEST_MAIL", mailKey)
			t.Setenv("APIKEY_TEST_SCANNER", scannerKey)

			_, logs, err := loadKeysLogged(h)

			require.NoError(t, err)
			found := warnings(logs, "API key expires soon")
			if !tt.warn {
				assert.Empty(t, found)
				return
			}
			require.Len(t, found, 1)
			fields := found[0].ContextMap()
			assert.Equal(t, "mailserver", fields["client"])
			assert.Equal(t, expires, fields["expires"])
			assertLogsNoSecret(t, logs, mailKey, scannerKey)
		})
	}
}

func TestProvisionExpiryWarningKeysFile(t *testing.T) {
	now := time.Date(2027, 1, 20, 0, 0, 0, 0, time.UTC)
	path := writeKeysFile(t, "mailserver "+mailKey+" 2027-01-31T00:00:00Z\n"+
		"scanner "+scannerKey+" 2027-06-30T00:00:00Z\n", 0o600)
	h := &Handler{KeysFile: path, now: func() time.Time { return now }}

	_, logs, err := loadKeysLogged(h)

	require.NoError(t, err)
	found := warnings(logs, "API key expires soon")
	require.Len(t, found, 1)
	assert.Equal(t, "mailserver", found[0].ContextMap()["client"])
}

// TestProvisionExpired checks when a config with an expiring key still
// loads. A key is rejected after its expiry time, so a config loaded at
// that very time still loads, as requests at that time are still admitted.
func TestProvisionExpired(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		now     time.Time
		expired bool
	}{
		{"one nanosecond before", expires.Add(-time.Nanosecond), false},
		{"at expiry", expires, false},
		{"one nanosecond after", expires.Add(time.Nanosecond), true},
		{"a year after", expires.AddDate(1, 0, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{
				Keys: []ClientKey{
					{Client: "scanner", Key: scannerKey},
					{Client: "mailserver", Key: mailKey, Expires: "2027-01-31T00:00:00Z"},
				},
				now: func() time.Time { return tt.now },
			}

			err := provisionError(t, h)

			if !tt.expired {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), `client "mailserver" (keys[1])`)
			assert.Contains(t, err.Error(), "expired at 2027-01-31T00:00:00Z")
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

func TestProvisionExpiresInvalid(t *testing.T) {
	h := &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey, Expires: "31.01.2027"}}}

	err := provisionError(t, h)

	require.Error(t, err)
	assert.Contains(t, err.Error(), `client "mailserver"`)
	assert.Contains(t, err.Error(), `"31.01.2027" is not an RFC 3339 time`)
	assert.NotContains(t, err.Error(), mailKey)
}

func TestProvisionAllow(t *testing.T) {
	path := writeKeysFile(t, "backup "+backupKey+"\n", 0o600)
	h := provisionHandler(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
		},
		KeysFile: path,
		Allow:    []string{"scanner", "backup"},
	})

	for key, want := range map[string]bool{mailKey: false, scannerKey: true, backupKey: true} {
		entry, found := h.keys.lookup(key)
		require.True(t, found)
		assert.Equal(t, want, entry.allowed, "allowed for %s", entry.client)
	}
}

func TestProvisionAllowUnknownClient(t *testing.T) {
	h := &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: scannerKey},
		},
		Allow: []string{"mailserver", "mail-server"},
	}

	err := provisionError(t, h)

	require.Error(t, err)
	assert.Contains(t, err.Error(), `allow names the client "mail-server", which is not configured`)
	assert.Contains(t, err.Error(), "configured clients: mailserver, scanner")
	assert.NotContains(t, err.Error(), mailKey)
	assert.NotContains(t, err.Error(), scannerKey)
}

func TestProvisionFilteredTrailers(t *testing.T) {
	tests := []struct {
		name         string
		forwardKey   bool
		clientHeader string
		want         []string
	}{
		{"default", false, "", []string{"X-Api-Key"}},
		{"client header", false, "x-api-client", []string{"X-Api-Key", "X-Api-Client"}},
		{"forward key", true, "", nil},
		{"forward key and client header", true, "X-Api-Client", []string{"X-Api-Client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionHandler(t, &Handler{
				Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
				ForwardKey:   tt.forwardKey,
				ClientHeader: tt.clientHeader,
			})

			assert.Equal(t, tt.want, h.filteredTrailers)
		})
	}
}

// TestProvisionLongKeyWarning checks the warning for secrets too long to
// fit Caddy's default header limit comfortably, from key lines and from a
// keys file, and that a digest never draws it.
func TestProvisionLongKeyWarning(t *testing.T) {
	longKey := strings.Repeat("k", longKeyLength) + "Z"
	atLimit := strings.Repeat("m", longKeyLength)
	tests := []struct {
		name    string
		handler func(t *testing.T) *Handler
		clients []string
	}{
		{"key line", func(t *testing.T) *Handler {
			t.Setenv("APIKEY_TEST_LONG", longKey)
			return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_LONG}"}}}
		}, []string{"mailserver"}},
		{"keys file", func(t *testing.T) *Handler {
			path := writeKeysFile(t, "scanner "+longKey+"\nbackup "+atLimit+"\n", 0o600)
			return &Handler{KeysFile: path}
		}, []string{"scanner"}},
		{"at the limit", func(t *testing.T) *Handler {
			t.Setenv("APIKEY_TEST_LONG", atLimit)
			return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_LONG}"}}}
		}, nil},
		{"digest of a long key", func(t *testing.T) *Handler {
			return &Handler{Keys: []ClientKey{{Client: "mailserver", Key: digestOf(longKey)}}}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, logs, err := loadKeysLogged(tt.handler(t))

			require.NoError(t, err)
			found := warnings(logs, "API key is longer than 4 KiB")
			var clients []string
			for _, entry := range found {
				clients = append(clients, entry.ContextMap()["client"].(string))
			}
			assert.Equal(t, tt.clients, clients)
			assertLogsNoSecret(t, logs, longKey, atLimit)
		})
	}
}
