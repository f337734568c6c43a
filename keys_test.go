package apikey

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddyserver/caddy/v2"
)

// unsetEnv removes the environment variable name for the duration of the
// test and restores its previous value afterwards.
func unsetEnv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "")
	require.NoError(t, os.Unsetenv(name))
}

// buildKeyring resolves keys as Provision does and indexes the result.
func buildKeyring(keys []ClientKey) (*keyring, error) {
	resolved, err := resolveClientKeys(caddy.NewReplacer(), keys)
	if err != nil {
		return nil, err
	}
	return newKeyring(resolved)
}

// lookupClient returns the client name of the entry that ring finds for
// key, or "" if it finds none, and whether it found one.
func lookupClient(ring *keyring, key string) (string, bool) {
	entry, found := ring.lookup(key)
	if entry == nil {
		return "", found
	}
	return entry.client, found
}

// writeKeyFile writes content to a new file in a temporary directory and
// returns its path.
func writeKeyFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api-key.txt")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestNewKeyringErrors(t *testing.T) {
	tests := []struct {
		name string
		// keys sets up the environment and files of the case and returns
		// the configured keys.
		keys func(t *testing.T) []ClientKey
		// want lists substrings the error must contain.
		want []string
		// secrets lists values the error must not contain: keys and the
		// literal parts of keys.
		secrets []string
	}{
		{
			name: "env var unset",
			keys: func(t *testing.T) []ClientKey {
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_UNSET}"}}
			},
			want: []string{`"mailserver"`, "{env.APIKEY_TEST_UNSET}", "not set"},
		},
		{
			name: "env var empty",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_EMPTY", "")
				return []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_EMPTY}"}}
			},
			want: []string{`"mailserver"`, "{env.APIKEY_TEST_EMPTY}", "empty string"},
		},
		{
			name: "partial with literal prefix",
			keys: func(t *testing.T) []ClientKey {
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return []ClientKey{{Client: "mailserver", Key: "Lit3ralPrefix{env.APIKEY_TEST_UNSET}"}}
			},
			want:    []string{`"mailserver"`, "{env.APIKEY_TEST_UNSET}"},
			secrets: []string{"Lit3ralPrefix"},
		},
		{
			name: "partial with literal suffix",
			keys: func(t *testing.T) []ClientKey {
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_UNSET}Lit3ralSuffix"}}
			},
			want:    []string{`"mailserver"`, "{env.APIKEY_TEST_UNSET}"},
			secrets: []string{"Lit3ralSuffix"},
		},
		{
			name: "second placeholder unset",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_SET", "S3cretFirstHalf")
				unsetEnv(t, "APIKEY_TEST_UNSET")
				return []ClientKey{{
					Client: "mailserver",
					Key:    "{env.APIKEY_TEST_SET}{env.APIKEY_TEST_UNSET}",
				}}
			},
			want:    []string{`"mailserver"`, "{env.APIKEY_TEST_UNSET}"},
			secrets: []string{"S3cretFirstHalf"},
		},
		{
			name: "file missing",
			keys: func(t *testing.T) []ClientKey {
				path := filepath.Join(t.TempDir(), "missing.txt")
				return []ClientKey{{Client: "mailserver", Key: "{file." + path + "}"}}
			},
			want: []string{`"mailserver"`, "{file.", "missing.txt}", "does not exist"},
		},
		{
			name: "file empty",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "{file." + writeKeyFile(t, "") + "}"}}
			},
			want: []string{`"mailserver"`, "{file.", "api-key.txt}", "empty"},
		},
		{
			name: "file with only newline",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "{file." + writeKeyFile(t, "\n") + "}"}}
			},
			want: []string{`"mailserver"`, "{file.", "api-key.txt}", "empty"},
		},
		{
			name: "file with only CRLF",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "{file." + writeKeyFile(t, "\r\n") + "}"}}
			},
			want: []string{`"mailserver"`, "{file.", "api-key.txt}", "empty"},
		},
		{
			name: "file is a directory",
			keys: func(t *testing.T) []ClientKey {
				dir := filepath.Join(t.TempDir(), "keydir")
				require.NoError(t, os.Mkdir(dir, 0o700))
				return []ClientKey{{Client: "mailserver", Key: "{file." + dir + "}"}}
			},
			want: []string{`"mailserver"`, "{file.", "keydir}", "cannot be read"},
		},
		{
			name: "file in unreadable directory",
			keys: func(t *testing.T) []ClientKey {
				skipIfRoot(t)
				dir := filepath.Join(t.TempDir(), "locked")
				require.NoError(t, os.Mkdir(dir, 0o700))
				path := filepath.Join(dir, "api-key.txt")
				require.NoError(t, os.WriteFile(path, []byte("Unr3adable-file-key-0123"), 0o600))
				require.NoError(t, os.Chmod(dir, 0o000))
				t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
				return []ClientKey{{Client: "mailserver", Key: "{file." + path + "}"}}
			},
			want:    []string{`"mailserver"`, "{file.", "api-key.txt}", "cannot be read"},
			secrets: []string{"Unr3adable-file-key-0123"},
		},
		{
			name: "file unreadable",
			keys: func(t *testing.T) []ClientKey {
				skipIfRoot(t)
				path := writeKeyFile(t, "Unr3adable-file-key-0123")
				require.NoError(t, os.Chmod(path, 0o000))
				return []ClientKey{{Client: "mailserver", Key: "{file." + path + "}"}}
			},
			want:    []string{`"mailserver"`, "{file.", "api-key.txt}", "cannot be read"},
			secrets: []string{"Unr3adable-file-key-0123"},
		},
		{
			name: "unknown placeholder",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Lit3ralPrefix{foo.bar}"}}
			},
			want:    []string{`"mailserver"`, "{foo.bar}", "not supported"},
			secrets: []string{"Lit3ralPrefix"},
		},
		{
			name: "system placeholder",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Lit3ralPrefix-{system.hostname}"}}
			},
			want:    []string{`"mailserver"`, "{system.hostname}", "not supported"},
			secrets: []string{"Lit3ralPrefix"},
		},
		{
			name: "request placeholder",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "{http.request.header.X-Api-Key}"}}
			},
			want: []string{`"mailserver"`, "{http.request.header.X-Api-Key}", "not supported"},
		},
		{
			name: "empty placeholder",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Lit3ralPrefix-{}"}}
			},
			want:    []string{`"mailserver"`, "(not shown", "not supported"},
			secrets: []string{"Lit3ralPrefix", "{}"},
		},
		{
			// Braces inside a literal key look like a placeholder whose
			// name is part of the key.
			name: "braces inside literal key",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Lit3ralPrefix{S3cret-Inside}Suffix"}}
			},
			want:    []string{`"mailserver"`, "(not shown", "not supported"},
			secrets: []string{"Lit3ralPrefix", "S3cret-Inside", "Suffix"},
		},
		{
			name: "empty literal",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: ""}}
			},
			want: []string{`"mailserver"`, "empty"},
		},
		{
			name: "literal 15 bytes",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Sh0rt-k3y-15byt"}}
			},
			want:    []string{`"mailserver"`, "shorter than 16 bytes"},
			secrets: []string{"Sh0rt-k3y-15byt"},
		},
		{
			name: "env value short",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_SHORT", "Sh0rtEnvK3y")
				return []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_SHORT}"}}
			},
			want:    []string{`"mailserver"`, "shorter than 16 bytes"},
			secrets: []string{"Sh0rtEnvK3y"},
		},
		{
			name: "space inside",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Spaced-k3y with-space-inside"}}
			},
			want:    []string{`"mailserver"`, "space"},
			secrets: []string{"Spaced-k3y", "with-space-inside"},
		},
		{
			name: "tab inside",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Tabbed-k3y\twith-tab-inside"}}
			},
			want:    []string{`"mailserver"`, "control character"},
			secrets: []string{"Tabbed-k3y", "with-tab-inside"},
		},
		{
			name: "trailing space",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Trailing-sp4ce-key-abcdef "}}
			},
			want:    []string{`"mailserver"`, "space"},
			secrets: []string{"Trailing-sp4ce-key-abcdef"},
		},
		{
			name: "newline inside env value",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_NEWLINE", "N3wline-first-part\nsecond-part")
				return []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_NEWLINE}"}}
			},
			want:    []string{`"mailserver"`, "control character"},
			secrets: []string{"N3wline-first-part", "second-part"},
		},
		{
			name: "trailing newline in env value",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_NEWLINE", "Env-tr4iling-newline-key\n")
				return []ClientKey{{Client: "mailserver", Key: "{env.APIKEY_TEST_NEWLINE}"}}
			},
			want:    []string{`"mailserver"`, "control character"},
			secrets: []string{"Env-tr4iling-newline-key"},
		},
		{
			name: "file with two trailing newlines",
			keys: func(t *testing.T) []ClientKey {
				path := writeKeyFile(t, "File-k3y-with-two-newlines\n\n")
				return []ClientKey{{Client: "mailserver", Key: "{file." + path + "}"}}
			},
			want:    []string{`"mailserver"`, "control character"},
			secrets: []string{"File-k3y-with-two-newlines"},
		},
		{
			name: "file with space inside",
			keys: func(t *testing.T) []ClientKey {
				path := writeKeyFile(t, "File-k3y with-space\n")
				return []ClientKey{{Client: "mailserver", Key: "{file." + path + "}"}}
			},
			want:    []string{`"mailserver"`, "space"},
			secrets: []string{"File-k3y", "with-space"},
		},
		{
			name: "non-ASCII",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Ünïcode-k3y-abcdefghijkl"}}
			},
			want:    []string{`"mailserver"`, "non-ASCII"},
			secrets: []string{"code-k3y-abcdefghijkl"},
		},
		{
			name: "DEL byte",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailserver", Key: "Del-k3y-abcdefghijkl\x7f"}}
			},
			want:    []string{`"mailserver"`, "control character"},
			secrets: []string{"Del-k3y-abcdefghijkl"},
		},
		{
			name: "duplicate client name",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{
					{Client: "mailserver", Key: mailKey},
					{Client: "mailserver", Key: scannerKey},
				}
			},
			want:    []string{`"mailserver"`, "configured twice"},
			secrets: []string{mailKey, scannerKey},
		},
		{
			name: "same literal key",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{
					{Client: "mailserver", Key: mailKey},
					{Client: "scanner", Key: mailKey},
				}
			},
			want:    []string{`"mailserver"`, `"scanner"`, "same key"},
			secrets: []string{mailKey},
		},
		{
			name: "same key literal and env",
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
		{
			name: "same key env and file",
			keys: func(t *testing.T) []ClientKey {
				t.Setenv("APIKEY_TEST_MAIL", mailKey)
				path := writeKeyFile(t, mailKey+"\n")
				return []ClientKey{
					{Client: "mailserver", Key: "{env.APIKEY_TEST_MAIL}"},
					{Client: "scanner", Key: "{file." + path + "}"},
				}
			},
			want:    []string{`"mailserver"`, `"scanner"`, "same key"},
			secrets: []string{mailKey},
		},
		{
			name: "client name empty",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "", Key: mailKey}}
			},
			want:    []string{"keys[0]: ", "the client name is empty"},
			secrets: []string{mailKey},
		},
		{
			name: "client name with space",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mail server", Key: mailKey}}
			},
			want:    []string{"keys[0]: ", "client name is invalid", "not shown"},
			secrets: []string{mailKey, "mail server"},
		},
		{
			name: "client name with colon",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mail:server", Key: mailKey}}
			},
			want:    []string{"keys[0]: ", "client name is invalid", "not shown"},
			secrets: []string{mailKey, "mail:server"},
		},
		{
			name: "client name too long",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: strings.Repeat("m", 65), Key: mailKey}}
			},
			want:    []string{"keys[0]: ", "client name is invalid", "at most 64"},
			secrets: []string{mailKey, strings.Repeat("m", 65)},
		},
		{
			name: "client name non-ASCII",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailsérver", Key: mailKey}}
			},
			want:    []string{"keys[0]: ", "client name is invalid"},
			secrets: []string{mailKey, "mailsérver"},
		},
		{
			name: "bad client after valid one",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{
					{Client: "mailserver", Key: mailKey},
					{Client: "scan ner", Key: scannerKey},
				}
			},
			want:    []string{"keys[1]: ", "client name is invalid"},
			secrets: []string{mailKey, scannerKey, "scan ner"},
		},
		{
			// A base64 key written where the name belongs, and the name
			// where the key belongs.
			name: "key in place of client name",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "Zm9v+YmFy/YmF6cXV4cXV1eA==", Key: "mailserver"}}
			},
			want:    []string{"keys[0]: ", "client name is invalid", "not shown", "put the name before the key"},
			secrets: []string{"Zm9v+YmFy/YmF6cXV4cXV1eA==", "Zm9v"},
		},
		{
			name: "client name 65 bytes of a key",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: mailKey + mailKey + "abc", Key: mailKey}}
			},
			want:    []string{"keys[0]: ", "client name is invalid"},
			secrets: []string{mailKey},
		},
		{
			name: "no keys",
			keys: func(t *testing.T) []ClientKey {
				return nil
			},
			want: []string{"no API keys configured"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := tt.keys(t)

			ring, err := buildKeyring(keys)

			requireErrorContains(t, err, tt.want, tt.secrets)
			assert.Nil(t, ring)
		})
	}
}

// skipIfRoot skips a test that relies on file permissions, which do not
// stop root from reading a file.
func skipIfRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Skip("running as root, which reads files regardless of their permissions")
	}
}

func TestNewKeyringSources(t *testing.T) {
	tests := []struct {
		name string
		// keys sets up the environment and files of the case and returns
		// the configured key.
		key func(t *testing.T) string
		// resolved is the key a client must present.
		resolved string
	}{
		{
			name:     "literal",
			key:      func(t *testing.T) string { return mailKey },
			resolved: mailKey,
		},
		{
			name:     "literal 16 bytes",
			key:      func(t *testing.T) string { return "Exactly-16-bytes" },
			resolved: "Exactly-16-bytes",
		},
		{
			name: "env",
			key: func(t *testing.T) string {
				t.Setenv("APIKEY_TEST_MAIL", mailKey)
				return "{env.APIKEY_TEST_MAIL}"
			},
			resolved: mailKey,
		},
		{
			name: "file with trailing newline",
			key: func(t *testing.T) string {
				return "{file." + writeKeyFile(t, mailKey+"\n") + "}"
			},
			resolved: mailKey,
		},
		{
			name: "file with trailing CRLF",
			key: func(t *testing.T) string {
				return "{file." + writeKeyFile(t, mailKey+"\r\n") + "}"
			},
			resolved: mailKey,
		},
		{
			name: "file without newline",
			key: func(t *testing.T) string {
				return "{file." + writeKeyFile(t, mailKey) + "}"
			},
			resolved: mailKey,
		},
		{
			name: "literal prefix and env",
			key: func(t *testing.T) string {
				t.Setenv("APIKEY_TEST_PART", "second-half-0123")
				return "first-half-{env.APIKEY_TEST_PART}"
			},
			resolved: "first-half-second-half-0123",
		},
		{
			name: "env and file",
			key: func(t *testing.T) string {
				t.Setenv("APIKEY_TEST_PART", "first-half-")
				return "{env.APIKEY_TEST_PART}{file." + writeKeyFile(t, "second-half\n") + "}"
			},
			resolved: "first-half-second-half",
		},
		{
			name:     "escaped braces",
			key:      func(t *testing.T) string { return `Escaped-\{env.NOT_A_PLACEHOLDER\}` },
			resolved: "Escaped-{env.NOT_A_PLACEHOLDER}",
		},
		{
			name:     "unclosed brace",
			key:      func(t *testing.T) string { return "Unclosed-brace-{env.X" },
			resolved: "Unclosed-brace-{env.X",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key(t)

			ring, err := buildKeyring([]ClientKey{{Client: "mailserver", Key: key}})

			require.NoError(t, err)
			client, found := lookupClient(ring, tt.resolved)
			assert.True(t, found, "resolved key not found")
			assert.Equal(t, "mailserver", client)
			_, found = ring.lookup(tt.resolved + "\n")
			assert.False(t, found, "key with trailing newline found")
			if key != tt.resolved {
				_, found = ring.lookup(key)
				assert.False(t, found, "unresolved key found")
			}
		})
	}
}

func TestNewKeyringMixedSources(t *testing.T) {
	t.Setenv("APIKEY_TEST_SCANNER", scannerKey)
	keyFile := writeKeyFile(t, backupKey+"\n")
	keys := []ClientKey{
		{Client: "mailserver", Key: mailKey},
		{Client: "scanner", Key: "{env.APIKEY_TEST_SCANNER}"},
		{Client: "backup", Key: "{file." + keyFile + "}"},
	}

	ring, err := buildKeyring(keys)

	require.NoError(t, err)
	assert.Equal(t, []string{"mailserver", "scanner", "backup"}, ring.clientNames())
	for key, wantClient := range map[string]string{
		mailKey:    "mailserver",
		scannerKey: "scanner",
		backupKey:  "backup",
	} {
		client, found := lookupClient(ring, key)
		assert.True(t, found, "key of %s not found", wantClient)
		assert.Equal(t, wantClient, client)
	}
}

func TestNewKeyringClientNames(t *testing.T) {
	names := []string{
		"a",
		"mailserver",
		"Mail.Server_2-b",
		strings.Repeat("m", maxClientNameLength),
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			ring, err := buildKeyring([]ClientKey{{Client: name, Key: mailKey}})

			require.NoError(t, err)
			client, found := lookupClient(ring, mailKey)
			assert.True(t, found)
			assert.Equal(t, name, client)
		})
	}
}

func TestKeyringStoresNoKey(t *testing.T) {
	ring, err := buildKeyring([]ClientKey{
		{Client: "mailserver", Key: mailKey},
		{Client: "scanner", Key: scannerKey},
	})
	require.NoError(t, err)

	dump := fmt.Sprintf("%#v", *ring)

	assert.NotContains(t, dump, mailKey)
	assert.NotContains(t, dump, scannerKey)
}

func TestKeyringLookup(t *testing.T) {
	ring, err := buildKeyring([]ClientKey{
		{Client: "mailserver", Key: mailKey},
		{Client: "scanner", Key: scannerKey},
	})
	require.NoError(t, err)

	tests := []struct {
		name   string
		key    string
		client string
		found  bool
	}{
		{"first client", mailKey, "mailserver", true},
		{"second client", scannerKey, "scanner", true},
		{"unknown key", backupKey, "", false},
		{"empty", "", "", false},
		{"near miss", mailKey[:len(mailKey)-1] + "5", "", false},
		{"prefix", mailKey[:MinKeyLength], "", false},
		{"longer", mailKey + mailKey, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, found := lookupClient(ring, tt.key)

			assert.Equal(t, tt.found, found)
			assert.Equal(t, tt.client, client)
		})
	}
}

func TestKeyringLookupManyKeys(t *testing.T) {
	const count = 10_000
	keyOf := func(i int) string { return fmt.Sprintf("key-%06d-0123456789abcdef", i) }
	keys := make([]ClientKey, count)
	for i := range keys {
		keys[i] = ClientKey{Client: fmt.Sprintf("client-%d", i), Key: keyOf(i)}
	}

	ring, err := buildKeyring(keys)

	require.NoError(t, err)
	require.Len(t, ring.clientNames(), count)
	for _, i := range []int{0, 1, 4_999, 7_777, count - 1} {
		client, found := lookupClient(ring, keyOf(i))
		assert.True(t, found, "key %d not found", i)
		assert.Equal(t, fmt.Sprintf("client-%d", i), client)
	}
	_, found := ring.lookup(keyOf(count))
	assert.False(t, found, "key outside the ring found")
}

func TestKeyringDigestPrefixCollision(t *testing.T) {
	ring := &keyring{index: make(map[uint64]int)}
	first := sha256.Sum256([]byte(mailKey))
	second := first
	second[sha256.Size-1] ^= 0xff

	require.NoError(t, ring.add(resolvedKey{client: "mailserver", digest: first}))
	err := ring.add(resolvedKey{client: "scanner", digest: second})

	require.Error(t, err)
	assert.Contains(t, err.Error(), `"mailserver"`)
	assert.Contains(t, err.Error(), `"scanner"`)
	assert.Contains(t, err.Error(), "collides")
	client, found := lookupClient(ring, mailKey)
	assert.True(t, found, "first key lost after a collision")
	assert.Equal(t, "mailserver", client)
}

func TestPlaceholderNames(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"empty", "", nil},
		{"literal", "plain-key-0123456789", nil},
		{"env", "{env.MAILSERVER_API_KEY}", []string{"env.MAILSERVER_API_KEY"}},
		{"file", "{file./run/secrets/key}", []string{"file./run/secrets/key"}},
		{"several", "a{env.A}b{file./k}c{foo.bar}", []string{"env.A", "file./k", "foo.bar"}},
		{"adjacent", "{env.A}{env.B}", []string{"env.A", "env.B"}},
		{"empty name", "key{}", []string{""}},
		{"escaped braces", `\{env.A\}`, nil},
		{"escaped opening brace", `\{env.A}`, nil},
		{"escaped closing brace inside", `{env.A\}B}`, []string{`env.A\}B`}},
		{"escaped then real", `\{x\}{env.A}`, []string{"env.A"}},
		{"unclosed", "abc{env.A", nil},
		{"unclosed after placeholder", "{env.A}{env.B", []string{"env.A"}},
		{"lone opening brace", "abc{", nil},
		{"lone closing brace", "abc}def", nil},
		{"closing before opening", "}{env.A}", []string{"env.A"}},
		{"nested opening brace", "{a{env.B}", []string{"a{env.B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, placeholderNames(tt.input))
		})
	}
}

// TestPlaceholderNamesMatchesReplacer checks that placeholderNames finds
// the same placeholders as caddy.Replacer, whose brace rules it follows.
func TestPlaceholderNamesMatchesReplacer(t *testing.T) {
	inputs := []string{
		"plain-key",
		"{env.A}",
		"a{env.A}b{file./k}c",
		`\{env.A\}`,
		`\{env.A}`,
		`{env.A\}B}`,
		`\{x\}{env.A}`,
		"abc{env.A",
		"{env.A}{env.B",
		"}{env.A}",
		"{a{env.B}",
		`{env.A\}`,
		`x{env.A\}`,
	}
	for _, input := range inputs {
		t.Run(input, func(t *testing.T) {
			var replaced []string
			repl := caddy.NewEmptyReplacer()
			repl.Map(func(key string) (any, bool) {
				replaced = append(replaced, key)
				return "value", true
			})

			repl.ReplaceAll(input, "")

			assert.Equal(t, replaced, placeholderNames(input))
		})
	}
}

// digestOf returns the "sha256:<hex>" form of key.
func digestOf(key string) string {
	digest := sha256.Sum256([]byte(key))
	return digestPrefix + hex.EncodeToString(digest[:])
}

func TestParseKey(t *testing.T) {
	mailDigest := sha256.Sum256([]byte(mailKey))
	mailHex := hex.EncodeToString(mailDigest[:])
	tests := []struct {
		name string
		key  string
	}{
		{"plaintext", mailKey},
		{"digest", "sha256:" + mailHex},
		{"uppercase prefix", "SHA256:" + mailHex},
		{"mixed case prefix", "Sha256:" + mailHex},
		{"uppercase hex", "sha256:" + strings.ToUpper(mailHex)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			digest, err := parseKey(tt.key)

			require.NoError(t, err)
			assert.Equal(t, mailDigest, digest)
		})
	}
}

// TestParseKeyColonInSecret checks that a secret with a ':' that does not
// follow an algorithm name is taken as a secret.
func TestParseKeyColonInSecret(t *testing.T) {
	for _, key := range []string{
		"user:Pa55word-0123456789",
		"sha:0123456789abcdef0123",
		"sha256x:0123456789abcdef",
		":leading-colon-0123456789",
	} {
		t.Run(key, func(t *testing.T) {
			digest, err := parseKey(key)

			require.NoError(t, err)
			assert.Equal(t, sha256.Sum256([]byte(key)), digest)
		})
	}
}

func TestParseKeyErrors(t *testing.T) {
	mailHex := strings.TrimPrefix(digestOf(mailKey), digestPrefix)
	tests := []struct {
		name string
		key  string
		want []string
	}{
		{"digest 63 digits", "sha256:" + mailHex[:63], []string{"63 hex digits", "must have 64"}},
		{"digest 65 digits", "sha256:" + mailHex + "0", []string{"65 hex digits", "must have 64"}},
		{"digest empty", "sha256:", []string{"0 hex digits"}},
		{"digest with space", "sha256: " + mailHex[:63], []string{"not a hex digit"}},
		{"digest not hex", "sha256:" + mailHex[:63] + "g", []string{"not a hex digit"}},
		{"digest with prefix twice", "sha256:sha256:" + mailHex[:57], []string{"not a hex digit"}},
		{"sha512", "sha512:" + mailHex + mailHex, []string{`"sha512"`, "only sha256"}},
		{"SHA512 uppercase", "SHA512:" + mailHex + mailHex, []string{`"SHA512"`, "only sha256"}},
		{"sha1", "sha1:" + mailHex[:40], []string{`"sha1"`, "only sha256"}},
		{"md5", "md5:" + mailHex[:32], []string{`"md5"`, "only sha256"}},
		{"bcrypt", "bcrypt:$2a$10$g20CLKEiVBS3RiITavLGnu", []string{`"bcrypt"`, "only sha256"}},
		{"argon2id", "argon2id:$v=19$m=65536,t=3,p=4$c2FsdA", []string{`"argon2id"`, "only sha256"}},
		{"plaintext short", "Sh0rt-k3y-15byt", []string{"shorter than 16 bytes"}},
		{"plaintext empty", "", []string{"is empty"}},
		{"plaintext with space", "Spaced-k3y with-space-inside", []string{"space"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseKey(tt.key)

			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestCheckSecret(t *testing.T) {
	tests := []struct {
		name string
		key  string
		want string // substring of the error, or "" for no error
	}{
		{"16 bytes", "Exactly-16-bytes", ""},
		{"long", mailKey + mailKey + mailKey, ""},
		{"every printable byte", "!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~", ""},
		{"empty", "", "is empty"},
		{"15 bytes", "Sh0rt-k3y-15byt", "shorter than 16 bytes"},
		{"space", "Spaced-k3y with-space", "space"},
		{"tab", "Tabbed-k3y\twith-tab", "control character"},
		{"newline", "Newline-k3y-012345\n", "control character"},
		{"NUL", "Nul-k3y-0123456789\x00", "control character"},
		{"DEL", "Del-k3y-0123456789\x7f", "control character"},
		{"non-ASCII", "Ünïcode-k3y-abcdefghijkl", "non-ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSecret(tt.key)

			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			if tt.key != "" {
				assert.NotContains(t, err.Error(), strings.TrimSpace(tt.key))
			}
		})
	}
}

func TestCheckClientName(t *testing.T) {
	valid := []string{"a", "mailserver", "Mail.Server_2-b", strings.Repeat("m", maxClientNameLength)}
	for _, name := range valid {
		t.Run(name, func(t *testing.T) {
			assert.NoError(t, checkClientName(name))
		})
	}

	invalid := []string{
		"mail server",
		"mail:server",
		"mail/server",
		"Zm9v+YmFy/YmF6cXV4cXV1eA==",
		"mailsérver",
		"mail\nserver",
		"{env.CLIENT}",
		strings.Repeat("m", maxClientNameLength+1),
	}
	for _, name := range invalid {
		t.Run(name, func(t *testing.T) {
			err := checkClientName(name)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "client name is invalid (not shown, in case it is a key)")
			assert.Contains(t, err.Error(), "at most 64")
			assert.NotContains(t, err.Error(), name)
		})
	}

	t.Run("empty", func(t *testing.T) {
		err := checkClientName("")

		require.Error(t, err)
		assert.Contains(t, err.Error(), "the client name is empty")
	})
}

func TestResolveClientKeysHashed(t *testing.T) {
	tests := []struct {
		name string
		// key sets up the environment and files of the case and returns
		// the configured key.
		key func(t *testing.T) string
	}{
		{"literal digest", func(t *testing.T) string { return digestOf(mailKey) }},
		{"uppercase literal digest", func(t *testing.T) string { return strings.ToUpper(digestOf(mailKey)) }},
		{"digest from env", func(t *testing.T) string {
			t.Setenv("APIKEY_TEST_DIGEST", digestOf(mailKey))
			return "{env.APIKEY_TEST_DIGEST}"
		}},
		{"digest from file", func(t *testing.T) string {
			return "{file." + writeKeyFile(t, digestOf(mailKey)+"\n") + "}"
		}},
		{"prefix literal and hex from env", func(t *testing.T) string {
			t.Setenv("APIKEY_TEST_DIGEST", strings.TrimPrefix(digestOf(mailKey), digestPrefix))
			return "sha256:{env.APIKEY_TEST_DIGEST}"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := buildKeyring([]ClientKey{{Client: "mailserver", Key: tt.key(t)}})

			require.NoError(t, err)
			client, found := lookupClient(ring, mailKey)
			assert.True(t, found, "plaintext of the digest not found")
			assert.Equal(t, "mailserver", client)
			_, found = ring.lookup(digestOf(mailKey))
			assert.False(t, found, "the digest itself was accepted as a key")
			_, found = ring.lookup(strings.TrimPrefix(digestOf(mailKey), digestPrefix))
			assert.False(t, found, "the hex digest was accepted as a key")
		})
	}
}

func TestResolveClientKeysHashedErrors(t *testing.T) {
	mailHex := strings.TrimPrefix(digestOf(mailKey), digestPrefix)
	tests := []struct {
		name string
		// key sets up the environment of the case and returns the
		// configured key.
		key  func(t *testing.T) string
		want []string
	}{
		{
			name: "too short",
			key:  func(t *testing.T) string { return "sha256:" + mailHex[:62] },
			want: []string{`client "mailserver"`, "62 hex digits"},
		},
		{
			name: "too long",
			key:  func(t *testing.T) string { return "sha256:" + mailHex + "ab" },
			want: []string{`client "mailserver"`, "66 hex digits"},
		},
		{
			name: "not hex",
			key:  func(t *testing.T) string { return "sha256:" + mailHex[:63] + "z" },
			want: []string{`client "mailserver"`, "not a hex digit"},
		},
		{
			name: "sha512",
			key:  func(t *testing.T) string { return "sha512:" + mailHex + mailHex },
			want: []string{`client "mailserver"`, `"sha512"`, "only sha256"},
		},
		{
			name: "md5",
			key:  func(t *testing.T) string { return "md5:" + mailHex[:32] },
			want: []string{`client "mailserver"`, `"md5"`, "only sha256"},
		},
		{
			name: "bcrypt",
			key:  func(t *testing.T) string { return "bcrypt:$2a$10$g20CLKEiVBS3RiITavLGnu" },
			want: []string{`client "mailserver"`, `"bcrypt"`, "only sha256"},
		},
		{
			name: "wrong digest from env",
			key: func(t *testing.T) string {
				t.Setenv("APIKEY_TEST_DIGEST", "sha256:"+mailHex[:10])
				return "{env.APIKEY_TEST_DIGEST}"
			},
			want: []string{`client "mailserver"`, "{env.APIKEY_TEST_DIGEST}", "10 hex digits"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := []ClientKey{{Client: "mailserver", Key: tt.key(t)}}

			_, err := resolveClientKeys(caddy.NewReplacer(), keys)

			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestNewKeyringHashedSameKey(t *testing.T) {
	tests := []struct {
		name string
		keys []ClientKey
	}{
		{"plaintext then digest", []ClientKey{
			{Client: "mailserver", Key: mailKey},
			{Client: "scanner", Key: digestOf(mailKey)},
		}},
		{"digest then plaintext", []ClientKey{
			{Client: "mailserver", Key: digestOf(mailKey)},
			{Client: "scanner", Key: mailKey},
		}},
		{"digest in two cases", []ClientKey{
			{Client: "mailserver", Key: digestOf(mailKey)},
			{Client: "scanner", Key: strings.ToUpper(digestOf(mailKey))},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := buildKeyring(tt.keys)

			require.Error(t, err)
			assert.Nil(t, ring)
			assert.Contains(t, err.Error(), `"mailserver"`)
			assert.Contains(t, err.Error(), `"scanner"`)
			assert.Contains(t, err.Error(), "same key")
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

func TestNewKeyringMixedHashedAndPlaintext(t *testing.T) {
	ring, err := buildKeyring([]ClientKey{
		{Client: "mailserver", Key: digestOf(mailKey)},
		{Client: "scanner", Key: scannerKey},
		{Client: "backup", Key: strings.ToUpper(digestOf(backupKey))},
	})

	require.NoError(t, err)
	for key, wantClient := range map[string]string{
		mailKey:    "mailserver",
		scannerKey: "scanner",
		backupKey:  "backup",
	} {
		client, found := lookupClient(ring, key)
		assert.True(t, found, "key of %s not found", wantClient)
		assert.Equal(t, wantClient, client)
	}
}

func TestNewKeyringDuplicateOrigins(t *testing.T) {
	keys := []resolvedKey{
		{client: "mailserver", digest: sha256.Sum256([]byte(mailKey)), origin: "keys[0]"},
		{client: "mailserver", digest: sha256.Sum256([]byte(scannerKey)),
			origin: "keys_file /etc/caddy/api-keys, line 3"},
	}

	ring, err := newKeyring(keys)

	require.Error(t, err)
	assert.Nil(t, ring)
	assert.Contains(t, err.Error(), `client "mailserver" is configured twice`)
	assert.Contains(t, err.Error(), "keys[0]")
	assert.Contains(t, err.Error(), "keys_file /etc/caddy/api-keys, line 3")
}

func TestResolveClientKeysExpires(t *testing.T) {
	keys := []ClientKey{
		{Client: "mailserver", Key: mailKey, Expires: "2027-01-31T00:00:00Z"},
		{Client: "scanner", Key: scannerKey, Expires: "2027-01-31T01:30:00+01:00"},
		{Client: "backup", Key: backupKey},
	}

	resolved, err := resolveClientKeys(caddy.NewReplacer(), keys)

	require.NoError(t, err)
	require.Len(t, resolved, 3)
	want := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	assert.True(t, want.Equal(resolved[0].expires), "mailserver expires %v", resolved[0].expires)
	assert.True(t, want.Add(30*time.Minute).Equal(resolved[1].expires),
		"scanner expires %v", resolved[1].expires)
	assert.True(t, resolved[2].expires.IsZero(), "backup expires %v", resolved[2].expires)
	assert.Equal(t, "keys[0]", resolved[0].origin)
}

func TestResolveClientKeysExpiresErrors(t *testing.T) {
	for _, expires := range []string{
		"2027-01-31",
		"2027-01-31 00:00:00Z",
		"2027-01-31T00:00:00",
		"2027-02-30T00:00:00Z",
		"31.01.2027",
		"tomorrow",
		"1800000000",
	} {
		t.Run(expires, func(t *testing.T) {
			keys := []ClientKey{{Client: "mailserver", Key: mailKey, Expires: expires}}

			_, err := resolveClientKeys(caddy.NewReplacer(), keys)

			require.Error(t, err)
			assert.Contains(t, err.Error(), `client "mailserver"`)
			assert.Contains(t, err.Error(), "not an RFC 3339 time")
			assert.Contains(t, err.Error(), strconv.Quote(expires))
			assert.NotContains(t, err.Error(), mailKey)
		})
	}
}

func TestKeyEntryExpired(t *testing.T) {
	expires := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		expires time.Time
		now     time.Time
		want    bool
	}{
		{"no expiry", time.Time{}, expires, false},
		{"no expiry far future", time.Time{}, expires.AddDate(100, 0, 0), false},
		{"a day before", expires, expires.Add(-24 * time.Hour), false},
		{"one nanosecond before", expires, expires.Add(-time.Nanosecond), false},
		// The key is rejected after its expiry time, so at that time it
		// is still valid.
		{"at expiry", expires, expires, false},
		{"one nanosecond after", expires, expires.Add(time.Nanosecond), true},
		{"a day after", expires, expires.Add(24 * time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entry := keyEntry{expires: tt.expires}

			assert.Equal(t, tt.want, entry.expired(tt.now))
		})
	}
}

func TestKeyringRestrict(t *testing.T) {
	keys := []ClientKey{
		{Client: "mailserver", Key: mailKey},
		{Client: "scanner", Key: scannerKey},
		{Client: "backup", Key: backupKey},
	}
	tests := []struct {
		name  string
		allow []string
		want  map[string]bool // client name to allowed
	}{
		{"no allow list", nil, map[string]bool{"mailserver": true, "scanner": true, "backup": true}},
		{"empty allow list", []string{}, map[string]bool{"mailserver": true, "scanner": true, "backup": true}},
		{"one client", []string{"scanner"}, map[string]bool{"mailserver": false, "scanner": true, "backup": false}},
		{"two clients", []string{"backup", "mailserver"},
			map[string]bool{"mailserver": true, "scanner": false, "backup": true}},
		{"client twice", []string{"scanner", "scanner"},
			map[string]bool{"mailserver": false, "scanner": true, "backup": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := buildKeyring(keys)
			require.NoError(t, err)

			err = ring.restrict(tt.allow)

			require.NoError(t, err)
			for key, client := range map[string]string{
				mailKey: "mailserver", scannerKey: "scanner", backupKey: "backup",
			} {
				entry, found := ring.lookup(key)
				require.True(t, found, "key of %s not found", client)
				assert.Equal(t, tt.want[client], entry.allowed, "allowed for %s", client)
			}
		})
	}
}

func TestKeyringRestrictUnknownClient(t *testing.T) {
	ring, err := buildKeyring([]ClientKey{
		{Client: "mailserver", Key: mailKey},
		{Client: "scanner", Key: scannerKey},
	})
	require.NoError(t, err)

	err = ring.restrict([]string{"scanner", "backup"})

	require.Error(t, err)
	assert.Contains(t, err.Error(), `allow names the client "backup", which is not configured`)
	assert.Contains(t, err.Error(), "configured clients: mailserver, scanner")
	assert.NotContains(t, err.Error(), mailKey)
	assert.NotContains(t, err.Error(), scannerKey)
}

// TestResolveClientKeysSwappedHidesKey configures a generated key as the
// client name and the name as the key. Such a key is also a valid client
// name, but the error must not show it.
func TestResolveClientKeysSwappedHidesKey(t *testing.T) {
	keys := []ClientKey{{Client: generatedKey, Key: "mailserver"}}

	_, err := resolveClientKeys(caddy.NewReplacer(), keys)

	require.Error(t, err)
	assert.NotContains(t, err.Error(), generatedKey)
}

// TestKeyringLookupKeyLengths checks lookups of keys around the size of the
// stack buffer that lookup hashes from, and far beyond it.
func TestKeyringLookupKeyLengths(t *testing.T) {
	for _, length := range []int{MinKeyLength, 32, 33, 55, 56, 127, 128, 129, 1000, 16 << 10} {
		t.Run(strconv.Itoa(length), func(t *testing.T) {
			key := strings.Repeat("k", length-1) + "Z"
			ring, err := newKeyring([]resolvedKey{
				{client: "mailserver", digest: sha256.Sum256([]byte(key)), origin: "test"},
			})
			require.NoError(t, err)

			client, found := lookupClient(ring, key)
			assert.True(t, found, "key not found")
			assert.Equal(t, "mailserver", client)
			_, found = lookupClient(ring, key[:length-1]+"Y")
			assert.False(t, found, "near miss found")
			_, found = lookupClient(ring, key+"Z")
			assert.False(t, found, "longer key found")
		})
	}
}
