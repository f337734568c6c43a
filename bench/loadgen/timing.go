package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/caddy-apikey/apikey/bench/stats"
)

// runTiming sends requests with a near-miss key (the valid key with its
// last character changed), a far-miss key and a second far-miss key, in
// random order over one keep-alive connection, and tests whether the
// near-miss and far-miss latencies differ. The two far-miss keys form a
// control pair, which should not differ. The route has max_failures off,
// because the default throttle would respond with 429 after 100 failures.
func runTiming(args []string) error {
	set := flag.NewFlagSet("timing", flag.ContinueOnError)
	addr := set.String("addr", "", "Caddy's loopback `host:port`")
	key := set.String("key", "", "the key that /api_key_open/ accepts")
	requests := set.Int("requests", 60000, "measured requests, split among the three keys")
	warmup := set.Int("warmup", 2000, "unmeasured requests before the measured ones")
	maxDuration := set.Duration("max-duration", time.Minute, "time after which the run stops early")
	if err := parseFlags(set, args, addr); err != nil {
		return err
	}
	if len(*key) < 2 {
		return fmt.Errorf("-key is required")
	}

	near := []byte(*key)
	near[len(near)-1] ^= 1
	keys := [3]string{string(near), farMiss(*key, "far"), farMiss(*key, "far2")}
	var raw [3][]byte
	for i, k := range keys {
		raw[i] = newRequest(*addr, "/api_key_open/scan", "X-Api-Key: "+k)
	}

	conn := newConnection(*addr, net.IPv4(127, 0, 0, 1))
	defer conn.close()
	random := rand.New(rand.NewPCG(1, 2))
	var samples [3][]float64
	deadline := time.Now().Add(*maxDuration)
	for i := 0; i < *warmup+*requests && time.Now().Before(deadline); i++ {
		class := random.IntN(3)
		sent := time.Now()
		status, err := conn.roundTrip(raw[class])
		elapsed := time.Since(sent)
		if err != nil {
			return fmt.Errorf("request %d: %v", i, err)
		}
		if status != http.StatusUnauthorized {
			return fmt.Errorf("request %d: status %d, want 401", i, status)
		}
		if i >= *warmup {
			samples[class] = append(samples[class], float64(elapsed))
		}
	}

	fmt.Printf("One keep-alive connection, %d requests in random order "+
		"(near %d, far %d, far2 %d), after %d unmeasured.\n\n",
		len(samples[0])+len(samples[1])+len(samples[2]), len(samples[0]), len(samples[1]),
		len(samples[2]), *warmup)
	printTimingTable([][2]string{{"near", "far"}, {"far", "far2"}}, map[string][]float64{
		"near": samples[0], "far": samples[1], "far2": samples[2],
	})
	return nil
}

// printTimingTable prints, for each pair of samples, the medians and the
// results of the three tests as a Markdown table.
func printTimingTable(pairs [][2]string, samples map[string][]float64) {
	fmt.Println("| pair | median a µs | median b µs | Mann-Whitney p | P(a > b) | " +
		"Kolmogorov-Smirnov D | KS p | Welch t (fastest 90%) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, pair := range pairs {
		a, b := samples[pair[0]], samples[pair[1]]
		mannWhitney := stats.MannWhitney(a, b)
		ks := stats.KolmogorovSmirnov(a, b)
		welch := stats.WelchCropped(a, b, 90)
		fmt.Printf("| %s vs %s | %.2f | %.2f | %.3g | %.4f | %.4f | %.3g | %.2f |\n",
			pair[0], pair[1], stats.Median(a)/1e3, stats.Median(b)/1e3, mannWhitney.P,
			mannWhitney.Effect, ks.D, ks.P, welch.T)
	}
	fmt.Println()
}
