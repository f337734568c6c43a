package apikey

// The tests in this file run Caddy in this test process through caddytest,
// which needs its admin endpoint on localhost:2999 and serves on the fixed
// ports 9080 (HTTP) and 9443 (HTTPS and HTTP/3). Keep every such test in
// this package, because a second package running at the same time would
// load its config into the same server. Under -short they are skipped.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestMain points Caddy's config and data directories, where it writes
// autosaved configs and its local CA, at a temporary directory.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apikey-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating a directory for Caddy's files:", err)
		os.Exit(1)
	}
	for name, sub := range map[string]string{
		"XDG_CONFIG_HOME": "config",
		"XDG_DATA_HOME":   "data",
		"XDG_CACHE_HOME":  "cache",
	} {
		if err := os.Setenv(name, filepath.Join(dir, sub)); err != nil {
			fmt.Fprintln(os.Stderr, "setting", name+":", err)
			os.Exit(1)
		}
	}

	code := m.Run()

	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// globalOptions is the global options block of every config loaded in
// these tests. The admin address and ports are the ones caddytest expects.
const globalOptions = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	persist_config off
	skip_install_trust
	grace_period 1s
%s}
`

// caddyfileWith returns a Caddyfile with the test global options, extra
// global options and the given site blocks.
func caddyfileWith(extraGlobals, sites string) string {
	return fmt.Sprintf(globalOptions, extraGlobals) + "\n" + sites
}

// startCaddy loads caddyfile into the in-process Caddy and waits until the
// previous config's sockets are closed. It stops the test if the load
// fails, because caddytest only marks the test failed.
func startCaddy(t *testing.T, caddyfile string) {
	t.Helper()
	startCaddyConfig(t, caddyfile, "caddyfile")
}

// startCaddyConfig is startCaddy for a config of the given type: "json" or
// the name of a config adapter.
func startCaddyConfig(t *testing.T, config, configType string) {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(config, configType)
	if t.Failed() {
		t.FailNow()
	}
	waitForOldSockets(t)
}

// waitForOldSockets waits until at most one socket listens on each of the
// ports 9080 (TCP) and 9443 (TCP and UDP). Caddy opens a new config's
// sockets with SO_REUSEPORT beside the old ones and closes the old ones
// in the background after /load returns. Until then the kernel may hand a
// new connection to the old server, which responds with the old config or
// resets the connection when its socket closes (Caddy v2.11.9,
// modules/caddyhttp/app.go and listen_unix.go). It reads /proc/net, so on
// systems without it, it only logs. It fails the test if the old sockets
// are still open after 5 seconds.
func waitForOldSockets(t *testing.T) {
	t.Helper()
	checks := []struct {
		files []string
		port  int
		state string // hex socket state: 0A is TCP LISTEN, 07 is UDP unconnected
	}{
		{[]string{"/proc/net/tcp", "/proc/net/tcp6"}, 9080, "0A"},
		{[]string{"/proc/net/tcp", "/proc/net/tcp6"}, 9443, "0A"},
		{[]string{"/proc/net/udp", "/proc/net/udp6"}, 9443, "07"},
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, check := range checks {
		for {
			count, err := countSockets(check.files, check.port, check.state)
			if err != nil {
				t.Logf("cannot count sockets, so a request may reach the previous config: %v", err)
				return
			}
			if count <= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d sockets still on port %d after 5 s", count, check.port)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// countSockets counts the sockets in the /proc/net tables files whose local
// port is port and whose state is state.
func countSockets(files []string, port int, state string) (int, error) {
	portHex := fmt.Sprintf(":%04X", port)
	count := 0
	for _, file := range files {
		table, err := os.ReadFile(file)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(table), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && strings.HasSuffix(fields[1], portHex) && fields[3] == state {
				count++
			}
		}
	}
	return count, nil
}

// loadConfig posts a Caddyfile to the admin endpoint and returns the
// response status and body. Caddy must already be running.
func loadConfig(t *testing.T, caddyfile string) (int, string) {
	t.Helper()
	request, err := http.NewRequest(http.MethodPost, "http://localhost:2999/load",
		strings.NewReader(caddyfile))
	require.NoError(t, err)
	request.Header.Set("Content-Type", "text/caddyfile")
	client := &http.Client{Timeout: 10 * time.Second}

	response, err := client.Do(request)

	require.NoError(t, err)
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	require.NoError(t, err)
	return response.StatusCode, string(body)
}

// recordedRequest is what the upstream saw of one request. Trailer is
// recorded after the body is read, when net/http has filled it in.
type recordedRequest struct {
	Method  string
	Path    string
	Proto   string
	Header  http.Header
	Body    []byte
	Trailer http.Header
}

// upstream is an HTTP server on 127.0.0.1 that records every request it
// receives and responds 200 "upstream ok". It accepts WebSocket upgrades
// and then echoes what the client sends.
type upstream struct {
	server *httptest.Server

	mu       sync.Mutex
	requests []recordedRequest
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := new(upstream)
	u.server = httptest.NewServer(http.HandlerFunc(u.serveHTTP))
	t.Cleanup(u.server.Close)
	return u
}

func (u *upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.requests = append(u.requests, recordedRequest{
		Method:  r.Method,
		Path:    r.URL.Path,
		Proto:   r.Proto,
		Header:  r.Header.Clone(),
		Body:    body,
		Trailer: r.Trailer.Clone(),
	})
	u.mu.Unlock()

	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		u.serveWebSocket(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "upstream ok")
}

// serveWebSocket completes the WebSocket handshake and echoes raw bytes
// until the client closes the connection or 10 seconds pass.
func (u *upstream) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	conn, buffered, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

	digest := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	_, _ = fmt.Fprintf(buffered, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(digest[:]))
	_ = buffered.Flush()
	_, _ = io.Copy(conn, buffered)
}

func (u *upstream) address() string {
	return u.server.Listener.Addr().String()
}

// received returns a copy of the requests recorded so far.
func (u *upstream) received() []recordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recordedRequest(nil), u.requests...)
}

// localDialer dials 127.0.0.1 on the port of addr, whatever its host, so
// that requests to https://localhost:9443 carry the name localhost in SNI
// and Host but never leave the loopback interface.
func localDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
}

// newClient returns an HTTP/1.1 client that opens a new connection for each
// request, so that no connection outlives a config reload, and that does
// not follow redirects.
func newClient() *http.Client {
	transport := &http.Transport{
		DialContext:       localDialer(),
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}
	return newClientWith(transport)
}

func newClientWith(transport http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: transport,
		Timeout:   10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// result is a response with its body read.
type result struct {
	status int
	proto  int
	header http.Header
	body   string
	// closed reports whether the server asked to close the connection
	// with Connection: close, which net/http removes from header.
	closed bool
}

// send sends one request with the given values of X-API-KEY (none for a
// nil slice) and returns the response with its body read.
func send(t *testing.T, client *http.Client, method, url string, keys []string, body string) result {
	t.Helper()
	var bodyReader io.Reader
	if body != "" {
		bodyReader = strings.NewReader(body)
	}
	request, err := http.NewRequest(method, url, bodyReader)
	require.NoError(t, err)
	if keys != nil {
		request.Header["X-Api-Key"] = keys
	}

	response, err := client.Do(request)

	require.NoError(t, err)
	defer response.Body.Close()
	responseBody, err := io.ReadAll(response.Body)
	require.NoError(t, err)
	return result{
		status: response.StatusCode,
		proto:  response.ProtoMajor,
		header: response.Header,
		body:   string(responseBody),
		closed: response.Close,
	}
}

// proxySite is a site that writes api_key after reverse_proxy, so that it
// runs first only because of the directive order the module registers.
const proxySite = `http://localhost:9080 {
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
		client_header X-Api-Client
	}
}
`

// startProxySite starts an upstream and loads proxySite in front of it.
func startProxySite(t *testing.T) *upstream {
	t.Helper()
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(proxySite, up.address())))
	return up
}

func TestIntegrationValidKey(t *testing.T) {
	up := startProxySite(t)
	client := newClient()

	got := send(t, client, http.MethodPost, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "message body")

	assert.Equal(t, http.StatusOK, got.status)
	assert.Equal(t, "upstream ok", got.body)
	requests := up.received()
	require.Len(t, requests, 1)
	assert.Equal(t, "/scanner/scan", requests[0].Path)
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
	assert.Empty(t, requests[0].Header.Values("X-Api-Key"))
	assert.Equal(t, "message body", string(requests[0].Body))
}

func TestIntegrationForgedClientHeader(t *testing.T) {
	up := startProxySite(t)
	request, err := http.NewRequest(http.MethodGet, "http://localhost:9080/scanner/scan", nil)
	require.NoError(t, err)
	request.Header.Set("X-Api-Key", mailKey)
	request.Header.Add("X-Api-Client", "admin")
	request.Header.Add("X-Api-Client", "backup")

	response, err := newClient().Do(request)

	require.NoError(t, err)
	_ = response.Body.Close()
	assert.Equal(t, http.StatusOK, response.StatusCode)
	requests := up.received()
	require.Len(t, requests, 1)
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
}

func TestIntegrationRejections(t *testing.T) {
	up := startProxySite(t)
	client := newClient()
	tests := []struct {
		name string
		keys []string
	}{
		{"missing", nil},
		{"empty", []string{""}},
		{"wrong", []string{scannerKey}},
		{"near miss", []string{mailKey[:len(mailKey)-1] + "5"}},
		{"prefix", []string{mailKey[:len(mailKey)-1]}},
		{"duplicate valid", []string{mailKey, mailKey}},
		{"duplicate mixed", []string{scannerKey, mailKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", tt.keys, "")

			assert.Equal(t, http.StatusUnauthorized, got.status)
			assert.Equal(t, `APIKey header="X-API-KEY"`, got.header.Get("Www-Authenticate"))
			assert.Empty(t, got.body)
		})
	}
	assert.Empty(t, up.received(), "upstream received a rejected request")
}

func TestIntegrationOutsideMatcher(t *testing.T) {
	up := startProxySite(t)

	got := send(t, newClient(), http.MethodGet, "http://localhost:9080/public", nil, "")

	assert.Equal(t, http.StatusOK, got.status)
	assert.Len(t, up.received(), 1)
}

func TestIntegrationMethods(t *testing.T) {
	up := startProxySite(t)
	client := newClient()
	methods := []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, "PROPFIND",
	}
	for _, method := range methods {
		t.Run(method, func(t *testing.T) {
			rejected := send(t, client, method, "http://localhost:9080/scanner/scan", nil, "")
			admitted := send(t, client, method, "http://localhost:9080/scanner/scan",
				[]string{mailKey}, "")

			assert.Equal(t, http.StatusUnauthorized, rejected.status)
			assert.Equal(t, `APIKey header="X-API-KEY"`, rejected.header.Get("Www-Authenticate"))
			assert.Equal(t, http.StatusOK, admitted.status)
		})
	}

	requests := up.received()
	require.Len(t, requests, len(methods), "upstream must see only the admitted requests")
	for i, method := range methods {
		assert.Equal(t, method, requests[i].Method)
		assert.Empty(t, requests[i].Header.Values("X-Api-Key"))
	}
}

func TestIntegrationPathVariants(t *testing.T) {
	up := startProxySite(t)
	paths := []string{
		"/scanner/scan",
		"/SCANNER/scan",
		"/Scanner/scan",
		"//scanner/scan",
		"/scanner//scan",
		"/scanner/./scan",
		"/public/../scanner/scan",
		"/%73canner/scan",
		"/scanner%2Fscan",
	}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			response := rawExchange(t, "GET "+path+" HTTP/1.1\r\nHost: localhost:9080\r\n"+
				"Connection: close\r\n\r\n")
			_ = response.Body.Close()

			assert.Equal(t, http.StatusUnauthorized, response.StatusCode)
		})
	}
	for _, request := range up.received() {
		t.Errorf("upstream received %s %s without a key", request.Method, request.Path)
	}
}

// rawExchange writes request to 127.0.0.1:9080 as it is and returns the
// first response, read within 10 seconds. msgAndArgs, in testify's form,
// is the failure message if no response arrives.
func rawExchange(t *testing.T, request string, msgAndArgs ...any) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:9080", 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, request)
	require.NoError(t, err)
	response, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, msgAndArgs...)
	return response
}

// webSocketRequest is a WebSocket opening handshake for /scanner/ws with
// extra header lines.
func webSocketRequest(extraHeaders string) string {
	return "GET /scanner/ws HTTP/1.1\r\n" +
		"Host: localhost:9080\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		extraHeaders +
		"\r\n"
}

func TestIntegrationWebSocketWithoutKey(t *testing.T) {
	up := startProxySite(t)

	response := rawExchange(t, webSocketRequest(""))
	_ = response.Body.Close()

	assert.Equal(t, http.StatusUnauthorized, response.StatusCode)
	assert.Equal(t, `APIKey header="X-API-KEY"`, response.Header.Get("Www-Authenticate"))
	assert.Empty(t, up.received())
}

func TestIntegrationWebSocketWrongKey(t *testing.T) {
	up := startProxySite(t)

	response := rawExchange(t, webSocketRequest("X-Api-Key: "+scannerKey+"\r\n"))
	_ = response.Body.Close()

	assert.Equal(t, http.StatusUnauthorized, response.StatusCode)
	assert.Empty(t, up.received())
}

func TestIntegrationWebSocketWithKey(t *testing.T) {
	up := startProxySite(t)
	conn, err := net.DialTimeout("tcp", "127.0.0.1:9080", 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, webSocketRequest("X-Api-Key: "+mailKey+"\r\n"))
	require.NoError(t, err)
	reader := bufio.NewReader(conn)

	response, err := http.ReadResponse(reader, nil)

	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, response.StatusCode)
	_, err = io.WriteString(conn, "ping through the tunnel")
	require.NoError(t, err)
	echoed := make([]byte, len("ping through the tunnel"))
	_, err = io.ReadFull(reader, echoed)
	require.NoError(t, err)
	assert.Equal(t, "ping through the tunnel", string(echoed))
	requests := up.received()
	require.Len(t, requests, 1)
	assert.Empty(t, requests[0].Header.Values("X-Api-Key"))
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
}

func TestIntegrationHandleErrors(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
	}
	handle_errors 401 {
		header Content-Type application/json
		respond `+"`"+`{"error": "{http.error.message}"}`+"`"+` 401
	}
}
`, up.address())))
	client := newClient()

	got := send(t, client, http.MethodPost, "http://localhost:9080/scanner/scan",
		[]string{scannerKey}, "message body")

	assert.Equal(t, http.StatusUnauthorized, got.status)
	assert.JSONEq(t, `{"error": "API key invalid"}`, got.body)
	assert.Equal(t, "application/json", got.header.Get("Content-Type"))
	assert.Equal(t, `APIKey header="X-API-KEY"`, got.header.Get("Www-Authenticate"))
	assert.NotContains(t, got.body, scannerKey)
	admitted := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "")
	assert.Equal(t, http.StatusOK, admitted.status)
	assert.Len(t, up.received(), 1)
}

func TestIntegrationHandleBlocks(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	handle /scanner/* {
		reverse_proxy %s
		api_key {
			key mailserver {env.APIKEY_IT_MAIL}
		}
	}
	handle {
		respond "public" 200
	}
}
`, up.address())))
	client := newClient()

	rejected := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", nil, "")
	admitted := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "")
	public := send(t, client, http.MethodGet, "http://localhost:9080/other", nil, "")

	assert.Equal(t, http.StatusUnauthorized, rejected.status)
	assert.Equal(t, http.StatusOK, admitted.status)
	assert.Equal(t, "upstream ok", admitted.body)
	assert.Equal(t, http.StatusOK, public.status)
	assert.Equal(t, "public", public.body)
	assert.Len(t, up.received(), 1)
}

func TestIntegrationHandlePath(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	handle_path /scanner/* {
		reverse_proxy %s
		api_key {env.APIKEY_IT_MAIL}
	}
	respond "public" 200
}
`, up.address())))
	client := newClient()

	rejected := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", nil, "")
	admitted := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "")

	assert.Equal(t, http.StatusUnauthorized, rejected.status)
	assert.Equal(t, http.StatusOK, admitted.status)
	requests := up.received()
	require.Len(t, requests, 1)
	assert.Equal(t, "/scan", requests[0].Path)
}

// TestIntegrationRouteOrder checks that inside route the handlers run in
// the order written: api_key written first protects the path, and api_key
// written after reverse_proxy never runs.
func TestIntegrationRouteOrder(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	route /early/* {
		api_key {env.APIKEY_IT_MAIL}
		reverse_proxy %[1]s
	}
	route /late/* {
		reverse_proxy %[1]s
		api_key {env.APIKEY_IT_MAIL}
	}
}
`, up.address())))
	client := newClient()

	earlyRejected := send(t, client, http.MethodGet, "http://localhost:9080/early/scan", nil, "")
	earlyAdmitted := send(t, client, http.MethodGet, "http://localhost:9080/early/scan",
		[]string{mailKey}, "")
	lateWithoutKey := send(t, client, http.MethodGet, "http://localhost:9080/late/scan", nil, "")

	assert.Equal(t, http.StatusUnauthorized, earlyRejected.status)
	assert.Equal(t, http.StatusOK, earlyAdmitted.status)
	assert.Equal(t, http.StatusOK, lateWithoutKey.status,
		"inside route, a proxy written before api_key responds first")
	requests := up.received()
	require.Len(t, requests, 2)
	assert.Equal(t, "/early/scan", requests[0].Path)
	assert.Equal(t, "/late/scan", requests[1].Path)
}

// TestIntegrationJSONConfig loads the handler from a JSON config with a
// custom header, forward_key and client_header.
func TestIntegrationJSONConfig(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddyConfig(t, fmt.Sprintf(`{
		"admin": {"listen": "localhost:2999", "config": {"persist": false}},
		"apps": {
			"http": {
				"http_port": 9080,
				"https_port": 9443,
				"grace_period": 1000000000,
				"servers": {
					"gateway": {
						"listen": [":9080"],
						"routes": [{
							"handle": [
								{
									"handler": "api_key",
									"header": "X-Scanner-Token",
									"keys": [{"client": "mailserver", "key": "{env.APIKEY_IT_MAIL}"}],
									"forward_key": true,
									"client_header": "X-Api-Client"
								},
								{
									"handler": "reverse_proxy",
									"upstreams": [{"dial": %q}]
								}
							]
						}]
					}
				}
			}
		}
	}`, up.address()), "json")
	request, err := http.NewRequest(http.MethodGet, "http://localhost:9080/scan", nil)
	require.NoError(t, err)
	request.Header.Set("X-Scanner-Token", mailKey)

	rejected := send(t, newClient(), http.MethodGet, "http://localhost:9080/scan", []string{mailKey}, "")
	response, err := newClient().Do(request)

	require.NoError(t, err)
	_ = response.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, rejected.status, "key in X-API-KEY, not in the configured header")
	assert.Equal(t, `APIKey header="X-Scanner-Token"`, rejected.header.Get("Www-Authenticate"))
	assert.Equal(t, http.StatusOK, response.StatusCode)
	requests := up.received()
	require.Len(t, requests, 1)
	assert.Equal(t, []string{mailKey}, requests[0].Header.Values("X-Scanner-Token"))
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
}

// tlsSite serves localhost on 9443 with a certificate from Caddy's local
// CA.
const tlsSite = `localhost {
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
		client_header X-Api-Client
	}
}
`

// sendUntilServed retries a GET until the TLS handshake succeeds, because
// Caddy obtains the certificate for localhost in the background after the
// config loads. It gives up after about 10 seconds.
func sendUntilServed(t *testing.T, client *http.Client, url string) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 40; attempt++ {
		response, err := client.Get(url)
		if err == nil {
			_ = response.Body.Close()
			return
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	require.NoError(t, lastErr, "no response from %s", url)
}

// assertValidAndInvalid sends a request without a key, one with a wrong
// key and one with the valid key over client, and checks the status codes,
// the protocol and what the upstream saw.
func assertValidAndInvalid(t *testing.T, client *http.Client, up *upstream, url string, protoMajor int) {
	t.Helper()
	before := len(up.received())

	missing := send(t, client, http.MethodGet, url, nil, "")
	wrong := send(t, client, http.MethodPost, url, []string{scannerKey}, "message body")
	valid := send(t, client, http.MethodPost, url, []string{mailKey}, "message body")

	assert.Equal(t, protoMajor, missing.proto)
	assert.Equal(t, http.StatusUnauthorized, missing.status)
	assert.Equal(t, `APIKey header="X-API-KEY"`, missing.header.Get("Www-Authenticate"))
	assert.Equal(t, http.StatusUnauthorized, wrong.status)
	assert.False(t, wrong.closed, "Connection: close on HTTP/%d", protoMajor)
	assert.Equal(t, http.StatusOK, valid.status)
	assert.Equal(t, "upstream ok", valid.body)
	requests := up.received()[before:]
	require.Len(t, requests, 1, "upstream must see only the valid request")
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
	assert.Empty(t, requests[0].Header.Values("X-Api-Key"))
	assert.Equal(t, "message body", string(requests[0].Body))
}

func TestIntegrationHTTP2(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(tlsSite, up.address())))
	transport := &http.Transport{
		DialContext:     localDialer(),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		Protocols:       new(http.Protocols),
	}
	transport.Protocols.SetHTTP2(true)
	client := newClientWith(transport)
	t.Cleanup(transport.CloseIdleConnections)
	sendUntilServed(t, client, "https://localhost:9443/public")

	assertValidAndInvalid(t, client, up, "https://localhost:9443/scanner/scan", 2)
}

// TestIntegrationHTTP2ExpectContinue checks that an HTTP/2 client that
// waits for 100 Continue gets the 401 without sending its body.
func TestIntegrationHTTP2ExpectContinue(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(tlsSite, up.address())))
	transport := &http.Transport{
		DialContext:           localDialer(),
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: true},
		Protocols:             new(http.Protocols),
		ExpectContinueTimeout: 5 * time.Second,
	}
	transport.Protocols.SetHTTP2(true)
	t.Cleanup(transport.CloseIdleConnections)
	client := newClientWith(transport)
	sendUntilServed(t, client, "https://localhost:9443/public")
	body := &countingBody{data: strings.NewReader(strings.Repeat("b", 2_000_000))}
	request, err := http.NewRequest(http.MethodPost, "https://localhost:9443/scanner/upload", body)
	require.NoError(t, err)
	request.ContentLength = 2_000_000
	request.Header.Set("Expect", "100-continue")
	request.Header.Set("X-Api-Key", scannerKey)

	response, err := client.Do(request)

	require.NoError(t, err)
	_ = response.Body.Close()
	assert.Equal(t, 2, response.ProtoMajor)
	assert.Equal(t, http.StatusUnauthorized, response.StatusCode)
	assert.Zero(t, body.reads, "client sent the body of a rejected upload")
	assert.Len(t, up.received(), 1, "upstream must see only the readiness request")
}

func TestIntegrationHTTP3(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n",
		fmt.Sprintf(tlsSite, up.address())))
	transport := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"},
		Dial: func(ctx context.Context, addr string, tlsConfig *tls.Config, quicConfig *quic.Config) (*quic.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return quic.DialAddrEarly(ctx, net.JoinHostPort("127.0.0.1", port), tlsConfig, quicConfig)
		},
	}
	t.Cleanup(func() { _ = transport.Close() })
	client := newClientWith(transport)
	sendUntilServed(t, client, "https://localhost:9443/public")

	assertValidAndInvalid(t, client, up, "https://localhost:9443/scanner/scan", 3)
}

func TestIntegrationH2C(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("\tservers :9080 {\n\t\tprotocols h1 h2c\n\t}\n",
		fmt.Sprintf(proxySite, up.address())))
	// Prior-knowledge HTTP/2 over cleartext, as supported by net/http
	// since Go 1.24.
	transport := &http.Transport{
		DialContext: localDialer(),
		Protocols:   new(http.Protocols),
	}
	transport.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(transport.CloseIdleConnections)

	assertValidAndInvalid(t, newClientWith(transport), up, "http://localhost:9080/scanner/scan", 2)
}

// TestIntegrationConnectionClose checks over HTTP/1.1 keep-alive
// connections that a rejected request with a body closes its connection
// and one without a body leaves it open.
func TestIntegrationConnectionClose(t *testing.T) {
	up := startProxySite(t)
	transport := &http.Transport{DialContext: localDialer()}
	t.Cleanup(transport.CloseIdleConnections)
	client := newClientWith(transport)

	withBody := send(t, client, http.MethodPost, "http://localhost:9080/scanner/scan",
		[]string{scannerKey}, "message body")
	withoutBody := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{scannerKey}, "")
	admitted := send(t, client, http.MethodPost, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "message body")

	assert.Equal(t, http.StatusUnauthorized, withBody.status)
	assert.True(t, withBody.closed, "rejected request with a body kept its connection")
	assert.Equal(t, http.StatusUnauthorized, withoutBody.status)
	assert.False(t, withoutBody.closed, "rejected request without a body closed its connection")
	assert.Equal(t, http.StatusOK, admitted.status)
	assert.False(t, admitted.closed, "admitted request closed its connection")
	assert.Len(t, up.received(), 1)
}

// TestIntegrationExpectContinue sends the headers of a large upload with
// Expect: 100-continue and a wrong key, and never the body. Caddy must
// respond 401 without 100 Continue and without waiting for the body. A
// server that waits instead stalls the client until its read timeout.
func TestIntegrationExpectContinue(t *testing.T) {
	tests := []struct {
		name      string
		keyHeader string
	}{
		{"wrong key", "X-Api-Key: " + scannerKey + "\r\n"},
		{"missing key", ""},
		{"duplicate key", "X-Api-Key: " + mailKey + "\r\nX-Api-Key: " + mailKey + "\r\n"},
	}
	up := startProxySite(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			request := "POST /scanner/upload HTTP/1.1\r\n" +
				"Host: localhost:9080\r\n" +
				"Content-Type: application/octet-stream\r\n" +
				"Content-Length: 2000000\r\n" +
				"Expect: 100-continue\r\n" +
				tt.keyHeader +
				"\r\n"

			response := rawExchange(t, request, "no response within 10 s to a rejected request "+
				"that expects 100 Continue")

			_ = response.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, response.StatusCode)
			assert.Equal(t, `APIKey header="X-API-KEY"`, response.Header.Get("Www-Authenticate"))
			assert.True(t, response.Close, "connection not closed after the rejection")
		})
	}
	assert.Empty(t, up.received())
}

// TestIntegrationExpectContinueValid checks that an admitted upload that
// expects 100 Continue still gets it and reaches the upstream.
func TestIntegrationExpectContinueValid(t *testing.T) {
	up := startProxySite(t)
	body := strings.Repeat("b", 1000)
	conn, err := net.DialTimeout("tcp", "127.0.0.1:9080", 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, "POST /scanner/upload HTTP/1.1\r\n"+
		"Host: localhost:9080\r\n"+
		"Content-Length: 1000\r\n"+
		"Expect: 100-continue\r\n"+
		"X-Api-Key: "+mailKey+"\r\n"+
		"Connection: close\r\n"+
		"\r\n")
	require.NoError(t, err)
	reader := bufio.NewReader(conn)

	interim, err := http.ReadResponse(reader, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusContinue, interim.StatusCode)
	_, err = io.WriteString(conn, body)
	require.NoError(t, err)
	// Caddy may pass on the upstream's own 100 Continue as well, so skip
	// informational responses, a bounded number of them.
	var final *http.Response
	for range 5 {
		final, err = http.ReadResponse(reader, nil)
		require.NoError(t, err)
		if final.StatusCode >= http.StatusOK {
			break
		}
	}
	_ = final.Body.Close()

	assert.Equal(t, http.StatusOK, final.StatusCode)
	requests := up.received()
	require.Len(t, requests, 1)
	assert.Equal(t, body, string(requests[0].Body))
}

func TestIntegrationReload(t *testing.T) {
	up := startUpstream(t)
	const oldKey, newKey = "old-Y3kV8nB2qW7eR4tZ1uI6oP9aS5", "new-M6xC1vB8nQ3wE7rT2yU5iO0pL4"
	configWith := func(keyLines string) string {
		return caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key {
%s	}
}
`, up.address(), keyLines))
	}
	oldLine := "\t\tkey old " + oldKey + "\n"
	newLine := "\t\tkey new " + newKey + "\n"
	steps := []struct {
		name      string
		keyLines  string
		oldStatus int
		newStatus int
	}{
		{"old only", oldLine, http.StatusOK, http.StatusUnauthorized},
		{"old and new", oldLine + newLine, http.StatusOK, http.StatusOK},
		{"new only", newLine, http.StatusUnauthorized, http.StatusOK},
	}
	client := newClient()
	for _, step := range steps {
		startCaddy(t, configWith(step.keyLines))

		withOld := send(t, client, http.MethodGet, "http://localhost:9080/scan", []string{oldKey}, "")
		withNew := send(t, client, http.MethodGet, "http://localhost:9080/scan", []string{newKey}, "")

		assert.Equal(t, step.oldStatus, withOld.status, "%s: old key", step.name)
		assert.Equal(t, step.newStatus, withNew.status, "%s: new key", step.name)
	}

	assert.Len(t, up.received(), 4, "upstream must see only the admitted requests")
}

// TestIntegrationHeaderMatcherRecipe compares Caddy's header matcher recipe
// with api_key when the key's environment variable is unset: the recipe
// admits a request with an empty key header, and api_key refuses to load.
func TestIntegrationHeaderMatcherRecipe(t *testing.T) {
	unsetEnv(t, "APIKEY_IT_UNSET")
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	@denied not header X-API-KEY {env.APIKEY_IT_UNSET}
	respond @denied 401
	reverse_proxy %s
}
`, up.address())))
	client := newClient()

	recipe := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", []string{""}, "")

	assert.Equal(t, http.StatusOK, recipe.status, "the recipe admits an empty key header")
	assert.Len(t, up.received(), 1)

	status, body := loadConfig(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key {
		key mailserver {env.APIKEY_IT_UNSET}
	}
}
`, up.address())))

	assert.NotEqual(t, http.StatusOK, status)
	assert.Contains(t, body, `\"mailserver\"`)
	assert.Contains(t, body, "{env.APIKEY_IT_UNSET}")
	assert.Contains(t, body, "not set")
}

// TestIntegrationLoadErrorHidesKey checks that a config that fails to load
// because of a bad key does not show the key in the admin API's error.
func TestIntegrationLoadErrorHidesKey(t *testing.T) {
	up := startProxySite(t)
	const shortKey = "Sh0rt-k3y-15byt"

	status, body := loadConfig(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key {
		key mailserver %s
		key scanner %s
	}
}
`, up.address(), mailKey, shortKey)))

	assert.NotEqual(t, http.StatusOK, status)
	assert.Contains(t, body, `\"scanner\"`)
	assert.Contains(t, body, "shorter than 16 bytes")
	assert.NotContains(t, body, shortKey)
	assert.NotContains(t, body, mailKey)
	got := send(t, newClient(), http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "")
	assert.Equal(t, http.StatusOK, got.status, "the previous config must stay active")
}

// logEntry is one JSON line of Caddy's log.
type logEntry struct {
	Level      string   `json:"level"`
	Logger     string   `json:"logger"`
	Message    string   `json:"msg"`
	Reason     string   `json:"reason"`
	Client     string   `json:"client_ip"`
	Clients    []string `json:"clients"`
	ClientName string   `json:"client"`
	KeysFile   string   `json:"keys_file"`
}

// exampleSnippet returns the definition of the snippet name in
// Caddyfile.example, from "(name) {" to its closing brace.
func exampleSnippet(t *testing.T, name string) string {
	t.Helper()
	example, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)
	opening := "(" + name + ") {\n"
	start := strings.Index(string(example), opening)
	require.GreaterOrEqual(t, start, 0, "no snippet %s in Caddyfile.example", name)
	length := strings.Index(string(example[start:]), "\n}\n")
	require.Positive(t, length, "snippet %s in Caddyfile.example has no closing brace", name)
	return string(example[start:start+length]) + "\n}\n"
}

// TestIntegrationLogs sends valid, invalid and duplicate keys, and keys in
// header spellings that Caddy drops, with the default log at Debug level
// and an access log, both filtered with the snippet redact_api_key from
// Caddyfile.example. No key may appear in either log, and the handler's
// own lines must name the clients and the rejection reasons.
func TestIntegrationLogs(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	logDir := t.TempDir()
	defaultLog := filepath.Join(logDir, "default.log")
	accessLog := filepath.Join(logDir, "access.log")
	filter := `format filter {
			wrap json
			fields {
				import redact_api_key
			}
		}`
	config := exampleSnippet(t, "redact_api_key") + "\n" + fmt.Sprintf(globalOptions,
		fmt.Sprintf("\tlog default {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t\t%s\n\t}\n",
			defaultLog, filter)) +
		fmt.Sprintf(`
http://localhost:9080 {
	log {
		output file %s
		%s
	}
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
		client_header X-Api-Client
	}
}
`, accessLog, filter, up.address())
	startCaddy(t, config)
	client := newClient()
	nearMiss := mailKey[:len(mailKey)-1] + "5"

	send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", []string{mailKey}, "")
	send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", []string{nearMiss}, "")
	send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", nil, "")
	send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{mailKey, scannerKey}, "")
	for _, field := range []string{"x-api-key", "X_API_KEY", "X.API.KEY", "X-API_KEY", "x_api.key"} {
		response := rawExchange(t, "GET /scanner/scan HTTP/1.1\r\nHost: localhost:9080\r\n"+
			field+": "+mailKey+"\r\nConnection: close\r\n\r\n")
		_ = response.Body.Close()
	}

	for _, path := range []string{defaultLog, accessLog} {
		content, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.NotEmpty(t, content, "%s is empty", filepath.Base(path))
		assert.NotContains(t, string(content), mailKey, "in %s", filepath.Base(path))
		assert.NotContains(t, string(content), nearMiss, "in %s", filepath.Base(path))
		assert.NotContains(t, string(content), scannerKey, "in %s", filepath.Base(path))
	}
	accessContent, err := os.ReadFile(accessLog)
	require.NoError(t, err)
	var userIDs []string
	for _, line := range bytes.Split(accessContent, []byte("\n")) {
		var entry struct {
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(line, &entry) == nil && entry.UserID != "" {
			userIDs = append(userIDs, entry.UserID)
		}
	}
	assert.Equal(t, []string{"mailserver", "mailserver"}, userIDs,
		"user_id of the access log lines of the admitted requests")

	content, err := os.ReadFile(defaultLog)
	require.NoError(t, err)
	var loaded []logEntry
	reasons := map[string]string{}
	for _, line := range bytes.Split(content, []byte("\n")) {
		var entry logEntry
		if json.Unmarshal(line, &entry) != nil || entry.Logger != "http.handlers.api_key" {
			continue
		}
		switch entry.Message {
		case "API keys loaded":
			loaded = append(loaded, entry)
		case "request rejected":
			assert.Equal(t, "debug", entry.Level)
			reasons[entry.Reason] = entry.Client
		}
	}
	require.NotEmpty(t, loaded, "no 'API keys loaded' line from http.handlers.api_key")
	assert.Equal(t, "info", loaded[len(loaded)-1].Level)
	assert.Equal(t, []string{"mailserver"}, loaded[len(loaded)-1].Clients)
	assert.Equal(t, map[string]string{
		"invalid":   "127.0.0.1",
		"missing":   "127.0.0.1",
		"duplicate": "127.0.0.1",
	}, reasons)
	assert.Len(t, up.received(), 2, "the valid key and the lowercase spelling are admitted")
}

// TestIntegrationExample loads Caddyfile.example, with the admin address
// of these tests added and the site moved to http://localhost:9080, and
// checks the responses a client gets and the requests the upstream receives.
func TestIntegrationExample(t *testing.T) {
	up := startExample(t)
	client := newClient()

	rejected := send(t, client, http.MethodPost, "http://localhost:9080/scanner/scan",
		[]string{scannerKey}, "message body")
	admitted := send(t, client, http.MethodPost, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "message body")
	public := send(t, client, http.MethodGet, "http://localhost:9080/", nil, "")

	assert.Equal(t, http.StatusUnauthorized, rejected.status)
	assert.JSONEq(t, `{"error": "a valid X-API-KEY header is required"}`, rejected.body)
	assert.Equal(t, `APIKey header="X-API-KEY"`, rejected.header.Get("Www-Authenticate"))
	assert.Equal(t, http.StatusOK, admitted.status)
	assert.Equal(t, http.StatusOK, public.status)
	requests := up.received()
	require.Len(t, requests, 2)
	assert.Equal(t, "/scanner/scan", requests[0].Path)
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
	assert.Empty(t, requests[0].Header.Values("X-Api-Key"))
	assert.Equal(t, "/", requests[1].Path)

	for _, path := range []string{
		"/scanner", "/scanner/", "/SCANNER/scan", "/Scanner", "//scanner/scan",
		"/scanner;x/scan/", `/scanner\scan/`, "/scanner%2Fscan", "/scanner/../scanner/scan",
		"/./scanner/scan",
	} {
		response := rawExchange(t, "GET "+path+" HTTP/1.1\r\nHost: localhost:9080\r\n"+
			"Connection: close\r\n\r\n")
		_ = response.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, response.StatusCode, "path %s", path)
	}
	assert.Len(t, up.received(), 2, "upstream received a request without a key")
}

// TestIntegrationConnectionHeader sends Connection headers that name the
// client header. reverse_proxy removes the headers that Connection names,
// so without the handler's hardening the upstream would not receive
// X-Api-Client.
func TestIntegrationConnectionHeader(t *testing.T) {
	up := startProxySite(t)
	// Outside /scanner/*, without api_key, reverse_proxy removes what
	// Connection names.
	control := rawExchange(t, "GET /public HTTP/1.1\r\nHost: localhost:9080\r\n"+
		"X-Api-Client: admin\r\nConnection: keep-alive, X-Api-Client\r\n\r\n")
	_ = control.Body.Close()
	require.Equal(t, http.StatusOK, control.StatusCode)
	require.Len(t, up.received(), 1)
	require.Empty(t, up.received()[0].Header.Values("X-Api-Client"),
		"reverse_proxy kept a header that Connection names")
	tests := []struct {
		name       string
		connection string // Connection header lines
	}{
		{"after keep-alive", "Connection: keep-alive, X-Api-Client\r\n"},
		{"lowercase", "Connection: keep-alive, x-api-client\r\n"},
		{"alone", "Connection: X-Api-Client\r\n"},
		{"second line", "Connection: keep-alive\r\nConnection: X-API-CLIENT\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.received())

			response := rawExchange(t, "GET /scanner/scan HTTP/1.1\r\nHost: localhost:9080\r\n"+
				"X-Api-Key: "+mailKey+"\r\nX-Api-Client: admin\r\n"+tt.connection+"\r\n")
			_ = response.Body.Close()

			assert.Equal(t, http.StatusOK, response.StatusCode)
			requests := up.received()[before:]
			require.Len(t, requests, 1)
			assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
			assert.Empty(t, requests[0].Header.Values("X-Api-Key"))
		})
	}
}

// chunkedRequest is a POST of the body "payload" to path with chunked
// encoding, the header lines headers, and the trailer fields X-Api-Client,
// X-Api-Key and X-Checksum after the body.
func chunkedRequest(path, headers string) string {
	return "POST " + path + " HTTP/1.1\r\n" +
		"Host: localhost:9080\r\n" +
		"Transfer-Encoding: chunked\r\n" +
		"Connection: close\r\n" +
		headers +
		"\r\n" +
		"7\r\npayload\r\n" +
		"0\r\n" +
		"X-Api-Client: admin\r\n" +
		"X-Api-Key: " + scannerKey + "\r\n" +
		"X-Checksum: abc123\r\n" +
		"\r\n"
}

// TestIntegrationTrailers sends request trailers named like the key and
// client headers. They must not reach the upstream, while other trailers
// do.
func TestIntegrationTrailers(t *testing.T) {
	tests := []struct {
		name       string
		forwardKey bool
		declared   bool
		// wantKey lists the values of the X-Api-Key trailer that the
		// upstream must receive.
		wantKey []string
	}{
		{"declared", false, true, nil},
		{"declared with forward_key", true, true, []string{scannerKey}},
		{"undeclared", false, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("APIKEY_IT_MAIL", mailKey)
			up := startUpstream(t)
			options := "client_header X-Api-Client"
			if tt.forwardKey {
				options += "\n\t\tforward_key"
			}
			startCaddy(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
		%s
	}
}
`, up.address(), options)))
			headers := "X-Api-Key: " + mailKey + "\r\n"
			if tt.declared {
				headers += "Trailer: X-Api-Client, X-Api-Key, X-Checksum\r\n"
			}

			// Outside /scanner/*, without api_key, declared trailers reach
			// the upstream. Caddy v2.11.9 forwards no undeclared ones.
			control := rawExchange(t, chunkedRequest("/public/upload", headers))
			_ = control.Body.Close()
			require.Equal(t, http.StatusOK, control.StatusCode)
			require.Len(t, up.received(), 1)
			if tt.declared {
				require.Equal(t, []string{"admin"}, up.received()[0].Trailer.Values("X-Api-Client"),
					"reverse_proxy did not forward a declared trailer")
			}

			response := rawExchange(t, chunkedRequest("/scanner/upload", headers))
			_ = response.Body.Close()

			assert.Equal(t, http.StatusOK, response.StatusCode)
			requests := up.received()[1:]
			require.Len(t, requests, 1)
			assert.Equal(t, "payload", string(requests[0].Body))
			assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
			assert.Empty(t, requests[0].Trailer.Values("X-Api-Client"), "trailers %v", requests[0].Trailer)
			assert.Equal(t, tt.wantKey, requests[0].Trailer.Values("X-Api-Key"), "trailers %v", requests[0].Trailer)
			if tt.declared {
				assert.Equal(t, []string{"abc123"}, requests[0].Trailer.Values("X-Checksum"),
					"an unrelated trailer did not reach the upstream")
			}
		})
	}
}

// TestIntegrationKeysFileAllowHashed loads clients from a world-readable
// keys file and a hashed key line, with an allow list on one route, and
// checks the responses, what the upstream receives and the warnings the
// config load logs.
func TestIntegrationKeysFileAllowHashed(t *testing.T) {
	up := startUpstream(t)
	logDir := t.TempDir()
	defaultLog := filepath.Join(logDir, "default.log")
	soon := time.Now().Add(7 * 24 * time.Hour).UTC().Format(time.RFC3339)
	keysFile := writeKeysFile(t, "# clients\n"+
		"scanner "+scannerKey+"\n"+
		"backup "+digestOf(backupKey)+" "+soon+"\n", 0o644)
	config := caddyfileWith(fmt.Sprintf("\tlog default {\n\t\toutput file %s\n\t\tformat json\n"+
		"\t\tlevel DEBUG\n\t}\n", defaultLog), fmt.Sprintf(`http://localhost:9080 {
	handle /admin/* {
		api_key {
			key mailserver %[1]s
			key ops %[2]s
			keys_file %[3]s
			allow ops backup
		}
		reverse_proxy %[4]s
	}
	handle {
		api_key {
			key mailserver %[1]s
			key ops %[2]s
			keys_file %[3]s
			client_header X-Api-Client
		}
		reverse_proxy %[4]s
	}
}
`, digestOf(mailKey), "ops-K9dF3gH7jL1zX5cV8bN2mQ4w", keysFile, up.address()))
	startCaddy(t, config)
	client := newClient()

	mailScan := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", []string{mailKey}, "")
	backupScan := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan", []string{backupKey}, "")
	digestScan := send(t, client, http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{digestOf(mailKey)}, "")
	mailAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/users", []string{mailKey}, "")
	scannerAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/users",
		[]string{scannerKey}, "")
	opsAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/users",
		[]string{"ops-K9dF3gH7jL1zX5cV8bN2mQ4w"}, "")
	backupAdmin := send(t, client, http.MethodGet, "http://localhost:9080/admin/users",
		[]string{backupKey}, "")

	assert.Equal(t, http.StatusOK, mailScan.status, "hashed key line")
	assert.Equal(t, http.StatusOK, backupScan.status, "hashed key in the keys file")
	assert.Equal(t, http.StatusUnauthorized, digestScan.status, "the digest itself")
	assert.Equal(t, http.StatusForbidden, mailAdmin.status)
	assert.Empty(t, mailAdmin.header.Values("Www-Authenticate"), "403 with a challenge")
	assert.Equal(t, http.StatusForbidden, scannerAdmin.status)
	assert.Equal(t, http.StatusOK, opsAdmin.status)
	assert.Equal(t, http.StatusOK, backupAdmin.status)
	requests := up.received()
	require.Len(t, requests, 4, "upstream must see only the admitted requests")
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
	assert.Equal(t, []string{"backup"}, requests[1].Header.Values("X-Api-Client"))
	for _, request := range requests {
		assert.Empty(t, request.Header.Values("X-Api-Key"))
	}

	// The log is not filtered, so Caddy's own lines show the key header;
	// only the handler's lines are checked for keys.
	content, err := os.ReadFile(defaultLog)
	require.NoError(t, err)
	warned := map[string][]string{}
	forbidden := map[string]bool{}
	for _, line := range bytes.Split(content, []byte("\n")) {
		var entry logEntry
		if json.Unmarshal(line, &entry) != nil || entry.Logger != "http.handlers.api_key" {
			continue
		}
		for _, secret := range []string{mailKey, scannerKey, backupKey, "ops-K9dF3gH7jL1zX5cV8bN2mQ4w"} {
			assert.NotContains(t, string(line), secret)
		}
		switch {
		case entry.Level == "warn":
			warned[entry.Message] = append(warned[entry.Message], entry.ClientName+entry.KeysFile)
		case entry.Message == "request rejected" && entry.Reason == "forbidden":
			forbidden[entry.ClientName] = true
		}
	}
	var readable, expiring, written []string
	for message, subjects := range warned {
		switch {
		case strings.HasPrefix(message, "keys file is readable by every user"):
			readable = append(readable, subjects...)
		case strings.HasPrefix(message, "API key expires soon"):
			expiring = append(expiring, subjects...)
		case strings.HasPrefix(message, "API key is written in the config"):
			written = append(written, subjects...)
		}
	}
	// Each of the two handlers logs its own warnings.
	assert.Equal(t, []string{keysFile, keysFile}, readable)
	assert.Equal(t, []string{"backup", "backup"}, expiring)
	assert.Equal(t, []string{"ops", "ops"}, written, "only the plaintext key line")
	assert.Equal(t, map[string]bool{"mailserver": true, "scanner": true}, forbidden)
}

// TestIntegrationLoadErrorKeysFile loads a config whose keys file has an
// expired key. The load fails with an error that names the client and the
// line but no key, and the previous config stays active.
func TestIntegrationLoadErrorKeysFile(t *testing.T) {
	up := startProxySite(t)
	keysFile := writeKeysFile(t, "scanner "+scannerKey+"\nbackup "+backupKey+" 2020-01-01T00:00:00Z\n", 0o600)

	status, body := loadConfig(t, caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key {
		keys_file %s
	}
}
`, up.address(), keysFile)))

	assert.NotEqual(t, http.StatusOK, status)
	assert.Contains(t, body, `client \"backup\"`)
	assert.Contains(t, body, keysFile+", line 2")
	assert.Contains(t, body, "expired at 2020-01-01T00:00:00Z")
	assert.NotContains(t, body, backupKey)
	assert.NotContains(t, body, scannerKey)
	got := send(t, newClient(), http.MethodGet, "http://localhost:9080/scanner/scan",
		[]string{mailKey}, "")
	assert.Equal(t, http.StatusOK, got.status, "the previous config must stay active")
}

// startExample starts an upstream and loads Caddyfile.example in front of
// it, with the admin address of these tests added and the site moved to
// http://localhost:9080.
func startExample(t *testing.T) *upstream {
	t.Helper()
	up := startUpstream(t)
	t.Setenv("MAILSERVER_API_KEY", mailKey)
	t.Setenv("GATEWAY_ADDRESS", "http://localhost:9080")
	t.Setenv("SCANNER_UPSTREAM", up.address())
	example, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)
	const globalsStart = "{\n\temail ops@example.com\n"
	require.Contains(t, string(example), globalsStart)
	config := strings.Replace(string(example), globalsStart,
		"{\n\tadmin localhost:2999\n\tpersist_config off\n\tskip_install_trust\n\temail ops@example.com\n", 1)
	startCaddy(t, config)
	return up
}

// TestIntegrationExampleClientHeader checks that with Caddyfile.example
// the upstream receives X-Api-Client only as set by api_key: a value the
// client sends is replaced under /scanner and removed everywhere else.
func TestIntegrationExampleClientHeader(t *testing.T) {
	up := startExample(t)
	tests := []struct {
		path string
		key  bool
		want []string // X-Api-Client at the upstream
	}{
		{"/scanner/scan", true, []string{"mailserver"}},
		{"/Scanner/scan", true, []string{"mailserver"}},
		{"/", false, nil},
		{"/public/page", false, nil},
	}
	for _, tt := range tests {
		keyLine := ""
		if tt.key {
			keyLine = "X-Api-Key: " + mailKey + "\r\n"
		}

		response := rawExchange(t, "GET "+tt.path+" HTTP/1.1\r\nHost: localhost:9080\r\n"+keyLine+
			"X-Api-Client: admin\r\nConnection: close\r\n\r\n")
		_ = response.Body.Close()

		assert.Equal(t, http.StatusOK, response.StatusCode, "path %s", tt.path)
	}

	requests := up.received()
	require.Len(t, requests, len(tests))
	for i, tt := range tests {
		assert.Equal(t, tt.want, requests[i].Header.Values("X-Api-Client"), "path %s", tt.path)
	}
}

// TestIntegrationTrailersH2C sends request trailers named like the key and
// client headers over HTTP/2, whose server fills in trailers differently
// from HTTP/1.1's.
func TestIntegrationTrailersH2C(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("\tservers :9080 {\n\t\tprotocols h1 h2c\n\t}\n",
		fmt.Sprintf(proxySite, up.address())))
	transport := &http.Transport{
		DialContext: localDialer(),
		Protocols:   new(http.Protocols),
	}
	transport.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(transport.CloseIdleConnections)
	client := newClientWith(transport)
	// sendWithTrailers posts "payload" to path with the three trailers.
	sendWithTrailers := func(path string) *http.Response {
		request, err := http.NewRequest(http.MethodPost, "http://localhost:9080"+path,
			io.NopCloser(strings.NewReader("payload")))
		require.NoError(t, err)
		request.ContentLength = -1
		request.Header.Set("X-Api-Key", mailKey)
		request.Trailer = http.Header{
			"X-Api-Client": {"admin"},
			"X-Api-Key":    {scannerKey},
			"X-Checksum":   {"abc123"},
		}
		response, err := client.Do(request)
		require.NoError(t, err)
		_ = response.Body.Close()
		return response
	}

	// Outside /scanner/*, without api_key, the trailers reach the upstream.
	control := sendWithTrailers("/public/upload")
	require.Equal(t, http.StatusOK, control.StatusCode)
	require.Equal(t, 2, control.ProtoMajor)
	require.Len(t, up.received(), 1)
	require.Equal(t, []string{"admin"}, up.received()[0].Trailer.Values("X-Api-Client"),
		"reverse_proxy did not forward a trailer")

	response := sendWithTrailers("/scanner/upload")

	assert.Equal(t, http.StatusOK, response.StatusCode)
	requests := up.received()[1:]
	require.Len(t, requests, 1)
	assert.Equal(t, "payload", string(requests[0].Body))
	assert.Equal(t, []string{"mailserver"}, requests[0].Header.Values("X-Api-Client"))
	assert.Empty(t, requests[0].Trailer.Values("X-Api-Client"), "trailers %v", requests[0].Trailer)
	assert.Empty(t, requests[0].Trailer.Values("X-Api-Key"), "trailers %v", requests[0].Trailer)
	assert.Equal(t, []string{"abc123"}, requests[0].Trailer.Values("X-Checksum"))
}
