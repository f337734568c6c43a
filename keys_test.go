package apikey

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
			want:    []string{`"mailserver"`, "{}", "not supported"},
			secrets: []string{"Lit3ralPrefix"},
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
			want:    []string{"no client name"},
			secrets: []string{mailKey},
		},
		{
			name: "client name with space",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mail server", Key: mailKey}}
			},
			want:    []string{`"mail server"`},
			secrets: []string{mailKey},
		},
		{
			name: "client name with colon",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mail:server", Key: mailKey}}
			},
			want:    []string{`"mail:server"`},
			secrets: []string{mailKey},
		},
		{
			name: "client name too long",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: strings.Repeat("m", 65), Key: mailKey}}
			},
			want:    []string{strings.Repeat("m", 65), "64 bytes"},
			secrets: []string{mailKey},
		},
		{
			name: "client name non-ASCII",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{{Client: "mailsérver", Key: mailKey}}
			},
			want:    []string{`"mailsérver"`},
			secrets: []string{mailKey},
		},
		{
			name: "bad client after valid one",
			keys: func(t *testing.T) []ClientKey {
				return []ClientKey{
					{Client: "mailserver", Key: mailKey},
					{Client: "scan ner", Key: scannerKey},
				}
			},
			want:    []string{`"scan ner"`},
			secrets: []string{mailKey, scannerKey},
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

			ring, err := newKeyring(caddy.NewReplacer(), keys)

			require.Error(t, err)
			assert.Nil(t, ring)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
			for _, secret := range tt.secrets {
				assert.NotContains(t, err.Error(), secret)
			}
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

			ring, err := newKeyring(caddy.NewReplacer(), []ClientKey{{Client: "mailserver", Key: key}})

			require.NoError(t, err)
			client, found := ring.lookup(tt.resolved)
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

	ring, err := newKeyring(caddy.NewReplacer(), keys)

	require.NoError(t, err)
	assert.Equal(t, []string{"mailserver", "scanner", "backup"}, ring.clientNames())
	for key, wantClient := range map[string]string{
		mailKey:    "mailserver",
		scannerKey: "scanner",
		backupKey:  "backup",
	} {
		client, found := ring.lookup(key)
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
			ring, err := newKeyring(caddy.NewReplacer(), []ClientKey{{Client: name, Key: mailKey}})

			require.NoError(t, err)
			client, found := ring.lookup(mailKey)
			assert.True(t, found)
			assert.Equal(t, name, client)
		})
	}
}

func TestKeyringStoresNoKey(t *testing.T) {
	ring, err := newKeyring(caddy.NewReplacer(), []ClientKey{
		{Client: "mailserver", Key: mailKey},
		{Client: "scanner", Key: scannerKey},
	})
	require.NoError(t, err)

	dump := fmt.Sprintf("%#v", *ring)

	assert.NotContains(t, dump, mailKey)
	assert.NotContains(t, dump, scannerKey)
}

func TestKeyringLookup(t *testing.T) {
	ring, err := newKeyring(caddy.NewReplacer(), []ClientKey{
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
			client, found := ring.lookup(tt.key)

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

	ring, err := newKeyring(caddy.NewReplacer(), keys)

	require.NoError(t, err)
	require.Len(t, ring.clientNames(), count)
	for _, i := range []int{0, 1, 4_999, 7_777, count - 1} {
		client, found := ring.lookup(keyOf(i))
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

	require.NoError(t, ring.add("mailserver", first))
	err := ring.add("scanner", second)

	require.Error(t, err)
	assert.Contains(t, err.Error(), `"mailserver"`)
	assert.Contains(t, err.Error(), `"scanner"`)
	assert.Contains(t, err.Error(), "collides")
	client, found := ring.lookup(mailKey)
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
