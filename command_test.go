package apikey

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// countingReader returns the bytes 0, 1, 2, ... in order, so that a
// generated key is the same on every run.
type countingReader struct {
	next byte
}

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.next
		r.next++
	}
	return len(p), nil
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// hexDigest returns the hex SHA-256 digest of key.
func hexDigest(key string) string {
	digest := sha256.Sum256([]byte(key))
	return hex.EncodeToString(digest[:])
}

func TestGenerateKey(t *testing.T) {
	var out bytes.Buffer
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(i)
	}
	wantKey := base64.RawURLEncoding.EncodeToString(raw)

	err := generateKey(new(countingReader), &out, "mailserver")

	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 2, "output %q", out.String())
	assert.Equal(t, wantKey, lines[0])
	assert.Len(t, lines[0], 43)
	assert.Equal(t, "key mailserver sha256:"+hexDigest(wantKey), lines[1])
	assert.True(t, strings.HasSuffix(out.String(), "\n"), "output does not end in a newline")
}

func TestGenerateKeyAlphabet(t *testing.T) {
	var out bytes.Buffer

	err := generateKey(bytes.NewReader(bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)), &out, "default")

	require.NoError(t, err)
	key, _, _ := strings.Cut(out.String(), "\n")
	assert.Len(t, key, 43)
	assert.NoError(t, checkSecret(key))
	assert.NotContains(t, key, "+", "not URL-safe base64")
	assert.NotContains(t, key, "/", "not URL-safe base64")
	assert.NotContains(t, key, "=", "padded base64")
}

func TestGenerateKeyErrors(t *testing.T) {
	tests := []struct {
		name   string
		random io.Reader
		client string
		want   []string
	}{
		{"short random source", bytes.NewReader(make([]byte, 31)), "mailserver",
			[]string{"reading random bytes"}},
		{"invalid client", new(countingReader), "mail server",
			[]string{"--client", "client name is invalid"}},
		{"empty client", new(countingReader), "", []string{"--client", "client name is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer

			err := generateKey(tt.random, &out, tt.client)

			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
			assert.Empty(t, out.String(), "a key was printed despite the error")
		})
	}
}

func TestGenerateKeyWriteError(t *testing.T) {
	err := generateKey(new(countingReader), failingWriter{}, "mailserver")

	require.Error(t, err)
	assert.Contains(t, err.Error(), "disk full")
}

func TestReadKey(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"newline", mailKey + "\n", mailKey},
		{"CRLF", mailKey + "\r\n", mailKey},
		{"no newline", mailKey, mailKey},
		{"trailing blank line", mailKey + "\n\n", mailKey},
		{"trailing whitespace line", mailKey + "\n \t\r\n", mailKey},
		{"empty", "", ""},
		{"only newline", "\n", ""},
		{"space kept", mailKey + " \n", mailKey + " "},
		{"64 KiB", strings.Repeat("k", maxHashInput-1) + "\n", strings.Repeat("k", maxHashInput-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prompt bytes.Buffer

			key, err := readKey(strings.NewReader(tt.input), &prompt)

			require.NoError(t, err)
			assert.Equal(t, tt.want, key)
			assert.Empty(t, prompt.String(), "prompted although the input is no terminal")
		})
	}
}

func TestReadKeyErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"two lines", mailKey + "\n" + scannerKey + "\n", "more than one line"},
		{"two lines CRLF", mailKey + "\r\n" + scannerKey + "\r\n", "more than one line"},
		{"empty first line", "\n" + mailKey + "\n", "more than one line"},
		{"over 64 KiB", strings.Repeat("k", maxHashInput+1), "longer than 64 KiB"},
		{"over 64 KiB with newline", strings.Repeat("k", maxHashInput) + "\n", "longer than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := readKey(strings.NewReader(tt.input), io.Discard)

			require.Error(t, err)
			assert.Empty(t, key)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), mailKey)
			assert.NotContains(t, err.Error(), scannerKey)
		})
	}
}

func TestPrintDigestLine(t *testing.T) {
	var out bytes.Buffer

	err := printDigestLine(&out, "mailserver", mailKey)

	require.NoError(t, err)
	assert.Equal(t, "key mailserver sha256:"+hexDigest(mailKey)+"\n", out.String())
}

func TestPrintDigestLineErrors(t *testing.T) {
	tests := []struct {
		name   string
		client string
		key    string
		want   []string
	}{
		{"short key", "mailserver", "Sh0rt-k3y-15byt", []string{"key is shorter than 16 bytes"}},
		{"empty key", "mailserver", "", []string{"key is empty"}},
		{"key with space", "mailserver", "Spaced-k3y with-space-inside", []string{"key contains a space"}},
		{"key with CR", "mailserver", mailKey + "\r", []string{"control character"}},
		{"invalid client", "mail/server", mailKey, []string{"--client", "client name is invalid"}},
		{"key as client", "Zm9v+YmFy/YmF6cXV4cXV1eA==", mailKey, []string{"--client", "not shown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer

			err := printDigestLine(&out, tt.client, tt.key)

			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
			if tt.key != "" {
				assert.NotContains(t, err.Error(), strings.TrimSpace(tt.key))
			}
			assert.NotContains(t, err.Error(), "Zm9v+YmFy")
			assert.Empty(t, out.String())
		})
	}
}

// TestPrintDigestLineMatchesProvision checks that the command rejects a
// short key with the same reason as the handler's config check.
func TestPrintDigestLineMatchesProvision(t *testing.T) {
	const shortKey = "Sh0rt-k3y-15byt"

	commandErr := printDigestLine(io.Discard, "mailserver", shortKey)
	provisionErr := provisionError(t, &Handler{Keys: []ClientKey{{Client: "mailserver", Key: shortKey}}})

	require.Error(t, commandErr)
	require.Error(t, provisionErr)
	assert.Contains(t, commandErr.Error(), "shorter than 16 bytes")
	assert.Contains(t, provisionErr.Error(), "shorter than 16 bytes")
	_, commandReason, _ := strings.Cut(commandErr.Error(), "key ")
	assert.Contains(t, provisionErr.Error(), commandReason)
}

// newAPIKeyCommand builds the registered api-key command as Caddy's command
// line does, below a root command, so that each test starts from fresh
// flags.
func newAPIKeyCommand(t *testing.T) *cobra.Command {
	t.Helper()
	registered, found := caddycmd.Commands()["api-key"]
	require.True(t, found, "command api-key not registered")
	require.NotNil(t, registered.CobraFunc)
	command := &cobra.Command{
		Use:   registered.Name + " " + registered.Usage,
		Short: registered.Short,
		Long:  registered.Long,
	}
	registered.CobraFunc(command)
	root := &cobra.Command{Use: "caddy", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(command)
	return root
}

// runAPIKeyCommand runs "caddy api-key" with args and stdin, and returns
// what it wrote to standard output and standard error.
func runAPIKeyCommand(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newAPIKeyCommand(t)
	var stdout, stderr bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(append([]string{"api-key"}, args...))
	err := root.Execute()
	return stdout.String(), stderr.String(), err
}

func TestAPIKeyCommandRegistered(t *testing.T) {
	registered, found := caddycmd.Commands()["api-key"]

	require.True(t, found)
	assert.Equal(t, "api-key", registered.Name)
	assert.Contains(t, registered.Usage, "generate")
	assert.Contains(t, registered.Usage, "hash")
	assert.NotEmpty(t, registered.Short)
	assert.Nil(t, registered.Func, "the command is built by CobraFunc")
}

// TestAPIKeyCommandGenerateThenHash generates a key, hashes it with the
// hash subcommand, and loads the printed line into a handler that must
// admit the key.
func TestAPIKeyCommandGenerateThenHash(t *testing.T) {
	generated, _, err := runAPIKeyCommand(t, "", "generate", "--client", "x")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(generated, "\n"), "\n")
	require.Len(t, lines, 2, "generate output %q", generated)
	key, keyLine := lines[0], lines[1]

	hashed, _, err := runAPIKeyCommand(t, key+"\n", "hash", "--client", "x")

	require.NoError(t, err)
	assert.Len(t, key, 43)
	assert.Equal(t, "key x sha256:"+hexDigest(key), keyLine)
	assert.Equal(t, keyLine+"\n", hashed)
	assert.NotContains(t, hashed, key, "hash printed the key")

	fields := strings.Fields(keyLine)
	require.Len(t, fields, 3)
	h := provisionHandler(t, &Handler{
		Keys:         []ClientKey{{Client: fields[1], Key: fields[2]}},
		ClientHeader: "X-Api-Client",
	})
	got := serveWithKey(h, key)
	require.NoError(t, got.err)
	require.Equal(t, 1, got.next.calls)
	assert.Equal(t, []string{"x"}, got.next.request.Header.Values("X-Api-Client"))
	assert.Error(t, serveWithKey(h, fields[2]).err, "the digest itself was admitted")
}

func TestAPIKeyCommandGenerateDistinct(t *testing.T) {
	first, _, err := runAPIKeyCommand(t, "", "generate")
	require.NoError(t, err)
	second, _, err := runAPIKeyCommand(t, "", "generate")
	require.NoError(t, err)

	assert.NotEqual(t, first, second)
	assert.Contains(t, first, "\nkey default sha256:", "default client name")
}

func TestAPIKeyCommandHash(t *testing.T) {
	stdout, stderr, err := runAPIKeyCommand(t, mailKey+"\r\n", "hash")

	require.NoError(t, err)
	assert.Equal(t, "key default sha256:"+hexDigest(mailKey)+"\n", stdout)
	assert.NotContains(t, stderr, mailKey)
}

func TestAPIKeyCommandErrors(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"hash short key", "Sh0rt-k3y-15byt\n", []string{"hash"}, "shorter than 16 bytes"},
		{"hash empty input", "", []string{"hash"}, "key is empty"},
		{"hash two lines", mailKey + "\n" + scannerKey + "\n", []string{"hash"}, "more than one line"},
		{"hash invalid client", mailKey + "\n", []string{"hash", "--client", "a b"}, "client name is invalid"},
		{"generate argument", "", []string{"generate", "extra"}, "generate takes no arguments"},
		{"generate invalid client", "", []string{"generate", "--client", "a/b"}, "client name is invalid"},
		{"unknown subcommand", "", []string{"rotate"}, "unknown api-key subcommand"},
		{"unknown flag", "", []string{"generate", "--name", "x"}, "invalid flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := runAPIKeyCommand(t, tt.stdin, tt.args...)

			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), mailKey)
			assert.NotContains(t, stdout, "sha256:", "a digest line was printed despite the error")
		})
	}
}

// TestAPIKeyCommandKeyArgument passes a key as an argument, which the
// command rejects. The error goes to the terminal, and perhaps a CI log, so
// it must not repeat the key.
func TestAPIKeyCommandKeyArgument(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"hash", []string{"hash", mailKey}},
		{"hash with client", []string{"hash", "--client", "mailserver", mailKey}},
		{"without subcommand", []string{mailKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runAPIKeyCommand(t, "", tt.args...)

			require.Error(t, err)
			assert.NotContains(t, err.Error(), mailKey)
			assert.NotContains(t, stderr, mailKey)
			assert.NotContains(t, stdout, mailKey)
		})
	}
}

func TestAPIKeyCommandHelp(t *testing.T) {
	stdout, _, err := runAPIKeyCommand(t, "")

	require.NoError(t, err)
	assert.Contains(t, stdout, "generate")
	assert.Contains(t, stdout, "hash")
}

// TestAPIKeyCommandHashAdmitted hashes a key read from standard input and
// checks that a handler configured with the printed line admits the key
// and only it.
func TestAPIKeyCommandHashAdmitted(t *testing.T) {
	stdout, _, err := runAPIKeyCommand(t, scannerKey+"\n", "hash", "--client", "scanner")
	require.NoError(t, err)
	fields := strings.Fields(stdout)
	require.Len(t, fields, 3)
	h := provisionHandler(t, &Handler{Keys: []ClientKey{{Client: fields[1], Key: fields[2]}}})

	admitted := serveWithKey(h, scannerKey)
	rejected := serveWithKey(h, mailKey)

	require.NoError(t, admitted.err)
	userID, _ := admitted.repl.Get("http.auth.user.id")
	assert.Equal(t, "scanner", userID)
	handlerErr := requireHandlerError(t, rejected.err)
	assert.Equal(t, http.StatusUnauthorized, handlerErr.StatusCode)
}
