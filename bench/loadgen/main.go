// Command loadgen drives the loopback load tests of scripts/bench.sh: it
// serves the upstream, sends the load through a running Caddy, and prints
// the results as Markdown tables for BENCHMARKS.md. It sends requests only
// to the address given with -addr, which must be a loopback address.
//
// Usage:
//
//	loadgen ports <count>
//	loadgen upstream -listen 127.0.0.1:<port>
//	loadgen compare -addr 127.0.0.1:<port> -key <key> -password <password> [flags]
//	loadgen flood -addr 127.0.0.1:<port> -key <key> [flags]
//	loadgen timing -addr 127.0.0.1:<port> -key <key> [flags]
//
// The paths each command requests are those of the Caddyfile that
// scripts/bench.sh writes: /none/, /api_key/, /api_key_open/ (with
// max_failures off), /header_matcher/ and /basic_auth/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen ports|upstream|compare|flood|timing [flags]")
		os.Exit(2)
	}
	var err error
	switch command, args := os.Args[1], os.Args[2:]; command {
	case "ports":
		err = printFreePorts(args)
	case "upstream":
		err = runUpstream(args)
	case "compare":
		err = runCompare(args)
	case "flood":
		err = runFlood(args)
	case "timing":
		err = runTiming(args)
	default:
		err = fmt.Errorf("unknown command %q; expected ports, upstream, compare, flood or timing",
			command)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// printFreePorts prints the given number of TCP ports that are free on
// 127.0.0.1, one a line. The ports are closed again before the caller
// uses them, so another process could take one in between.
func printFreePorts(args []string) error {
	if len(args) != 1 {
		return errors.New("expected one argument, the number of ports")
	}
	count, err := strconv.Atoi(args[0])
	if err != nil || count < 1 || count > 16 {
		return fmt.Errorf("count %q is not a number from 1 to 16", args[0])
	}
	listeners := make([]net.Listener, 0, count)
	defer func() {
		for _, listener := range listeners {
			listener.Close()
		}
	}()
	for range count {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		listeners = append(listeners, listener)
		fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// parseFlags parses args into set and checks that addr is a loopback
// host:port, so that no command can send load elsewhere.
func parseFlags(set *flag.FlagSet, args []string, addr *string) error {
	if err := set.Parse(args); err != nil {
		return err
	}
	if set.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", set.Args())
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", *addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q is not a loopback IP address and port", *addr)
	}
	return nil
}
