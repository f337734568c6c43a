package apikey

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// resolveKey replaces the placeholders in rawKey. Each placeholder is
// first resolved on its own, so that an error can name the one that failed
// and the cause without showing the literal parts of the key.
func resolveKey(repl *caddy.Replacer, client, rawKey string) (string, error) {
	for _, name := range placeholderNames(rawKey) {
		if err := checkPlaceholder(repl, name); err != nil {
			shown := "{" + name + "}"
			if !isPlaceholderName(name) {
				// Braces inside a literal key look like a placeholder.
				shown = "(not shown, in case it is part of a key)"
			}
			return "", fmt.Errorf("client %q: key placeholder %s %v", client, shown, err)
		}
	}

	key, err := repl.ReplaceOrErr(rawKey, true, true)
	if err != nil {
		// The replacer's messages name placeholders, never their values.
		return "", fmt.Errorf("client %q: resolving %s: %v", client, describeKey(rawKey), err)
	}
	return key, nil
}

// isPlaceholderName reports whether name is shaped like the name of one of
// Caddy's placeholders, such as env.HOME or http.request.uri: a lowercase
// namespace, a dot, then letters, digits, '.', '_', '-' or '/'.
func isPlaceholderName(name string) bool {
	namespace, rest, found := strings.Cut(name, ".")
	if !found || namespace == "" || rest == "" || len(name) > 256 {
		return false
	}
	for i := 0; i < len(namespace); i++ {
		if namespace[i] < 'a' || namespace[i] > 'z' {
			return false
		}
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && !('0' <= c && c <= '9') &&
			strings.IndexByte("._-/", c) < 0 {
			return false
		}
	}
	return true
}

// describeKey names a configured key in errors by its placeholders only,
// for example "key from {env.MAILSERVER_API_KEY}".
func describeKey(rawKey string) string {
	placeholders := placeholderNames(rawKey)
	if len(placeholders) == 0 {
		return "key"
	}
	return "key from {" + strings.Join(placeholders, "}{") + "}"
}

// checkPlaceholder reports why the placeholder {name} cannot supply a key,
// or nil if it resolves to a non-empty value.
func checkPlaceholder(repl *caddy.Replacer, name string) error {
	switch {
	case strings.HasPrefix(name, "env."):
		variable := strings.TrimPrefix(name, "env.")
		value, set := os.LookupEnv(variable)
		if !set {
			return fmt.Errorf("is empty: the environment variable %s is not set; "+
				"set it to the key before starting Caddy", variable)
		}
		if value == "" {
			return fmt.Errorf("is empty: the environment variable %s is set to an "+
				"empty string; set it to the key before starting Caddy", variable)
		}

	case strings.HasPrefix(name, "file."):
		path := strings.TrimPrefix(name, "file.")
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("is empty: the file %s does not exist; "+
					"create it with the key, or fix the path", path)
			}
			return fmt.Errorf("is empty: the file %s cannot be read (%v); "+
				"make it readable by the Caddy process", path, unwrapPathError(err))
		}

	default:
		return errors.New("is not supported; keys accept only {env.NAME} and " +
			"{file.PATH} placeholders")
	}

	value, err := repl.ReplaceOrErr("{"+name+"}", true, true)
	if err != nil || value == "" {
		if strings.HasPrefix(name, "file.") {
			return fmt.Errorf("is empty: the file %s is empty or cannot be read; "+
				"write the key into it and make it readable by the Caddy process",
				strings.TrimPrefix(name, "file."))
		}
		return errors.New("is empty; set it to the key before starting Caddy")
	}
	return nil
}

// unwrapPathError drops the operation and path from a *fs.PathError, which
// the caller's message already names.
func unwrapPathError(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}

// placeholderNames returns the names of the placeholders in s, in order.
// It follows the brace rules of caddy.Replacer in Caddy v2.11: "\{" and
// "\}" are escaped braces, but a "\}" at the very end still closes a
// placeholder. An opening brace without a closing one is literal text.
func placeholderNames(s string) []string {
	var names []string
	for i := 0; i < len(s); i++ {
		if s[i] != '{' || (i > 0 && s[i-1] == '\\') {
			continue
		}

		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			continue
		}
		end += i
		for end < len(s)-1 && s[end-1] == '\\' {
			next := strings.IndexByte(s[end+1:], '}')
			if next < 0 {
				end = -1
				break
			}
			end += next + 1
		}
		if end < 0 {
			continue
		}

		names = append(names, s[i+1:end])
		i = end
	}
	return names
}
