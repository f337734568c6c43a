package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runCaddyInput runs the Caddy binary with stdin and returns its exit code,
// stdout and stderr. It fails the test if Caddy does not exit within
// commandTimeout.
func runCaddyInput(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, caddyBinary, args...)
	cmd.Env = caddyEnv(newCaddyDirs(t), nil)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "caddy %s did not exit", strings.Join(args, " "))

	exitCode := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		exitCode = exitErr.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return exitCode, stdout.String(), stderr.String()
}

// TestAPIKeyCommand generates a key with the built binary, hashes it
// again from standard input, and checks that both print the same digest
// line, which is the SHA-256 of the key.
func TestAPIKeyCommand(t *testing.T) {
	exitCode, stdout, stderr := runCaddyInput(t, "", "api-key", "generate", "--client", "mailserver")
	require.Equal(t, 0, exitCode, stderr)

	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 2, stdout)
	key, digestLine := lines[0], lines[1]
	assert.Regexp(t, regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`), key)
	digest := sha256.Sum256([]byte(key))
	assert.Equal(t, "key mailserver sha256:"+hex.EncodeToString(digest[:]), digestLine)

	exitCode, stdout, stderr = runCaddyInput(t, key+"\n", "api-key", "hash", "--client", "mailserver")
	require.Equal(t, 0, exitCode, stderr)
	assert.Equal(t, digestLine+"\n", stdout)
	assert.NotContains(t, stderr, key)
}

// TestAPIKeyCommandHidesArgument passes a key as an argument by mistake:
// the command must fail without repeating it.
func TestAPIKeyCommandHidesArgument(t *testing.T) {
	key := randomKey(t)
	for _, args := range [][]string{
		{"api-key", "hash", key},
		{"api-key", key},
		{"api-key", "generate", key},
	} {
		t.Run(strings.Join(args[:len(args)-1], " "), func(t *testing.T) {
			exitCode, stdout, stderr := runCaddyInput(t, "", args...)

			assert.NotEqual(t, 0, exitCode)
			assert.NotContains(t, stdout, key)
			assert.NotContains(t, stderr, key)
		})
	}
}

// TestAPIKeyCommandListed checks that caddy help lists the command.
func TestAPIKeyCommandListed(t *testing.T) {
	exitCode, stdout, stderr := runCaddyInput(t, "", "help")

	require.Equal(t, 0, exitCode, stderr)
	assert.Contains(t, stdout+stderr, "api-key")
}
