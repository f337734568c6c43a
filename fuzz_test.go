package apikey

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The fuzz targets below check properties that must hold for any input.
// Their seed corpora live in testdata/fuzz/<target>, and a plain 'go test'
// runs only those seeds. scripts/bench-fuzz.sh runs every target for a
// bounded time.

// Keys of the handler that FuzzServeHTTP checks. The seeds contain them, so
// that mutations start from valid, near-miss and duplicated keys.
const (
	fuzzMailKey   = "hV3mQ9zL2xR7cT1wK8nB5yF0dJ4gP6sA+eU/iO3rZ2c="
	fuzzBackupKey = "back-Z4cV7bN1mQ8wE2rT5yU9iO3pA6sD0fG"
)

// FuzzUnmarshalCaddyfile parses arbitrary Caddyfile text as an api_key
// directive. The parser must not panic, and a parse error must not contain
// a key written in a key position: the shorthand argument, or the second
// argument of a 'key' line. Nor may it contain the first argument of a
// 'key' line if that could be a key swapped with the client name.
//
// The parser never looks at a key's text, so the check parses the input a
// second time with each key replaced by a marker, and looks for the
// markers in the error. Looking for the keys themselves would also find
// keys that happen to equal a path, a client name or an example in a
// message.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	f.Fuzz(func(t *testing.T, input string) {
		// caddyfile.NewTestDispenser exits the process on a tokenizer
		// error, so the tokens are made here and bad input is skipped.
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}

		var h Handler
		err = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
		marked, markers := markCaddyfileKeys(tokens)
		if err == nil || len(markers) == 0 {
			return
		}

		var markedHandler Handler
		markedErr := markedHandler.UnmarshalCaddyfile(caddyfile.NewDispenser(marked))
		if markedErr == nil {
			t.Fatalf("parsing failed (%v), but succeeded with the keys replaced", err)
		}
		for _, marker := range markers {
			if strings.Contains(markedErr.Error(), marker) {
				t.Fatalf("parse error contains the key: %v", markedErr)
			}
		}
	})
}

// markCaddyfileKeys returns a copy of tokens in which each token in a key
// position is replaced by a distinct marker, and the markers. A token
// that spans lines keeps its text, because the line structure decides
// which tokens are arguments. A client name is replaced only if it is a
// valid name and would pass as a secret, as the marker does, so that the
// parser takes the same path with the marker.
func markCaddyfileKeys(tokens []caddyfile.Token) ([]caddyfile.Token, []string) {
	// sameLine follows the dispenser, which compares the line a token ends
	// on with the line the next one starts on.
	sameLine := func(i, j int) bool {
		return j < len(tokens) && tokens[i].Line+tokens[i].NumLineBreaks() >= tokens[j].Line
	}
	isArgument := func(i int) bool {
		text := tokens[i].Text
		return text != "{" && text != "}" && !strings.Contains(text, "\n")
	}

	var positions []int
	if sameLine(0, 1) && isArgument(1) {
		positions = append(positions, 1)
	}
	for i := 1; i+2 < len(tokens); i++ {
		if tokens[i].Text == "key" && !sameLine(i-1, i) && sameLine(i, i+1) &&
			sameLine(i+1, i+2) && isArgument(i+1) && isArgument(i+2) {
			positions = append(positions, i+2)
			client := tokens[i+1].Text
			if checkClientName(client) == nil && checkSecret(client) == nil {
				positions = append(positions, i+1)
			}
		}
	}

	marked := append([]caddyfile.Token(nil), tokens...)
	markers := make([]string, 0, len(positions))
	for _, position := range positions {
		// Lowercase, so that the marker is a valid client name too.
		marker := "marker-" + strconv.Itoa(position) + "-qzxwvmrtkp"
		marked[position].Text = marker
		markers = append(markers, marker)
	}
	return marked, markers
}

// FuzzParseKey checks parseKey on arbitrary keys: it must not panic, an
// accepted key yields the digest it stands for, and an error never
// contains the key.
func FuzzParseKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, key string) {
		digest, err := parseKey(key)
		if err != nil {
			if leaksKey(key, err, func(variant string) error {
				_, err := parseKey(variant)
				return err
			}) {
				t.Fatalf("error contains the key: %v", err)
			}
			return
		}

		if hasDigestPrefix(key) {
			want, decodeErr := hex.DecodeString(key[len(digestPrefix):])
			if decodeErr != nil || !bytes.Equal(want, digest[:]) {
				t.Fatalf("digest key %q parsed as %x", key, digest)
			}
			return
		}
		if checkErr := checkSecret(key); checkErr != nil {
			t.Fatalf("accepted a secret that checkSecret rejects: %v", checkErr)
		}
		if digest != sha256.Sum256([]byte(key)) {
			t.Fatalf("secret %q parsed as %x, not its SHA-256 digest", key, digest)
		}
	})
}

// leaksKey reports whether err, which parsing key returned, contains key,
// and parse, called with a variant of key that differs in its last letter
// or digit, returns an error that contains the variant too. A key that
// only one error contains matched fixed text, such as an example time, by
// chance. Keys shorter than MinKeyLength are not checked.
func leaksKey(key string, err error, parse func(string) error) bool {
	if len(key) < MinKeyLength || !strings.Contains(err.Error(), key) {
		return false
	}
	variant, ok := changeLastAlphanumeric(key)
	if !ok {
		return false
	}
	variantErr := parse(variant)
	return variantErr != nil && strings.Contains(variantErr.Error(), variant)
}

// changeLastAlphanumeric returns s with its last ASCII letter or digit
// swapped for a neighbour of the same kind (0 and 1, a and b, and so on),
// so that a hex digit stays a hex digit. It returns false if s has no
// letter or digit.
func changeLastAlphanumeric(s string) (string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		var first byte
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			first = '0'
		case 'a' <= c && c <= 'z':
			first = 'a'
		case 'A' <= c && c <= 'Z':
			first = 'A'
		default:
			continue
		}
		swapped := ((s[i] - first) ^ 1) + first
		return s[:i] + string(swapped) + s[i+1:], true
	}
	return "", false
}

// FuzzParseKeysFile checks parseKeysFile on arbitrary file content: it
// must not panic, it returns one key for each entry line when it succeeds,
// and an error never contains the key field of a line. Nor does it contain
// a client name that would pass as a secret, in case name and key were
// swapped.
func FuzzParseKeysFile(f *testing.F) {
	// The path has spaces, so no key field can match part of it.
	const path = "/etc/caddy/api keys"
	f.Fuzz(func(t *testing.T, content []byte) {
		keys, err := parseKeysFile(path, content)
		if err != nil {
			lines := strings.Split(string(content), "\n")
			for i, line := range lines {
				fields := strings.Fields(line)
				if len(fields) < 2 {
					continue
				}
				// The client name is the first field, and the key field is
				// its first match after the name.
				nameStart := strings.Index(line, fields[0])
				keyStart := nameStart + len(fields[0])
				keyStart += strings.Index(line[keyStart:], fields[1])
				type position struct{ field, start int }
				checked := []position{{1, keyStart}}
				if checkSecret(fields[0]) == nil {
					checked = append(checked, position{0, nameStart})
				}
				for _, c := range checked {
					text := fields[c.field]
					leaked := leaksKey(text, err, func(variant string) error {
						changed := append([]string(nil), lines...)
						changed[i] = line[:c.start] + variant + line[c.start+len(text):]
						_, err := parseKeysFile(path, []byte(strings.Join(changed, "\n")))
						return err
					})
					if leaked {
						t.Fatalf("error contains field %d of line %d: %v", c.field+1, i+1, err)
					}
				}
			}
			return
		}

		entries := 0
		for _, line := range strings.Split(string(content), "\n") {
			line = strings.TrimSpace(line)
			if line != "" && !strings.HasPrefix(line, "#") {
				entries++
			}
		}
		if len(keys) != entries {
			t.Fatalf("parsed %d keys from %d entry lines", len(keys), entries)
		}
		for _, key := range keys {
			if checkClientName(key.client) != nil {
				t.Fatalf("accepted the invalid client name %q", key.client)
			}
		}
	})
}

// FuzzPlaceholderNames checks that placeholderNames finds the same
// placeholders, in the same order, as Caddy's replacer.
func FuzzPlaceholderNames(f *testing.F) {
	f.Fuzz(func(t *testing.T, input string) {
		var replaced []string
		repl := caddy.NewEmptyReplacer()
		repl.Map(func(key string) (any, bool) {
			replaced = append(replaced, key)
			return "value", true
		})
		_, err := repl.ReplaceFunc(input, nil)
		if err != nil {
			// The replacer gives up on input with more than 100 unclosed
			// braces, which placeholderNames need not do.
			return
		}

		found := placeholderNames(input)
		if len(found) != len(replaced) {
			t.Fatalf("placeholderNames(%q) = %q; the replacer looked up %q", input, found, replaced)
		}
		for i := range found {
			if found[i] != replaced[i] {
				t.Fatalf("placeholderNames(%q) = %q; the replacer looked up %q", input, found, replaced)
			}
		}
	})
}

// fuzzHandler is the handler that FuzzServeHTTP checks, provisioned once
// per process because provisioning starts a goroutine and registers
// metrics.
var fuzzHandler = sync.OnceValues(func() (*Handler, error) {
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	backupDigest := sha256.Sum256([]byte(fuzzBackupKey))
	h := &Handler{
		Keys: []ClientKey{
			{Client: "mailserver", Key: fuzzMailKey},
			{Client: "backup", Key: digestPrefix + hex.EncodeToString(backupDigest[:])},
		},
		ClientHeader: "X-Api-Client",
		// Throttling would turn the fuzzer's stream of wrong keys into
		// 429 responses without a key check.
		Throttle: &FailureThrottle{Disabled: true},
	}
	if err := h.Provision(ctx); err != nil {
		return nil, err
	}
	// A million rejections would otherwise each go through the debug
	// logger of the bare test context.
	h.protection.sampledLogger = zap.NewNop()
	return h, nil
})

// FuzzServeHTTP sends requests with arbitrary header fields to the
// handler. The input is a header block: one field a line, the name before
// the first ':' and the value after it, added the way net/http adds parsed
// fields. A request must be admitted exactly when the key header has one
// value and that value is a configured key. An admitted request must carry
// the client's name in the client header and no key header. It must also
// have no Connection token that would make reverse_proxy drop the client
// header.
func FuzzServeHTTP(f *testing.F) {
	f.Fuzz(func(t *testing.T, headerBlock string) {
		h, err := fuzzHandler()
		if err != nil {
			t.Fatalf("provisioning: %v", err)
		}

		r := httptest.NewRequest(http.MethodGet, "http://localhost/scan", nil)
		for _, line := range strings.Split(headerBlock, "\n") {
			name, value, _ := strings.Cut(line, ":")
			r.Header.Add(name, value)
		}
		ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
			caddyhttp.ClientIPVarKey: "192.0.2.20",
		})
		r = r.WithContext(ctx)
		presented := append([]string(nil), r.Header["X-Api-Key"]...)

		wantClient := ""
		if len(presented) == 1 {
			switch presented[0] {
			case fuzzMailKey:
				wantClient = "mailserver"
			case fuzzBackupKey:
				wantClient = "backup"
			}
		}

		next := new(fuzzNext)
		err = h.ServeHTTP(httptest.NewRecorder(), r, next)

		if wantClient == "" {
			checkFuzzRejection(t, err, next, presented)
			return
		}
		if err != nil || next.calls != 1 {
			t.Fatalf("key of %s rejected (calls %d): %v", wantClient, next.calls, err)
		}
		if got := r.Header["X-Api-Client"]; len(got) != 1 || got[0] != wantClient {
			t.Fatalf("client header is %q, want %q", got, wantClient)
		}
		if _, found := r.Header["X-Api-Key"]; found {
			t.Fatalf("key header still present after admission")
		}
		for _, value := range r.Header["Connection"] {
			// reverse_proxy trims each token's ASCII whitespace and deletes
			// the header it names, in canonical form.
			for _, token := range strings.Split(value, ",") {
				name := textproto.CanonicalMIMEHeaderKey(textproto.TrimString(token))
				if name == "X-Api-Client" {
					t.Fatalf("Connection value %q still names the client header", value)
				}
			}
		}
	})
}

// checkFuzzRejection fails the fuzz test unless the request was rejected
// with 401 without calling next, and the error message leaves out every
// presented value of MinKeyLength bytes or more.
func checkFuzzRejection(t *testing.T, err error, next *fuzzNext, presented []string) {
	t.Helper()
	if next.calls != 0 {
		t.Fatalf("request with key values %q admitted", presented)
	}
	var handlerErr caddyhttp.HandlerError
	if !errors.As(err, &handlerErr) {
		t.Fatalf("rejection returned %T (%v), not a caddyhttp.HandlerError", err, err)
	}
	if handlerErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rejection status %d, want 401", handlerErr.StatusCode)
	}
	message := handlerErr.Err.Error()
	for _, value := range presented {
		// The messages are fixed sentences of short words, so a value of
		// MinKeyLength bytes without blanks appears in one only if copied.
		if len(value) >= MinKeyLength && utf8.ValidString(value) &&
			!strings.ContainsAny(value, " \t") && strings.Contains(message, value) {
			t.Fatalf("rejection message %q contains the presented value", message)
		}
	}
}

// fuzzNext counts the requests that reach the next handler.
type fuzzNext struct {
	calls int
}

func (n *fuzzNext) ServeHTTP(w http.ResponseWriter, _ *http.Request) error {
	n.calls++
	w.WriteHeader(http.StatusNoContent)
	return nil
}
