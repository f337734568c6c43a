package apikey

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{
				Header:       tt.header,
				ClientHeader: tt.clientHeader,
				Keys:         []ClientKey{{Client: "mailserver", Key: mailKey}},
			}

			err := provisionError(t, h)

			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
			assert.NotContains(t, err.Error(), mailKey)
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
