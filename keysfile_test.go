package apikey

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// generatedKey has the form of a key from 'caddy api-key generate': 43
// characters of URL-safe base64, which also form a valid client name.
const generatedKey = "q3Jz8M1vXkR0bN5tYw2LcP7sHd4uGe9aFi6oTj_-ZxE"

// writeKeysFile writes content to a keys file with the given permissions
// in a new temporary directory and returns its path.
func writeKeysFile(t *testing.T, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api-keys")
	require.NoError(t, os.WriteFile(path, []byte(content), perm))
	// WriteFile applies the umask, so Chmod sets the exact permissions.
	require.NoError(t, os.Chmod(path, perm))
	return path
}

func TestParseKeysFile(t *testing.T) {
	content := "# Clients of the scanner API\n" +
		"\n" +
		"mailserver " + mailKey + "\n" +
		"\tscanner\t" + digestOf(scannerKey) + "\t2027-01-31T00:00:00Z\n" +
		"   # indented comment " + backupKey + "\n" +
		"backup  " + backupKey + "   2027-06-30T12:00:00+02:00  \r\n" +
		"   \t  \n" +
		"ops " + strings.ToUpper(digestOf("ops-K9dF3gH7jL1zX5cV8bN2mQ4w"))

	keys, err := parseKeysFile("/etc/caddy/api-keys", []byte(content))

	require.NoError(t, err)
	require.Len(t, keys, 4)
	want := []struct {
		client  string
		key     string
		expires time.Time
		line    int
	}{
		{"mailserver", mailKey, time.Time{}, 3},
		{"scanner", scannerKey, time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC), 4},
		{"backup", backupKey, time.Date(2027, 6, 30, 10, 0, 0, 0, time.UTC), 6},
		{"ops", "ops-K9dF3gH7jL1zX5cV8bN2mQ4w", time.Time{}, 8},
	}
	for i, w := range want {
		assert.Equal(t, w.client, keys[i].client)
		assert.Equal(t, sha256.Sum256([]byte(w.key)), keys[i].digest, "digest of %s", w.client)
		assert.True(t, w.expires.Equal(keys[i].expires), "expiry of %s: %v", w.client, keys[i].expires)
		assert.Equal(t, fmt.Sprintf("keys_file /etc/caddy/api-keys, line %d", w.line), keys[i].origin)
	}
}

func TestParseKeysFileEmpty(t *testing.T) {
	for name, content := range map[string]string{
		"empty":         "",
		"only comments": "# no clients yet\n#\n",
		"only blanks":   "\n \t\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			keys, err := parseKeysFile("/etc/caddy/api-keys", []byte(content))

			require.NoError(t, err)
			assert.Empty(t, keys)
		})
	}
}

func TestParseKeysFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		// want lists substrings the error must contain besides the file
		// name.
		want []string
		// secrets lists values the error must not contain: keys and
		// every field of the bad line but a valid client name.
		secrets []string
	}{
		{
			name:    "one field",
			content: generatedKey + "\n",
			want:    []string{"line 1:", "found 1 fields", "'NAME KEY'"},
			secrets: []string{generatedKey},
		},
		{
			name:    "four fields",
			content: "mailserver " + mailKey + " 2031-12-24T00:00:00Z extra-Fourth-field\n",
			want:    []string{"line 1:", "found 4 fields"},
			secrets: []string{mailKey, "extra-Fourth-field", "2031-12-24"},
		},
		{
			name:    "line number counts comments and blank lines",
			content: "# comment\n\nmailserver " + mailKey + "\n\n# " + backupKey + "\n" + scannerKey + "\n",
			want:    []string{"line 6:", "found 1 fields"},
			secrets: []string{mailKey, backupKey, scannerKey},
		},
		{
			name:    "invalid client name",
			content: "mail/server " + mailKey + "\n",
			want:    []string{"line 1:", "client name is invalid", "not shown"},
			secrets: []string{mailKey, "mail/server"},
		},
		{
			name:    "base64 key in place of client name",
			content: "Zm9v+YmFy/YmF6cXV4cXV1eA== mailserver\n",
			want:    []string{"line 1:", "client name is invalid", "put the name before the key"},
			secrets: []string{"Zm9v+YmFy/YmF6cXV4cXV1eA==", "Zm9v"},
		},
		{
			name:    "client name too long",
			content: strings.Repeat("m", 65) + " " + mailKey + "\n",
			want:    []string{"line 1:", "client name is invalid"},
			secrets: []string{mailKey, strings.Repeat("m", 65)},
		},
		{
			name:    "short key",
			content: "mailserver Sh0rt-k3y-15byt\n",
			want:    []string{"line 1:", `client "mailserver"`, "shorter than 16 bytes"},
			secrets: []string{"Sh0rt-k3y-15byt"},
		},
		{
			name:    "non-ASCII key",
			content: "mailserver Ünïcode-k3y-abcdefghijkl\n",
			want:    []string{"line 1:", `client "mailserver"`, "non-ASCII"},
			secrets: []string{"code-k3y-abcdefghijkl"},
		},
		{
			name:    "key with a space",
			content: "mailserver Spaced-k3y-first-half second-half-of-the-key\n",
			want:    []string{"line 1:", `client "mailserver"`, "not an RFC 3339"},
			secrets: []string{"Spaced-k3y-first-half", "second-half-of-the-key"},
		},
		{
			name:    "digest too short",
			content: "mailserver " + digestOf(mailKey)[:70] + "\n",
			want:    []string{"line 1:", `client "mailserver"`, "63 hex digits"},
		},
		{
			name:    "digest not hex",
			content: "mailserver " + digestOf(mailKey)[:70] + "x\n",
			want:    []string{"line 1:", `client "mailserver"`, "not a hex digit"},
		},
		{
			name:    "sha512 digest",
			content: "mailserver sha512:" + strings.Repeat("ab", 64) + "\n",
			want:    []string{"line 1:", `client "mailserver"`, `"sha512"`, "only sha256"},
		},
		{
			name:    "date without time",
			content: "mailserver " + mailKey + " 2031-12-24\n",
			want:    []string{"line 1:", `client "mailserver"`, "not an RFC 3339"},
			secrets: []string{mailKey, "2031-12-24"},
		},
		{
			name:    "expiry without zone",
			content: "mailserver " + mailKey + " 2031-12-24T00:00:00\n",
			want:    []string{"line 1:", `client "mailserver"`, "not an RFC 3339"},
			secrets: []string{mailKey, "2031-12-24"},
		},
		{
			name:    "error after valid lines",
			content: "mailserver " + mailKey + "\nscanner " + scannerKey + "\nbackup Sh0rt-v4lue\n",
			want:    []string{"line 3:", `client "backup"`, "shorter than 16 bytes"},
			secrets: []string{mailKey, scannerKey, "Sh0rt-v4lue"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseKeysFile("/etc/caddy/api-keys", []byte(tt.content))

			requireErrorContains(t, err, tt.want, tt.secrets)
			assert.Nil(t, keys)
			assert.Contains(t, err.Error(), "keys_file /etc/caddy/api-keys, ")
		})
	}
}

// TestParseKeysFileSwappedFieldsHideKey writes a generated key where the
// client name belongs. Such a key is also a valid client name, but the
// error must not show it.
func TestParseKeysFileSwappedFieldsHideKey(t *testing.T) {
	_, err := parseKeysFile("/etc/caddy/api-keys", []byte(generatedKey+" mailserver\n"))

	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 1")
	assert.NotContains(t, err.Error(), generatedKey)
}

func TestReadKeysFile(t *testing.T) {
	path := writeKeysFile(t, "mailserver "+mailKey+"\nscanner "+digestOf(scannerKey)+"\n", 0o600)

	file, err := readKeysFile(path)

	require.NoError(t, err)
	require.Len(t, file.keys, 2)
	assert.Equal(t, "mailserver", file.keys[0].client)
	assert.Equal(t, "scanner", file.keys[1].client)
	assert.Equal(t, "keys_file "+path+", line 2", file.keys[1].origin)
	assert.False(t, file.worldReadable)
}

func TestReadKeysFileWorldReadable(t *testing.T) {
	tests := []struct {
		perm os.FileMode
		want bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, false},
		{0o660, false},
		{0o644, true},
		{0o604, true},
		{0o666, true},
	}
	for _, tt := range tests {
		t.Run(tt.perm.String(), func(t *testing.T) {
			path := writeKeysFile(t, "mailserver "+mailKey+"\n", tt.perm)

			file, err := readKeysFile(path)

			require.NoError(t, err)
			assert.Equal(t, tt.want, file.worldReadable)
		})
	}
}

func TestReadKeysFileMaxSize(t *testing.T) {
	line := "# " + strings.Repeat("x", 97) + "\n"
	content := strings.Repeat(line, maxKeysFileSize/len(line))
	content += strings.Repeat("#", maxKeysFileSize-len(content)-1) + "\n"
	require.Len(t, content, maxKeysFileSize)
	path := writeKeysFile(t, content+"mailserver "+mailKey+"\n", 0o600)
	atLimit := writeKeysFile(t, content, 0o600)

	_, err := readKeysFile(path)
	_, atLimitErr := readKeysFile(atLimit)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "keys_file "+path)
	assert.Contains(t, err.Error(), "larger than 4 MiB")
	assert.NotContains(t, err.Error(), mailKey)
	assert.NoError(t, atLimitErr, "a file of exactly 4 MiB")
}

func TestReadKeysFileErrors(t *testing.T) {
	tests := []struct {
		name string
		// path sets up the case and returns the path to read.
		path func(t *testing.T) string
		want []string
	}{
		{
			name: "missing",
			path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing-keys") },
			want: []string{"missing-keys", "no such file or directory", "check the path"},
		},
		{
			name: "directory",
			path: func(t *testing.T) string {
				dir := filepath.Join(t.TempDir(), "keydir")
				require.NoError(t, os.Mkdir(dir, 0o700))
				return dir
			},
			want: []string{"keydir", "not a regular file"},
		},
		{
			name: "unreadable",
			path: func(t *testing.T) string {
				skipIfRoot(t)
				return writeKeysFile(t, "mailserver "+mailKey+"\n", 0o000)
			},
			want: []string{"api-keys", "permission denied"},
		},
		{
			name: "bad line",
			path: func(t *testing.T) string {
				return writeKeysFile(t, "mailserver "+mailKey+"\nscanner "+scannerKey+" soon\n", 0o600)
			},
			want: []string{"api-keys, line 2:", `client "scanner"`, "not an RFC 3339"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)

			file, err := readKeysFile(path)

			requireErrorContains(t, err, tt.want, []string{mailKey, scannerKey})
			assert.Nil(t, file)
			assert.Contains(t, err.Error(), "keys_file "+path)
		})
	}
}

// TestReadKeysFileLongLine reads a file of one line as large as the size
// limit allows. It may be rejected, but never with its content in the
// error.
func TestReadKeysFileLongLine(t *testing.T) {
	content := "mailserver " + mailKey + strings.Repeat("x", maxKeysFileSize-len(mailKey)-len("mailserver "))
	path := writeKeysFile(t, content, 0o600)

	_, err := readKeysFile(path)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "keys_file "+path)
	assert.Contains(t, err.Error(), "line longer than 4 MiB")
	assert.NotContains(t, err.Error(), mailKey)
	assert.NotContains(t, err.Error(), "xxxxxxxx")
}
