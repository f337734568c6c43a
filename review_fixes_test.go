package apikey

// Tests of how key-shaped values are kept out of names, errors and logs,
// and of rate buckets across handlers, chained api_key handlers, keys_file
// checks, trailer names and expiry logging. The integration tests here run
// Caddy in this test process like those in integration_test.go.

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Fixed values with the shapes of real keys, so that every run checks the
// same ones.
const (
	// opensslKey has the form of 'openssl rand -base64 32' output,
	// including a '/'.
	opensslKey = "IisL1R/O9+ZcLmLbLtZUVwE7q1a+b6/rGe4R1FMVPIA="

	// hexKey has the form of 'openssl rand -hex 32' output.
	hexKey = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"

	// readableSecret is a readable name that is also long enough to pass
	// as a key.
	readableSecret = "some-readable-secret-name"

	// hiddenPath is how errors and logs write a keys_file path that has
	// the shape of a key.
	hiddenPath = "(path not shown, in case it is a key)"
)

// namedValue is a test value with the name of its case.
type namedValue struct {
	name  string
	value string
}

// keyShaped lists values with the shapes of keys that are also valid
// client names, by the name of their shape.
var keyShaped = []namedValue{
	{"generated", generatedKey},
	{"hex", hexKey},
	{"20 mixed characters", "Ab3Cd4Ef5Gh6Ij7Kl8Mn"},
}

func TestLooksLikeKey(t *testing.T) {
	tests := []struct {
		name  string
		token string
		want  bool
	}{
		{"generated", generatedKey, true},
		{"generated with '_'", "dpLDrTVAu4A8Ags67mbNiIcSMjTqDG5xQ8Ct1z_0Me0", true},
		{"generated with '-'", "P8TM_nRYcOLA2Z9x8w_wZWyN7dQcwdfT03aw2-aF4vM", true},
		{"openssl base64", "i1udsME9skJWyCmqNkqpDG0uujGLkjKkq5MTuVTTVV8=", true},
		{"openssl base64 with '/'", opensslKey, true},
		{"64 hex digits", hexKey, true},
		{"64 upper case hex digits", strings.ToUpper(hexKey), true},
		{"32 hex digits", "415290769594460e2e485922904f345d", true},
		{"20 mixed characters", "Ab3Cd4Ef5Gh6Ij7Kl8Mn", true},
		{"mailserver", "mailserver", false},
		{"long readable name", "mailserver-production-eu-west-2", false},
		{"backup", "backup", false},
		{"capitalized", "Mailserver", false},
		{"name with year", "scanner2027", false},
		{"19 mixed characters", "Ab3Cd4Ef5Gh6Ij7Kl8M", false},
		{"31 hex digits", "415290769594460e2e485922904f345", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, looksLikeKey(tt.token))
		})
	}
}

func TestCheckClientNameKeyShaped(t *testing.T) {
	for _, tt := range keyShaped {
		t.Run(tt.name, func(t *testing.T) {
			err := checkClientName(tt.value)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "looks like a key")
			assert.NotContains(t, err.Error(), tt.value)
		})
	}
}

// TestCaddyfileSwappedKeyLine parses a key line whose client name and key
// are swapped, as 'caddy api-key generate' prints the key above the line.
func TestCaddyfileSwappedKeyLine(t *testing.T) {
	input := "api_key {\n" +
		"\tkey mailserver {env.APIKEY_TEST_MAIL}\n" +
		"\tkey " + generatedKey + " " + digestOf(generatedKey) + "\n" +
		"}"
	var h Handler

	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

	require.Error(t, err)
	assert.Contains(t, err.Error(), "Testfile:3")
	assert.Contains(t, err.Error(), "looks like a key")
	assert.NotContains(t, err.Error(), generatedKey)
}

func TestProvisionSwappedKeyJSON(t *testing.T) {
	config := fmt.Sprintf(`{"keys": [{"client": %q, "key": %q}]}`,
		generatedKey, digestOf(generatedKey))
	var h Handler
	require.NoError(t, json.Unmarshal([]byte(config), &h))

	err := provisionError(t, &h)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "keys[0]")
	assert.Contains(t, err.Error(), "looks like a key")
	assert.NotContains(t, err.Error(), generatedKey)
}

// TestProvisionClientNameIsConfiguredKey configures a client name whose
// SHA-256 digest is a configured key, so the name is a working key that
// would be logged.
func TestProvisionClientNameIsConfiguredKey(t *testing.T) {
	tests := []struct {
		name string
		// handler returns the handler of the case.
		handler func(t *testing.T) *Handler
		secret  string
		origin  string
	}{
		{
			name: "key of another line",
			handler: func(t *testing.T) *Handler {
				t.Setenv("APIKEY_TEST_MAIL", mailKey)
				return &Handler{Keys: []ClientKey{
					{Client: "backup", Key: digestOf("mailserver-prod-1234")},
					{Client: "mailserver-prod-1234", Key: "{env.APIKEY_TEST_MAIL}"},
				}}
			},
			secret: "mailserver-prod-1234",
			origin: "keys[1]",
		},
		{
			name: "swapped key line",
			handler: func(t *testing.T) *Handler {
				input := "api_key {\n\tkey " + readableSecret + " " + digestOf(readableSecret) + "\n}"
				h := new(Handler)
				require.NoError(t, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)))
				return h
			},
			secret: readableSecret,
			origin: "keys[0]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.handler(t)

			_, logs, err := loadKeysLogged(h)

			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.origin)
			assert.Contains(t, err.Error(), "is a configured key")
			assert.NotContains(t, err.Error(), tt.secret)
			assertLogsNoSecret(t, logs, tt.secret)
		})
	}
}

// TestProvisionExpiresShown checks which invalid expiry values an error
// repeats: a value made of a time's characters is shown, one shaped like
// a key is not.
func TestProvisionExpiresShown(t *testing.T) {
	tests := []struct {
		name    string
		expires string
		shown   bool
	}{
		{"generated key", generatedKey, false},
		{"openssl key", opensslKey, false},
		{"day out of range", "2027-02-30T00:00:00Z", true},
		{"date only", "2027-01-31", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("APIKEY_TEST_MAIL", mailKey)
			config := fmt.Sprintf(`{"keys": [{"client": "mailserver", `+
				`"key": "{env.APIKEY_TEST_MAIL}", "expires": %q}]}`, tt.expires)
			var h Handler
			require.NoError(t, json.Unmarshal([]byte(config), &h))

			err := provisionError(t, &h)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "keys[0]")
			assert.Contains(t, err.Error(), "not an RFC 3339 time")
			if tt.shown {
				assert.Contains(t, err.Error(), tt.expires)
			} else {
				assert.NotContains(t, err.Error(), tt.expires)
				assert.Contains(t, err.Error(), "not shown")
			}
		})
	}
}

func TestCaddyfileExpiresHidesKey(t *testing.T) {
	input := "api_key {\n" +
		"\tkey mailserver {env.APIKEY_TEST_MAIL} {\n" +
		"\t\texpires " + generatedKey + "\n" +
		"\t}\n" +
		"}"
	var h Handler

	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

	require.Error(t, err)
	assert.Contains(t, err.Error(), "Testfile:3")
	assert.Contains(t, err.Error(), "not an RFC 3339 time")
	assert.NotContains(t, err.Error(), generatedKey)
}

// TestExpiryBefore1970 checks that every source rejects an expiry before
// 1970 as invalid. The zero time 0001-01-01T00:00:00Z would otherwise be
// read as "no expiry".
func TestExpiryBefore1970(t *testing.T) {
	for _, expires := range []string{"0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"} {
		t.Run("Caddyfile "+expires, func(t *testing.T) {
			input := "api_key {\n" +
				"\tkey mailserver {env.APIKEY_TEST_MAIL} {\n" +
				"\t\texpires " + expires + "\n" +
				"\t}\n" +
				"}"
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

			require.Error(t, err)
			assert.Contains(t, err.Error(), "Testfile:3")
			assert.Contains(t, err.Error(), "before 1970")
		})

		t.Run("JSON "+expires, func(t *testing.T) {
			t.Setenv("APIKEY_TEST_MAIL", mailKey)
			h := &Handler{Keys: []ClientKey{
				{Client: "mailserver", Key: "{env.APIKEY_TEST_MAIL}", Expires: expires},
			}}

			err := provisionError(t, h)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "keys[0]")
			assert.Contains(t, err.Error(), "before 1970")
			assert.NotContains(t, err.Error(), "expired at", "taken for a past expiry")
		})

		t.Run("keys_file "+expires, func(t *testing.T) {
			path := writeKeysFile(t, "mailserver "+mailKey+" "+expires+"\n", 0o600)
			h := &Handler{KeysFile: path}

			err := provisionError(t, h)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "line 1")
			assert.Contains(t, err.Error(), "after 1970")
			assert.NotContains(t, err.Error(), "expired at", "taken for a past expiry")
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

func TestCaddyfileRateHidesKey(t *testing.T) {
	tests := []struct {
		name string
		rate string
	}{
		{"key with a slash", opensslKey},
		{"generated key", generatedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := "api_key {\n" +
				"\tkey m1 {env.APIKEY_TEST_MAIL}\n" +
				"\trate m1 " + tt.rate + "\n" +
				"}"
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

			require.Error(t, err)
			assert.Contains(t, err.Error(), "Testfile:3")
			assert.Contains(t, err.Error(), "rate")
			assert.NotContains(t, err.Error(), tt.rate)
			for _, part := range strings.Split(tt.rate, "/") {
				assert.NotContains(t, err.Error(), part, "part of the rate around '/'")
			}
		})
	}
}

func TestProvisionKeysFilePathShown(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		shown bool
	}{
		{"generated key", generatedKey, false},
		{"absolute path", "/run/secrets/keys", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A relative path is read from the working directory.
			t.Chdir(t.TempDir())
			if _, err := os.Stat(tt.path); err == nil {
				t.Skipf("%s exists on this machine", tt.path)
			}

			err := provisionError(t, &Handler{KeysFile: tt.path})

			require.Error(t, err)
			assert.Contains(t, err.Error(), "no such file or directory")
			if tt.shown {
				assert.Contains(t, err.Error(), "keys_file "+tt.path)
			} else {
				assert.NotContains(t, err.Error(), tt.path)
				assert.Contains(t, err.Error(), hiddenPath)
			}
		})
	}
}

// TestProvisionKeysFileKeyPathHidden reads a keys file whose relative path
// is shaped like a key, and checks that neither an error about its
// content nor a warning about its permissions shows the path.
func TestProvisionKeysFileKeyPathHidden(t *testing.T) {
	t.Run("error", func(t *testing.T) {
		t.Chdir(t.TempDir())
		require.NoError(t, os.WriteFile(generatedKey, []byte("mailserver short\n"), 0o600))

		err := provisionError(t, &Handler{KeysFile: generatedKey})

		require.Error(t, err)
		assert.Contains(t, err.Error(), "keys_file "+hiddenPath+", line 1")
		assert.NotContains(t, err.Error(), generatedKey)
	})

	t.Run("warnings", func(t *testing.T) {
		t.Chdir(t.TempDir())
		require.NoError(t, os.WriteFile(generatedKey, []byte("mailserver "+mailKey+"\n"), 0o600))
		require.NoError(t, os.Chmod(generatedKey, 0o666))

		_, logs, err := loadKeysLogged(&Handler{KeysFile: generatedKey})

		require.NoError(t, err)
		readable := warnings(logs, "keys file is readable")
		require.Len(t, readable, 1)
		assert.Equal(t, hiddenPath, readable[0].ContextMap()["keys_file"])
		writable := warnings(logs, "keys file is writable")
		require.Len(t, writable, 1)
		assert.Equal(t, hiddenPath, writable[0].ContextMap()["keys_file"])
		assertLogsNoSecret(t, logs, generatedKey, mailKey)
	})
}

func TestProvisionKeysFilePlaceholders(t *testing.T) {
	for _, path := range []string{
		"{file./x}",
		"{system.hostname}",
		"/etc/{system.hostname}/keys",
		"{env.HOME}/{file./x}",
	} {
		t.Run(path, func(t *testing.T) {
			err := provisionError(t, &Handler{KeysFile: path})

			require.Error(t, err)
			assert.Contains(t, err.Error(), "only {env.NAME} placeholders")
		})
	}
}

// TestParseKeysFileKeyLikeNameBadExpiry checks a keys file line whose name
// may be a key and whose third field is not a time: the name is left out.
func TestParseKeysFileKeyLikeNameBadExpiry(t *testing.T) {
	names := append(slices.Clone(keyShaped), namedValue{"readable secret", readableSecret})
	for _, tt := range names {
		t.Run(tt.name, func(t *testing.T) {
			content := tt.value + " " + mailKey + " not-a-time\n"

			_, err := parseKeysFile("/etc/caddy/api-keys", []byte(content))

			require.Error(t, err)
			assert.Contains(t, err.Error(), "keys_file /etc/caddy/api-keys, line 1")
			assert.NotContains(t, err.Error(), tt.value)
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

func TestProvisionKeyShapedHeaderName(t *testing.T) {
	for _, option := range []string{"header", "client_header"} {
		names := append(slices.Clone(keyShaped), namedValue{"openssl", opensslKey})
		for _, tt := range names {
			t.Run(option+" "+tt.name, func(t *testing.T) {
				h := &Handler{Keys: []ClientKey{{Client: "mailserver", Key: mailKey}}}
				if option == "header" {
					h.Header = tt.value
				} else {
					h.ClientHeader = tt.value
				}

				err := provisionError(t, h)

				require.Error(t, err)
				assert.True(t, strings.HasPrefix(err.Error(), option+" "), "error %q", err)
				assert.NotContains(t, err.Error(), tt.value)
			})
		}
	}
}

// TestCaddyfileDuplicateSettingHidesKey writes a key where a setting that
// may appear once belongs, then the setting again. The error about the
// second must not repeat the first.
func TestCaddyfileDuplicateSettingHidesKey(t *testing.T) {
	for _, setting := range []string{"header", "client_header", "keys_file"} {
		t.Run(setting, func(t *testing.T) {
			input := "api_key {\n" +
				"\tkey mailserver {env.APIKEY_TEST_MAIL}\n" +
				"\t" + setting + " " + generatedKey + "\n" +
				"\t" + setting + " X-Other\n" +
				"}"
			var h Handler

			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))

			require.Error(t, err)
			assert.Contains(t, err.Error(), "already set")
			assert.Contains(t, err.Error(), "Testfile:4")
			assert.NotContains(t, err.Error(), generatedKey)
		})
	}
}

// newShorthandLimited returns a handler parsed from 'api_key <key>' with
// the rate limit rate of the client "default", provisioned with clock.
func newShorthandLimited(t *testing.T, key, rate string, clock *testClock) *Handler {
	t.Helper()
	input := "api_key " + key + " {\n\trate default " + rate + "\n\tmax_failures off\n}"
	h := new(Handler)
	require.NoError(t, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)))
	h.now = clock.Now
	return provisionWithCleanup(t, h)
}

// TestRateLimitShorthandClientsSeparate gives two handlers the shorthand
// client "default" with different keys: each key has its own bucket.
func TestRateLimitShorthandClientsSeparate(t *testing.T) {
	clock := newTestClock(rateStart)
	first := newShorthandLimited(t, mailKey, "2/m", clock)
	second := newShorthandLimited(t, scannerKey, "2/m", clock)

	firstAdmitted := admitted(first, mailKey, 3)
	got := serveWithKey(second, scannerKey)

	assert.Equal(t, 2, firstAdmitted)
	require.NoError(t, got.err, "second handler rejected its first request")
	assert.Equal(t, 1, got.next.calls)
	assert.Equal(t, http.StatusNoContent, got.recorder.Code)
}

// TestRateLimitSameClientKeyShared gives two handlers the same client with
// the same key and limit, as two routes of one API would have. They share
// one bucket, so the client's limit covers both routes together.
func TestRateLimitSameClientKeyShared(t *testing.T) {
	clock := newTestClock(rateStart)
	newHandler := func() *Handler {
		return provisionWithCleanup(t, &Handler{
			Keys:       []ClientKey{{Client: "mailserver", Key: mailKey}},
			RateLimits: []RateLimit{perMinute("mailserver", 2, 0)},
			Throttle:   &FailureThrottle{Disabled: true},
			now:        clock.Now,
		})
	}
	first := newHandler()
	second := newHandler()

	firstAdmitted := admitted(first, mailKey, 2)
	got := serveWithKey(second, mailKey)

	assert.Equal(t, 2, firstAdmitted)
	assertRateLimited(t, got, "30")
}

func TestAPIKeyCommandKeyAsFlag(t *testing.T) {
	for _, subcommand := range []string{"hash", "generate"} {
		for _, prefix := range []string{"-", "--"} {
			t.Run(subcommand+" "+prefix, func(t *testing.T) {
				stdout, stderr, err := runAPIKeyCommand(t, mailKey+"\n", subcommand, prefix+generatedKey)

				require.Error(t, err)
				assert.Contains(t, err.Error(), "invalid flag")
				for _, output := range []string{err.Error(), stdout, stderr} {
					assert.NotContains(t, output, generatedKey[1:])
				}
			})
		}
	}
}

// chainedSites are sites with a site-wide api_key and one for /admin/*
// that allows only backup, written in different orders. In a site block,
// Caddy sorts the two directives by path, so /admin/* runs first in both
// orders. Inside route they run as written, the site-wide one first.
var chainedSites = []struct {
	name string
	site string
}{
	{"site-wide written first", `http://localhost:9080 {
	api_key {
		key mailserver {env.APIKEY_IT_MAIL}
		key backup {env.APIKEY_IT_BACKUP}
	}
	api_key /admin/* {
		key mailserver {env.APIKEY_IT_MAIL}
		key backup {env.APIKEY_IT_BACKUP}
		allow backup
	}
	reverse_proxy %s {
		header_up X-Authenticated {http.vars.api_key.authenticated}
	}
}
`},
	{"path written first", `http://localhost:9080 {
	api_key /admin/* {
		key mailserver {env.APIKEY_IT_MAIL}
		key backup {env.APIKEY_IT_BACKUP}
		allow backup
	}
	api_key {
		key mailserver {env.APIKEY_IT_MAIL}
		key backup {env.APIKEY_IT_BACKUP}
	}
	reverse_proxy %s {
		header_up X-Authenticated {http.vars.api_key.authenticated}
	}
}
`},
	{"route with site-wide first", `http://localhost:9080 {
	route {
		api_key {
			key mailserver {env.APIKEY_IT_MAIL}
			key backup {env.APIKEY_IT_BACKUP}
		}
		api_key /admin/* {
			key mailserver {env.APIKEY_IT_MAIL}
			key backup {env.APIKEY_IT_BACKUP}
			allow backup
		}
		reverse_proxy %s {
			header_up X-Authenticated {http.vars.api_key.authenticated}
		}
	}
}
`},
}

// TestIntegrationChainedHandlers sends requests through two api_key
// handlers with the same clients, one of which allows only backup.
func TestIntegrationChainedHandlers(t *testing.T) {
	for _, tt := range chainedSites {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("APIKEY_IT_MAIL", mailKey)
			t.Setenv("APIKEY_IT_BACKUP", backupKey)
			up := startUpstream(t)
			startCaddy(t, caddyfileWith("", fmt.Sprintf(tt.site, up.address())))
			client := newClient()

			backupAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/x",
				[]string{backupKey}, "")
			mailAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/x",
				[]string{mailKey}, "")
			mailOther := send(t, client, http.MethodGet, "http://localhost:9080/other",
				[]string{mailKey}, "")
			noKeyAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/x", nil, "")
			noKeyOther := send(t, client, http.MethodGet, "http://localhost:9080/other", nil, "")

			assert.Equal(t, http.StatusOK, backupAdmin.status, "backup on /admin/x")
			assert.Equal(t, http.StatusForbidden, mailAdmin.status, "mailserver on /admin/x")
			assert.Equal(t, http.StatusOK, mailOther.status, "mailserver on /other")
			assert.Equal(t, http.StatusUnauthorized, noKeyAdmin.status, "no key on /admin/x")
			assert.Equal(t, http.StatusUnauthorized, noKeyOther.status, "no key on /other")
			requests := up.received()
			require.Len(t, requests, 2)
			assert.Equal(t, "/admin/x", requests[0].Path)
			assert.Empty(t, requests[0].Header.Values("X-Api-Key"), "key header reached the upstream")
			assert.Equal(t, []string{"backup"}, requests[0].Header.Values("X-Authenticated"))
			assert.NotContains(t, requests[0].Header.Get("X-Authenticated"), hexDigest(backupKey))
			assert.Equal(t, "/other", requests[1].Path)
			assert.Equal(t, []string{"mailserver"}, requests[1].Header.Values("X-Authenticated"))
			assert.NotContains(t, requests[1].Header.Get("X-Authenticated"), hexDigest(mailKey))
		})
	}
}

// serveAfterEarlier sends a request without a key header from clientIP
// through h, with the request variable that an earlier api_key handler
// leaves set to earlier.
func serveAfterEarlier(h *Handler, clientIP string, earlier any) served {
	r, repl := newRequestFrom(clientIP)
	caddyhttp.SetVar(r.Context(), authenticatedVar, earlier)
	result := served{recorder: httptest.NewRecorder(), next: new(nextHandler), repl: repl}
	result.err = h.ServeHTTP(result.recorder, r, result.next)
	return result
}

func TestServeHTTPEarlierAuthentication(t *testing.T) {
	tests := []struct {
		name    string
		earlier any
		status  int
		client  string // client named in {http.auth.user.id}, "" for none
	}{
		{"allowed client", &authentication{digest: sha256.Sum256([]byte(mailKey)), client: "mailserver"},
			http.StatusNoContent, "mailserver"},
		{"client not allowed", &authentication{digest: sha256.Sum256([]byte(backupKey)), client: "backup"},
			http.StatusForbidden, ""},
		{"name of a client, other key", &authentication{digest: sha256.Sum256([]byte(opensslKey)), client: "mailserver"},
			http.StatusUnauthorized, ""},
		{"string variable", "mailserver", http.StatusUnauthorized, ""},
		{"digest as string", hexDigest(mailKey), http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newProtectedHandler(t, nil)

			got := serveAfterEarlier(h, "192.0.2.1", tt.earlier)

			assert.Equal(t, tt.status, statusOf(got))
			userID, _ := got.repl.Get("http.auth.user.id")
			if tt.client == "" {
				assert.Zero(t, got.next.calls, "next handler ran")
				assert.Nil(t, userID)
				return
			}
			assert.Equal(t, 1, got.next.calls)
			assert.Equal(t, tt.client, userID)
		})
	}
}

// TestServeHTTPEarlierAuthenticationNotThrottled checks that a request
// admitted by an earlier handler for a key this handler does not know is
// rejected without counting against its client address: the client
// presented a valid key, only not one of this handler's.
func TestServeHTTPEarlierAuthenticationNotThrottled(t *testing.T) {
	h, _ := newProtectedHandler(t, &FailureThrottle{MaxFailures: 1, Window: caddy.Duration(time.Minute)})
	earlier := &authentication{digest: sha256.Sum256([]byte(opensslKey)), client: "mailserver"}

	rejected := serveAfterEarlier(h, "192.0.2.1", earlier)
	after := serveFrom(h, "192.0.2.1", mailKey)
	failFrom(t, h, "192.0.2.2", 1)
	control := serveFrom(h, "192.0.2.2", mailKey)

	assert.Equal(t, http.StatusUnauthorized, statusOf(rejected))
	assert.ErrorIs(t, rejected.err, errKeyInvalid)
	assert.Equal(t, `APIKey header="X-API-KEY"`, rejected.recorder.Header().Get("Www-Authenticate"))
	assert.Equal(t, http.StatusNoContent, statusOf(after), "address throttled after the rejection")
	assert.Equal(t, http.StatusTooManyRequests, statusOf(control), "one failure does not throttle")
}

// TestAuthenticationVarShowsClient checks that the request variable an
// admitted request carries formats as the client name, without the digest.
func TestAuthenticationVarShowsClient(t *testing.T) {
	h := newMailHandler(t)

	got := serveWithKey(h, mailKey)

	require.NoError(t, got.err)
	require.NotNil(t, got.next.request)
	value := caddyhttp.GetVar(got.next.request.Context(), authenticatedVar)
	require.NotNil(t, value, "no %s variable", authenticatedVar)
	shown := caddy.ToString(value)
	assert.Equal(t, "mailserver", shown)
	assert.NotContains(t, shown, hexDigest(mailKey))
	placeholder := caddyhttp.NewTestReplacer(got.next.request).
		ReplaceAll("{http.vars.api_key.authenticated}", "")
	assert.Equal(t, "mailserver", placeholder)
}

// TestReadKeysFileFIFO reads a named pipe with no writer. Opening it would
// block, so the read must fail before it opens the pipe.
func TestReadKeysFileFIFO(t *testing.T) {
	mkfifo, err := exec.LookPath("mkfifo")
	if err != nil {
		t.Skip("mkfifo not available on this system")
	}
	path := filepath.Join(t.TempDir(), "keys-fifo")
	require.NoError(t, exec.Command(mkfifo, path).Run())
	type readResult struct {
		file *keysFile
		err  error
	}
	done := make(chan readResult, 1)

	go func() {
		file, err := readKeysFile(path)
		done <- readResult{file, err}
	}()

	select {
	case got := <-done:
		require.Error(t, got.err)
		assert.Nil(t, got.file)
		assert.Contains(t, got.err.Error(), "not a regular file")
		assert.Contains(t, got.err.Error(), path)
	case <-time.After(10 * time.Second):
		// Opening the pipe for writing lets the blocked read end.
		if writer, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			_ = writer.Close()
		}
		t.Fatal("readKeysFile blocked on a FIFO for 10 s")
	}
}

func TestProvisionKeysFileWritableWarning(t *testing.T) {
	tests := []struct {
		perm     os.FileMode
		writable bool
		readable bool
	}{
		{0o622, true, false},
		{0o660, true, false},
		{0o640, false, false},
		{0o600, false, false},
		{0o644, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.perm.String(), func(t *testing.T) {
			path := writeKeysFile(t, "mailserver "+mailKey+"\n", tt.perm)

			_, logs, err := loadKeysLogged(&Handler{KeysFile: path})

			require.NoError(t, err)
			writable := warnings(logs, "keys file is writable")
			readable := warnings(logs, "keys file is readable")
			if tt.writable {
				require.Len(t, writable, 1)
				assert.Equal(t, path, writable[0].ContextMap()["keys_file"])
			} else {
				assert.Empty(t, writable)
			}
			if tt.readable {
				assert.Len(t, readable, 1)
			} else {
				assert.Empty(t, readable)
			}
			assertLogsNoSecret(t, logs, mailKey)
		})
	}
}

func TestTrailerFilterFoldedNames(t *testing.T) {
	trailer := http.Header{
		"X_Api_Client":  {"admin"},
		"x.api.client":  {"admin"},
		"X-API-CLIENT":  {"admin"},
		"X_API_KEY":     {scannerKey},
		"x-api.key":     {scannerKey},
		"X-Other":       {"abc123"},
		"X-Api-Clients": {"kept"},
	}
	filter := &trailerFilter{
		ReadCloser: http.NoBody,
		trailer:    trailer,
		names:      []string{"X-Api-Key", "X-Api-Client"},
	}

	_, err := filter.Read(make([]byte, 8))

	require.ErrorIs(t, err, io.EOF)
	for _, name := range []string{"X_Api_Client", "x.api.client", "X-API-CLIENT", "X_API_KEY", "x-api.key"} {
		_, found := trailer[name]
		assert.False(t, found, "trailer %s kept", name)
	}
	assert.Equal(t, []string{"abc123"}, trailer["X-Other"])
	assert.Equal(t, []string{"kept"}, trailer["X-Api-Clients"])
}

// foldedValues returns the values of the fields of header whose names
// equal name once case is ignored and '_' and '.' are read as '-'.
func foldedValues(header http.Header, name string) []string {
	fold := strings.NewReplacer("_", "-", ".", "-")
	var values []string
	for field, fieldValues := range header {
		if strings.EqualFold(fold.Replace(field), name) {
			values = append(values, fieldValues...)
		}
	}
	return values
}

// TestIntegrationTrailersUnderscore sends declared request trailers whose
// names spell the key and client headers with '_', which CGI and WSGI
// backends read as the headers themselves.
func TestIntegrationTrailersUnderscore(t *testing.T) {
	up := startProxySite(t)
	request := func(path string) string {
		return "POST " + path + " HTTP/1.1\r\n" +
			"Host: localhost:9080\r\n" +
			"Transfer-Encoding: chunked\r\n" +
			"Connection: close\r\n" +
			"X-Api-Key: " + mailKey + "\r\n" +
			"Trailer: X_Api_Client, X_Api_Key, X-Checksum\r\n" +
			"\r\n" +
			"7\r\npayload\r\n" +
			"0\r\n" +
			"X_Api_Client: admin\r\n" +
			"X_Api_Key: " + scannerKey + "\r\n" +
			"X-Checksum: abc123\r\n" +
			"\r\n"
	}

	// Outside /scanner/*, without api_key, the trailers reach the upstream.
	control := rawExchange(t, request("/public/upload"))
	_ = control.Body.Close()
	require.Equal(t, http.StatusOK, control.StatusCode)
	require.Len(t, up.received(), 1)
	require.Equal(t, []string{"admin"}, foldedValues(up.received()[0].Trailer, "X-Api-Client"),
		"reverse_proxy did not forward the trailer X_Api_Client: %v", up.received()[0].Trailer)

	response := rawExchange(t, request("/scanner/upload"))
	_ = response.Body.Close()

	assert.Equal(t, http.StatusOK, response.StatusCode)
	requests := up.received()[1:]
	require.Len(t, requests, 1)
	assert.Equal(t, "payload", string(requests[0].Body))
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
	assert.Empty(t, foldedValues(requests[0].Trailer, "X-Api-Client"), "trailers %v", requests[0].Trailer)
	assert.Empty(t, foldedValues(requests[0].Trailer, "X-Api-Key"), "trailers %v", requests[0].Trailer)
	assert.Equal(t, []string{"abc123"}, requests[0].Trailer.Values("X-Checksum"))
}

// TestServeHTTPThrottleLogsIPv6Prefix checks that the start of a
// throttling names an IPv6 client by the /64 prefix that is throttled, as
// its end does.
func TestServeHTTPThrottleLogsIPv6Prefix(t *testing.T) {
	h, clock := newProtectedHandler(t, &FailureThrottle{MaxFailures: 3, Window: caddy.Duration(time.Minute)})
	logs := observeLogs(h)
	failFrom(t, h, "2001:db8:1:2::7", 3)
	clock.Set(throttleStart.Add(time.Minute))

	h.protection.releaseThrottled(h.logger, clock.Now())

	started := logs.FilterMessage("client address throttled").All()
	released := logs.FilterMessage("client address no longer throttled").All()
	require.Len(t, started, 1)
	require.Len(t, released, 1)
	assert.Equal(t, "2001:db8:1:2::/64", started[0].ContextMap()["client_ip"])
	assert.Equal(t, released[0].ContextMap()["client_ip"], started[0].ContextMap()["client_ip"])
}

// expiringAt is when the key of newWarnedHandler expires.
var expiringAt = time.Date(2027, 5, 31, 0, 0, 0, 0, time.UTC)

// newWarnedHandler returns a handler whose client mailserver has a key
// that expires at expiringAt, provisioned at provisionedAt, and a
// recording logger for warnExpiring.
func newWarnedHandler(t *testing.T, provisionedAt time.Time) (*Handler, *zap.Logger, *observer.ObservedLogs) {
	t.Helper()
	t.Setenv("APIKEY_TEST_MAIL", mailKey)
	h := provisionWithCleanup(t, &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: "{env.APIKEY_TEST_MAIL}", Expires: expiringAt.Format(time.RFC3339)},
			{Client: "backup", Key: backupKey},
		},
		now: func() time.Time { return provisionedAt },
	})
	core, logs := observer.New(zapcore.DebugLevel)
	return h, zap.New(core), logs
}

// expiryLogs returns the entries of logs about soon and past expiry.
func expiryLogs(logs *observer.ObservedLogs) (soon, expired []observer.LoggedEntry) {
	return warnings(logs, "API key expires soon"), warnings(logs, "API key has expired")
}

func TestWarnExpiring(t *testing.T) {
	h, logger, logs := newWarnedHandler(t, expiringAt.Add(-30*24*time.Hour))
	day := 24 * time.Hour

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(-20*day))
	assert.Zero(t, logs.Len(), "logged 20 days before expiry")

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(-14*day))
	soon, expired := expiryLogs(logs)
	require.Len(t, soon, 1, "14 days before expiry")
	assert.Empty(t, expired)
	assert.Equal(t, "mailserver", soon[0].ContextMap()["client"])
	assert.Equal(t, expiringAt, soon[0].ContextMap()["expires"])

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(-13*day))
	soon, _ = expiryLogs(logs)
	assert.Len(t, soon, 1, "expiring soon logged twice")

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(time.Second))
	soon, expired = expiryLogs(logs)
	require.Len(t, expired, 1, "after expiry")
	assert.Len(t, soon, 1)
	assert.Equal(t, "mailserver", expired[0].ContextMap()["client"])

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(time.Hour))
	_, expired = expiryLogs(logs)
	assert.Len(t, expired, 1, "expiry logged twice")
	assert.Equal(t, 2, logs.Len())
	assertLogsNoSecret(t, logs, mailKey, backupKey)
}

// TestWarnExpiringSoonAtProvision checks that a key due to expire within 14
// days when the config loaded, which loading logs, is not logged again as
// expiring soon, but is logged once it has expired.
func TestWarnExpiringSoonAtProvision(t *testing.T) {
	day := 24 * time.Hour
	h, logger, logs := newWarnedHandler(t, expiringAt.Add(-10*day))

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(-9*day))
	soon, _ := expiryLogs(logs)
	assert.Empty(t, soon, "logged again as soon")

	h.protection.warnExpiring(logger, h.keys, expiringAt.Add(time.Second))
	soon, expired := expiryLogs(logs)
	assert.Empty(t, soon)
	require.Len(t, expired, 1)
	assert.Equal(t, "mailserver", expired[0].ContextMap()["client"])
}
