package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	// keyPlaceholder is how Caddyfile.example refers to the mail server's
	// key.
	keyPlaceholder = "{env.MAILSERVER_API_KEY}"

	// startTimeout bounds the wait for a started Caddy to respond. It
	// covers the first start of the internal CA, which creates its root
	// and intermediate certificates.
	startTimeout = 30 * time.Second

	// stopTimeout bounds the wait for Caddy to exit after SIGINT before
	// the test kills it.
	stopTimeout = 10 * time.Second

	// commandTimeout bounds every caddy command that is expected to exit
	// by itself, so that a command that starts serving instead fails the
	// test rather than hanging it.
	commandTimeout = 60 * time.Second

	// requestTimeout bounds each request; no test asserts timings.
	requestTimeout = 10 * time.Second
)

// gatewayOptions selects how a test's Caddy instance is set up.
type gatewayOptions struct {
	// tls serves the site as https://localhost:<port> with a certificate
	// from Caddy's internal CA, instead of http://127.0.0.1:<port>.
	tls bool

	// debug adds the debug global option.
	debug bool

	// caddyfile replaces the contents of Caddyfile.example when set. It
	// must have a global options block.
	caddyfile string
}

// gateway is a running Caddy process that serves Caddyfile.example's site
// on loopback in front of a recording upstream.
type gateway struct {
	upstream *upstream

	// key is the mail server's key, as set in MAILSERVER_API_KEY.
	key string

	// siteAddress is the host:port to dial, always on 127.0.0.1.
	siteAddress string

	// host is the Host header and TLS server name that the site matches.
	host string

	baseURL      string
	adminAddress string
	configFile   string
	env          []string
	dirs         caddyDirs
	stdoutFile   string
	stderrFile   string

	cmd    *exec.Cmd
	exited chan struct{}
}

// caddyDirs are the directories that Caddy writes to, all inside the
// test's temporary directory.
type caddyDirs struct {
	home   string
	config string
	data   string
}

func newCaddyDirs(t *testing.T) caddyDirs {
	t.Helper()
	root := t.TempDir()
	dirs := caddyDirs{
		home:   filepath.Join(root, "home"),
		config: filepath.Join(root, "config"),
		data:   filepath.Join(root, "data"),
	}
	for _, dir := range []string{dirs.home, dirs.config, dirs.data} {
		require.NoError(t, os.Mkdir(dir, 0o700))
	}
	return dirs
}

// startGateway starts Caddy with Caddyfile.example and a valid key, waits
// until the site responds, and stops Caddy when the test ends.
func startGateway(t *testing.T, options gatewayOptions) *gateway {
	t.Helper()
	// The upstream listens first, because its port is picked like the
	// ports that freePorts frees, and could otherwise take one of them.
	up := startUpstream(t)
	ports := freePorts(t, 3)
	g := &gateway{
		upstream:     up,
		key:          randomKey(t),
		adminAddress: "127.0.0.1:" + strconv.Itoa(ports[0]),
		dirs:         newCaddyDirs(t),
	}

	// The site's port doubles as the http_port or https_port, so that
	// Caddy's automatic HTTPS logic treats it as the standard one.
	sitePort, otherPort := ports[1], ports[2]
	httpPort, httpsPort := sitePort, otherPort
	g.siteAddress = "127.0.0.1:" + strconv.Itoa(sitePort)
	g.host = g.siteAddress
	g.baseURL = "http://" + g.siteAddress
	if options.tls {
		httpPort, httpsPort = otherPort, sitePort
		g.host = "localhost:" + strconv.Itoa(sitePort)
		g.baseURL = "https://" + g.host
	}

	globalOptions := []string{
		"admin " + g.adminAddress,
		"http_port " + strconv.Itoa(httpPort),
		"https_port " + strconv.Itoa(httpsPort),
		"default_bind 127.0.0.1",
		"skip_install_trust",
	}
	if options.debug {
		globalOptions = append(globalOptions, "debug")
	}
	caddyfile := options.caddyfile
	if caddyfile == "" {
		caddyfile = readExample(t)
	}
	g.configFile = writeConfig(t, caddyfile, globalOptions)

	g.env = caddyEnv(g.dirs, map[string]string{
		"MAILSERVER_API_KEY": g.key,
		"GATEWAY_ADDRESS":    g.baseURL,
		"SCANNER_UPSTREAM":   g.upstream.address(),
	})
	g.start(t)
	return g
}

func (g *gateway) start(t *testing.T) {
	t.Helper()
	logDir := t.TempDir()
	g.stdoutFile = filepath.Join(logDir, "caddy.stdout")
	g.stderrFile = filepath.Join(logDir, "caddy.stderr")
	stdout, err := os.Create(g.stdoutFile)
	require.NoError(t, err)
	stderr, err := os.Create(g.stderrFile)
	require.NoError(t, err)

	g.cmd = exec.Command(caddyBinary, "run", "--config", g.configFile, "--adapter", "caddyfile")
	g.cmd.Env = g.env
	g.cmd.Stdout = stdout
	g.cmd.Stderr = stderr
	require.NoError(t, g.cmd.Start())

	g.exited = make(chan struct{})
	go func() {
		_ = g.cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(g.exited)
	}()
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("caddy stderr (last 8 KiB):\n%s", tail(g.stderrFile, 8<<10))
		}
	})

	g.waitReady(t)
}

// waitReady polls the site until a request for the scanner without a key
// gets 401, or fails the test when Caddy exits or startTimeout passes.
func (g *gateway) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for attempt := 0; attempt < 600 && time.Now().Before(deadline); attempt++ {
		select {
		case <-g.exited:
			t.Fatalf("caddy exited during start (%v); stderr:\n%s",
				g.cmd.ProcessState, tail(g.stderrFile, 8<<10))
		default:
		}

		client, err := g.readinessClient()
		if err == nil {
			var resp *http.Response
			resp, err = client.Get(g.baseURL + "/scanner/scan/")
			if err == nil {
				resp.Body.Close()
				client.CloseIdleConnections()
				if resp.StatusCode == http.StatusUnauthorized {
					return
				}
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("caddy did not respond on %s within %v (last error: %v); stderr:\n%s",
		g.baseURL, startTimeout, lastErr, tail(g.stderrFile, 8<<10))
}

func (g *gateway) readinessClient() (*http.Client, error) {
	if !strings.HasPrefix(g.baseURL, "https://") {
		return g.newClient(nil, nil), nil
	}
	roots, err := g.rootCAs()
	if err != nil {
		return nil, err
	}
	return g.newClient(roots, nil), nil
}

// stop sends SIGINT, waits up to stopTimeout, then kills Caddy.
func (g *gateway) stop(t *testing.T) {
	t.Helper()
	select {
	case <-g.exited:
		return
	default:
	}
	if err := g.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Logf("signalling caddy: %v", err)
	}
	select {
	case <-g.exited:
	case <-time.After(stopTimeout):
		t.Logf("caddy did not exit within %v of SIGINT; killing it", stopTimeout)
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
}

// rootCAs returns a pool with the root certificate of Caddy's internal CA
// from the instance's data directory.
func (g *gateway) rootCAs() (*x509.CertPool, error) {
	rootFile := filepath.Join(g.dirs.data, "caddy", "pki", "authorities", "local", "root.crt")
	pemData, err := os.ReadFile(rootFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("no certificate in %s", rootFile)
	}
	return roots, nil
}

// newClient returns a client that dials the gateway's loopback address
// whatever host a URL names. With roots set, it speaks TLS and trusts only
// those roots. The protocols default to HTTP/1.1 and, over TLS, HTTP/2.
func (g *gateway) newClient(roots *x509.CertPool, protocols *http.Protocols) *http.Client {
	dialer := &net.Dialer{Timeout: requestTimeout}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, g.siteAddress)
		},
		Protocols: protocols,
	}
	if roots != nil {
		serverName, _, _ := net.SplitHostPort(g.host)
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, ServerName: serverName}
	}
	return &http.Client{
		Transport: transport,
		Timeout:   requestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// client returns a client for the gateway that speaks only HTTP/1.1, or
// only HTTP/2 when http2 is set, which needs a TLS gateway.
func (g *gateway) client(t *testing.T, http2 bool) *http.Client {
	t.Helper()
	protocols := new(http.Protocols)
	var roots *x509.CertPool
	if strings.HasPrefix(g.baseURL, "https://") {
		var err error
		roots, err = g.rootCAs()
		require.NoError(t, err)
	}
	switch {
	case http2:
		require.NotNil(t, roots, "HTTP/2 needs a TLS gateway")
		protocols.SetHTTP2(true)
	default:
		protocols.SetHTTP1(true)
	}
	client := g.newClient(roots, protocols)
	t.Cleanup(client.CloseIdleConnections)
	return client
}

// response is a received response with its body read.
type response struct {
	*http.Response
	body []byte
}

// send sends one request through client and reads the whole response.
func (g *gateway) send(t *testing.T, client *http.Client, method, path string,
	header http.Header, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, g.baseURL+path, strings.NewReader(body))
	require.NoError(t, err)
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{Response: resp, body: respBody}
}

// sendRaw writes request on a new TCP connection as it is, so that neither
// the path nor the header names are cleaned or canonicalized, and reads
// one response. The gateway must serve plain HTTP.
func (g *gateway) sendRaw(t *testing.T, request string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.siteAddress, requestTimeout)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(requestTimeout)))

	_, err = io.WriteString(conn, request)
	require.NoError(t, err)

	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{Response: resp, body: body}
}

// rawRequest formats an HTTP/1.1 request for the gateway with the given
// header lines, which are written exactly as given. It adds
// "Connection: close" unless a header line sets Connection.
func (g *gateway) rawRequest(method, target string, headerLines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, g.host)
	hasConnection := false
	for _, line := range headerLines {
		b.WriteString(line + "\r\n")
		name, _, _ := strings.Cut(line, ":")
		hasConnection = hasConnection || strings.EqualFold(name, "Connection")
	}
	if !hasConnection {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// logs returns everything Caddy has written to stdout and stderr so far.
func (g *gateway) logs(t *testing.T) string {
	t.Helper()
	stdout, err := os.ReadFile(g.stdoutFile)
	require.NoError(t, err)
	stderr, err := os.ReadFile(g.stderrFile)
	require.NoError(t, err)
	return string(stdout) + string(stderr)
}

// readExample returns the contents of Caddyfile.example.
func readExample(t *testing.T) string {
	t.Helper()
	contents, err := os.ReadFile(exampleFile)
	require.NoError(t, err)
	return string(contents)
}

// writeConfig inserts globalOptions after the opening line of the
// Caddyfile's global options block and writes the result to a temporary
// file, whose path it returns.
func writeConfig(t *testing.T, caddyfile string, globalOptions []string) string {
	t.Helper()
	lines := strings.SplitAfter(caddyfile, "\n")
	opening := -1
	for i, line := range lines {
		if strings.TrimSpace(line) == "{" {
			opening = i
			break
		}
	}
	require.NotEqual(t, -1, opening, "no global options block ('{' on its own line) in the Caddyfile")

	var b strings.Builder
	for i, line := range lines {
		b.WriteString(line)
		if i == opening {
			for _, option := range globalOptions {
				b.WriteString("\t" + option + "\n")
			}
		}
	}

	path := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// caddyEnv returns the environment for a caddy command: this process's
// environment without anything that would change Caddy's config or
// directories, plus the given variables.
func caddyEnv(dirs caddyDirs, variables map[string]string) []string {
	replaced := map[string]bool{
		"HOME": true, "XDG_CONFIG_HOME": true, "XDG_DATA_HOME": true,
		"MAILSERVER_API_KEY": true, "GATEWAY_ADDRESS": true, "SCANNER_UPSTREAM": true,
	}
	var env []string
	for _, entry := range os.Environ() {
		name, _, _ := strings.Cut(entry, "=")
		if replaced[name] || strings.HasPrefix(name, "CADDY_") {
			continue
		}
		env = append(env, entry)
	}
	env = append(env,
		"HOME="+dirs.home,
		"XDG_CONFIG_HOME="+dirs.config,
		"XDG_DATA_HOME="+dirs.data,
	)
	for name, value := range variables {
		env = append(env, name+"="+value)
	}
	return env
}

// commandResult is the outcome of a caddy command that exits by itself.
type commandResult struct {
	exitCode int
	stdout   string
	stderr   string
}

// output returns stdout and stderr together.
func (r commandResult) output() string {
	return r.stdout + r.stderr
}

// runCaddy runs the Caddy binary with args and env in dir, and fails the
// test if it does not exit within commandTimeout.
func runCaddy(t *testing.T, dir string, env []string, args ...string) commandResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, caddyBinary, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "caddy %s did not exit within %v; output:\n%s%s",
		strings.Join(args, " "), commandTimeout, stdout.String(), stderr.String())

	result := commandResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		result.exitCode = exitErr.ExitCode()
	} else {
		require.NoError(t, err, "running caddy %s", strings.Join(args, " "))
	}
	return result
}

// freePorts returns count distinct TCP ports that were free on 127.0.0.1.
// Another process may take a port before Caddy binds it; the test then
// fails at start with Caddy's bind error.
func freePorts(t *testing.T, count int) []int {
	t.Helper()
	ports := make([]int, 0, count)
	for range count {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer listener.Close()
		ports = append(ports, listener.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// randomKey returns a key like the ones 'openssl rand -base64 32' prints.
func randomKey(t *testing.T) string {
	t.Helper()
	secret := make([]byte, 32)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(secret)
}

// tail returns at most the last limit bytes of a file, for failure output.
func tail(path string, limit int) string {
	contents, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	if len(contents) > limit {
		contents = contents[len(contents)-limit:]
	}
	return string(contents)
}
