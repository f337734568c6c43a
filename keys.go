package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// MinKeyLength is the minimum length of a resolved key in bytes. A key of
// 16 random bytes or more cannot be guessed online; generate keys with
// "openssl rand -base64 32".
const MinKeyLength = 16

// maxClientNameLength bounds client names, which appear in logs, in the
// {http.auth.user.id} placeholder and in client_header.
const maxClientNameLength = 64

// ClientKey is one accepted key and the name of the client that holds it.
type ClientKey struct {
	// Client names the service that holds the key. The name is logged,
	// set as {http.auth.user.id} and sent in client_header, so it must be
	// unique and may contain only letters, digits, '.', '_' and '-'.
	Client string `json:"client"`

	// Key is the secret the client presents. It may be a literal or
	// contain {env.NAME} and {file.PATH} placeholders, which are resolved
	// when the config is provisioned; no other placeholders are accepted.
	// The resolved key must be at least 16 bytes of printable ASCII
	// without spaces, and must differ from every other client's key.
	Key string `json:"key"`
}

// keyEntry is a configured key after provisioning: only its SHA-256
// digest is kept, never the key itself.
type keyEntry struct {
	digest [sha256.Size]byte
	client string
}

// keyring finds the client for a presented key. Lookup hashes the
// presented value, finds a candidate by the first 8 bytes of the digest
// and compares full digests with crypto/subtle, so its cost neither
// depends on how much of the value matches a key nor grows with the
// number of keys.
type keyring struct {
	entries []keyEntry
	index   map[uint64]int

	// decoy is compared when no candidate is found, so that a miss does
	// the same work as a hit.
	decoy keyEntry
}

// newKeyring resolves the placeholders in each configured key and indexes
// the resulting digests. Every error names the client and, where one is at
// fault, the placeholder; no error contains any part of a key.
func newKeyring(repl *caddy.Replacer, keys []ClientKey) (*keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("no API keys configured; add 'key <client> <key>' " +
			"to the api_key block, for example: key mailserver {env.MAILSERVER_API_KEY}")
	}

	ring := &keyring{
		entries: make([]keyEntry, 0, len(keys)),
		index:   make(map[uint64]int, len(keys)),
	}
	seenClients := make(map[string]bool, len(keys))
	for _, configured := range keys {
		if err := checkClientName(configured.Client); err != nil {
			return nil, err
		}
		if seenClients[configured.Client] {
			return nil, fmt.Errorf("client %q is configured twice; give each key "+
				"its own client name, for example %s-2", configured.Client, configured.Client)
		}
		seenClients[configured.Client] = true

		key, err := resolveKey(repl, configured.Client, configured.Key)
		if err != nil {
			return nil, err
		}
		if err := ring.add(configured.Client, sha256.Sum256([]byte(key))); err != nil {
			return nil, err
		}
	}
	return ring, nil
}

// add indexes one digest, rejecting a key that another client already
// holds.
func (k *keyring) add(client string, digest [sha256.Size]byte) error {
	prefix := digestPrefix(digest)
	if i, found := k.index[prefix]; found {
		if k.entries[i].digest == digest {
			return fmt.Errorf("clients %q and %q have the same key; "+
				"every client needs its own key", k.entries[i].client, client)
		}
		// Two distinct SHA-256 digests that share 64 bits: possible in
		// theory, never seen in practice.
		return fmt.Errorf("the key of client %q collides with the key of client %q "+
			"in the first 8 bytes of its SHA-256 digest; generate a new key for %q",
			client, k.entries[i].client, client)
	}
	k.index[prefix] = len(k.entries)
	k.entries = append(k.entries, keyEntry{digest: digest, client: client})
	return nil
}

// lookup returns the client that holds key, and whether there is one.
func (k *keyring) lookup(key string) (string, bool) {
	digest := sha256.Sum256([]byte(key))

	candidate := &k.decoy
	i, found := k.index[digestPrefix(digest)]
	if found {
		candidate = &k.entries[i]
	}

	if subtle.ConstantTimeCompare(candidate.digest[:], digest[:]) != 1 || !found {
		return "", false
	}
	return candidate.client, true
}

// clientNames returns the configured client names in config order.
func (k *keyring) clientNames() []string {
	names := make([]string, len(k.entries))
	for i, entry := range k.entries {
		names[i] = entry.client
	}
	return names
}

func digestPrefix(digest [sha256.Size]byte) uint64 {
	return binary.BigEndian.Uint64(digest[:8])
}

// checkClientName rejects names that would be ambiguous or unsafe in logs,
// placeholders and header values.
func checkClientName(name string) error {
	if name == "" {
		return errors.New("a key has no client name; write 'key <client> <key>'")
	}
	if len(name) > maxClientNameLength {
		return fmt.Errorf("client name %q is longer than %d bytes; choose a shorter name",
			name, maxClientNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '.' || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("client name %q contains %q; use only letters, digits, "+
			"'.', '_' and '-'", name, string(rune(c)))
	}
	return nil
}

// resolveKey replaces the placeholders in rawKey and checks the result.
// Each placeholder is first resolved on its own, so that an error can say
// which one failed and why without showing the literal parts of the key.
func resolveKey(repl *caddy.Replacer, client, rawKey string) (string, error) {
	placeholders := placeholderNames(rawKey)
	for _, name := range placeholders {
		if err := checkPlaceholder(repl, name); err != nil {
			return "", fmt.Errorf("client %q: key placeholder {%s} %v", client, name, err)
		}
	}

	// keyName describes the key in errors by its placeholders only.
	keyName := "key"
	if len(placeholders) > 0 {
		keyName = "key from {" + strings.Join(placeholders, "}{") + "}"
	}

	key, err := repl.ReplaceOrErr(rawKey, true, true)
	if err != nil {
		// The replacer's messages name placeholders, never their values.
		return "", fmt.Errorf("client %q: resolving %s: %v", client, keyName, err)
	}
	if key == "" {
		return "", fmt.Errorf("client %q: %s is empty; set it to a secret of at least "+
			"%d bytes, for example from {env.NAME}", client, keyName, MinKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return "", fmt.Errorf("client %q: %s contains a space, a control character "+
				"or a non-ASCII byte, which a header value cannot carry reliably. Check "+
				"the source for stray whitespace or newlines, or generate a key with "+
				"'openssl rand -base64 32'", client, keyName)
		}
	}
	if len(key) < MinKeyLength {
		return "", fmt.Errorf("client %q: %s is shorter than %d bytes; generate a "+
			"longer one with 'openssl rand -base64 32'", client, keyName, MinKeyLength)
	}
	return key, nil
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

// placeholderNames returns the names of the placeholders in s, in order,
// following the brace rules of caddy.Replacer in Caddy v2.11: "\{" and "\}"
// are escaped braces, except that a "\}" at the very end still closes a
// placeholder, and an opening brace without a closing one is literal text.
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
