package main

import (
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// farMiss returns a wrong key of the same length as key that shares no
// prefix with it, derived from key and label so that runs repeat.
func farMiss(key, label string) string {
	digest := sha256.Sum256([]byte(label + key))
	miss := base64.StdEncoding.EncodeToString(digest[:])
	for len(miss) < len(key) {
		miss += miss
	}
	miss = miss[:len(key)]
	if miss[0] == key[0] {
		miss = string(key[0]^1) + miss[1:]
	}
	return miss
}

// floodConfig is one throttle setting that the flood run measures.
type floodConfig struct {
	name string
	path string
}

// runFlood measures a legitimate client that calls at a fixed rate from
// one address while a second client floods the same route with wrong keys
// from another address. It runs with the default throttle and with
// max_failures off, in the order A B B A, and each run first measures the
// legitimate client alone.
func runFlood(args []string) error {
	set := flag.NewFlagSet("flood", flag.ContinueOnError)
	addr := set.String("addr", "", "Caddy's loopback `host:port`")
	key := set.String("key", "", "the key that /api_key/ accepts")
	quiet := set.Duration("quiet", 2*time.Second, "time the legitimate client runs alone")
	flood := set.Duration("flood", 4*time.Second, "time the legitimate client runs during the flood")
	interval := set.Duration("interval", 5*time.Millisecond, "time between legitimate requests")
	connections := set.Int("connections", 8, "connections of the flooding client")
	legitSource := set.String("legit-source", "127.0.0.1", "source address of the legitimate client")
	floodSource := set.String("flood-source", "127.0.0.2", "source address of the flooding client")
	if err := parseFlags(set, args, addr); err != nil {
		return err
	}
	if *key == "" {
		return fmt.Errorf("-key is required")
	}
	legitIP, floodIP := net.ParseIP(*legitSource), net.ParseIP(*floodSource)
	if legitIP == nil || !legitIP.IsLoopback() || floodIP == nil || !floodIP.IsLoopback() {
		return fmt.Errorf("-legit-source and -flood-source must be loopback addresses")
	}

	on := floodConfig{"default throttle (100 failures a minute)", "/api_key/scan"}
	off := floodConfig{"max_failures off", "/api_key_open/scan"}
	wrongKey := farMiss(*key, "flood")

	fmt.Printf("Legitimate client: one request every %v from %s. Flooding client: %d "+
		"connections from %s with a wrong key. Each run: %v alone, then %v during the flood "+
		"(after 500ms of ramp-up).\n\n", *interval, legitIP, *connections, floodIP, *quiet, *flood)
	fmt.Println("| run | throttle | phase | legit requests | legit 200 | legit p50 µs | " +
		"legit p99 µs | legit max µs | flood req/s | flood statuses |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for run, config := range []floodConfig{on, off, off, on} {
		legit := newRequest(*addr, config.path, "X-Api-Key: "+*key)
		flooding := newRequest(*addr, config.path, "X-Api-Key: "+wrongKey)

		alone := runPaced(*addr, legitIP, legit, *interval, *quiet)
		printFloodRow(run+1, config.name, "alone", alone, nil)

		// The flood runs from before the measurement starts until after
		// it ends.
		total := 500*time.Millisecond + *flood
		var floodResult result
		var wait sync.WaitGroup
		wait.Add(1)
		go func() {
			defer wait.Done()
			floodResult = runClosedLoop(*addr, floodIP, flooding, *connections, 0, total+250*time.Millisecond)
		}()
		time.Sleep(500 * time.Millisecond)
		during := runPaced(*addr, legitIP, legit, *interval, *flood)
		wait.Wait()
		printFloodRow(run+1, config.name, "flood", during, &floodResult)
		fmt.Fprintf(os.Stderr, "flood run %d of 4 done\n", run+1)
	}
	fmt.Println()
	return nil
}

func printFloodRow(run int, throttle, phase string, legit result, flood *result) {
	floodRate, floodStatuses := "", ""
	if flood != nil {
		floodRate = fmt.Sprintf("%.0f", flood.requestsPerSecond())
		floodStatuses = flood.statusSummary()
	}
	requests := legit.errors
	for _, count := range legit.statuses {
		requests += count
	}
	fmt.Printf("| %d | %s | %s | %d | %.2f%% | %.0f | %.0f | %.0f | %s | %s |\n",
		run, throttle, phase, requests, 100*legit.share(http.StatusOK), legit.percentile(50),
		legit.percentile(99), legit.percentile(100), floodRate, floodStatuses)
}
