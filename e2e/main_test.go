// Package e2e runs a real Caddy binary built with this module against the
// configuration in Caddyfile.example and checks what a client and the
// upstream see.
//
// TestMain builds the binary once with xcaddy from this checkout, or uses
// the binary named by $CADDY_BINARY. Every Caddy instance listens on free
// loopback ports with its own admin address, so these tests can run next to
// the root package's tests, which use fixed ports.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	caddyVersion  = "v2.11.9"
	xcaddyVersion = "v0.4.5"
	modulePath    = "github.com/caddy-apikey/apikey"

	// buildTimeout bounds the xcaddy build, which is estimated at about
	// 2 minutes with an empty module cache on 2 cores.
	buildTimeout = 8 * time.Minute
)

// Paths set up by TestMain and shared by every test.
var (
	caddyBinary string
	repoRoot    string
	exampleFile string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	repoRoot, err = filepath.Abs("..")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: finding the repository root: %v\n", err)
		return 1
	}
	exampleFile = filepath.Join(repoRoot, "Caddyfile.example")

	caddyBinary = os.Getenv("CADDY_BINARY")
	if caddyBinary != "" {
		// go test runs this binary in the e2e directory, so a relative
		// path is resolved from there.
		if caddyBinary, err = filepath.Abs(caddyBinary); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: CADDY_BINARY: %v\n", err)
			return 1
		}
		if _, err := os.Stat(caddyBinary); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: CADDY_BINARY: %v; give an absolute path, "+
				"or a path relative to the e2e directory\n", err)
			return 1
		}
		return m.Run()
	}

	buildDir, err := os.MkdirTemp("", "apikey-e2e-build-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: creating the build directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(buildDir)

	caddyBinary = filepath.Join(buildDir, "caddy")
	if err := buildCaddy(buildDir, caddyBinary); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// buildCaddy builds Caddy with this checkout of the module into output.
func buildCaddy(workDir, output string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	xcaddy, err := findXcaddy(ctx, workDir)
	if err != nil {
		return err
	}

	// Go's module proxy may reject a module path that was never
	// published with an error other than 404, and the build then fails
	// before the replace directive applies. With "|off" appended, such an
	// error falls through to "off", after which go uses the local
	// replacement (observed with Go 1.26.8 and xcaddy v0.4.5).
	goproxy, err := goEnv(ctx, "GOPROXY")
	if err != nil {
		return err
	}
	firstProxy, _, _ := strings.Cut(goproxy, ",")

	cmd := exec.CommandContext(ctx, xcaddy, "build", caddyVersion,
		"--output", output,
		"--with", modulePath+"="+repoRoot)
	cmd.Dir = workDir
	cmd.Env = append(os.Environ(), "GOPROXY="+firstProxy+"|off")
	combined, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building Caddy %s with xcaddy failed (%v); output:\n%s",
			caddyVersion, err, combined)
	}
	return nil
}

// findXcaddy returns the path of xcaddy from PATH or GOPATH/bin, and
// installs the pinned version into dir when neither has it.
func findXcaddy(ctx context.Context, dir string) (string, error) {
	if path, err := exec.LookPath("xcaddy"); err == nil {
		return path, nil
	}

	gopath, err := goEnv(ctx, "GOPATH")
	if err != nil {
		return "", err
	}
	for _, entry := range filepath.SplitList(gopath) {
		path := filepath.Join(entry, "bin", "xcaddy")
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
	}

	cmd := exec.CommandContext(ctx, "go", "install",
		"github.com/caddyserver/xcaddy/cmd/xcaddy@"+xcaddyVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if combined, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("xcaddy is not on PATH and installing %s failed (%v); "+
			"install it with 'go install github.com/caddyserver/xcaddy/cmd/xcaddy@%s' "+
			"or set CADDY_BINARY; output:\n%s", xcaddyVersion, err, xcaddyVersion, combined)
	}
	return filepath.Join(dir, "xcaddy"), nil
}

// goEnv returns the value of one variable from 'go env'.
func goEnv(ctx context.Context, name string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s failed: %v", name, err)
	}
	return string(bytes.TrimSpace(out)), nil
}
