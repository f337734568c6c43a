package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/caddy-apikey/apikey/bench/stats"
)

// variant is one configuration that compare measures.
type variant struct {
	name        string
	description string
	raw         []byte
	wantStatus  int
}

// compareVariants returns the measured configurations. The first is the
// baseline of the ratios.
func compareVariants(addr, key, password string) []variant {
	wrongKey := farMiss(key, "wrong")
	authorization := "Authorization: Basic " +
		base64.StdEncoding.EncodeToString([]byte("bench:"+password))
	return []variant{
		{"no_auth", "reverse_proxy only", newRequest(addr, "/none/scan"), http.StatusOK},
		{"api_key", "api_key, valid key, default throttle",
			newRequest(addr, "/api_key/scan", "X-Api-Key: "+key), http.StatusOK},
		{"api_key_reject", "api_key, wrong key, max_failures off",
			newRequest(addr, "/api_key_open/scan", "X-Api-Key: "+wrongKey), http.StatusUnauthorized},
		{"header_matcher", "not header X-API-KEY {env...}, valid key",
			newRequest(addr, "/header_matcher/scan", "X-Api-Key: "+key), http.StatusOK},
		{"basic_auth", "basic_auth, bcrypt, valid password",
			newRequest(addr, "/basic_auth/scan", authorization), http.StatusOK},
	}
}

// variantRound is the figures of one variant in one round, from its two
// segments together.
type variantRound struct {
	RequestsPerSecond float64 `json:"requests_per_second"`
	P50, P90, P99     float64 `json:"-"`
	Statuses          string  `json:"statuses"`
	unexpected        float64
}

// runCompare measures every variant in rounds. Each round runs the
// variants in order and then in reverse (A B C C B A), which cancels a
// linear drift of the machine's speed within the round, and each ratio is
// formed within one round. The tables report the median of the rounds'
// ratios and their range.
func runCompare(args []string) error {
	set := flag.NewFlagSet("compare", flag.ContinueOnError)
	addr := set.String("addr", "", "Caddy's loopback `host:port`")
	key := set.String("key", "", "the key that /api_key/ and /header_matcher/ accept")
	password := set.String("password", "", "the password of the basic_auth user 'bench'")
	rounds := set.Int("rounds", 5, "number of rounds")
	duration := set.Duration("duration", time.Second, "measured time of each segment")
	warmup := set.Duration("warmup", 200*time.Millisecond, "unmeasured time before each segment")
	connections := set.Int("connections", 8, "concurrent connections")
	jsonPath := set.String("json", "", "`file` to write every round's figures to")
	if err := parseFlags(set, args, addr); err != nil {
		return err
	}
	if *key == "" || *password == "" {
		return fmt.Errorf("-key and -password are required")
	}

	variants := compareVariants(*addr, *key, *password)
	if err := primeVariants(*addr, variants); err != nil {
		return err
	}
	order := append(slices.Clone(variants), variants...)
	slices.Reverse(order[len(variants):])
	byRound := make([][]variantRound, *rounds)

	for round := range byRound {
		totals := make(map[string]*result)
		for _, v := range order {
			r := runClosedLoop(*addr, net.IPv4(127, 0, 0, 1), v.raw, *connections, *warmup, *duration)
			if totals[v.name] == nil {
				total := newResult(0)
				totals[v.name] = &total
			}
			totals[v.name].add(r)
		}
		for _, v := range variants {
			total := totals[v.name]
			byRound[round] = append(byRound[round], variantRound{
				RequestsPerSecond: total.requestsPerSecond(),
				P50:               total.percentile(50),
				P90:               total.percentile(90),
				P99:               total.percentile(99),
				Statuses:          total.statusSummary(),
				unexpected:        1 - total.share(v.wantStatus),
			})
		}
		fmt.Fprintf(os.Stderr, "round %d of %d done\n", round+1, *rounds)
	}

	printCompare(variants, byRound, *connections, *duration)
	if *jsonPath != "" {
		return writeRoundsJSON(*jsonPath, variants, byRound)
	}
	return nil
}

// primeVariants sends each variant's request once and checks its status.
// This also fills basic_auth's hash cache, so that its one bcrypt
// comparison at cost 14, about a second on the machine of BENCHMARKS.md,
// does not fall into the first segment.
func primeVariants(addr string, variants []variant) error {
	conn := newConnection(addr, net.IPv4(127, 0, 0, 1))
	defer conn.close()
	for _, v := range variants {
		status, err := conn.roundTrip(v.raw)
		if err != nil {
			return fmt.Errorf("priming %s: %v", v.name, err)
		}
		if status != v.wantStatus {
			return fmt.Errorf("priming %s: status %d, want %d", v.name, status, v.wantStatus)
		}
	}
	return nil
}

// printCompare prints the raw figures of each round and the ratios to the
// baseline as Markdown tables.
func printCompare(variants []variant, byRound [][]variantRound, connections int,
	duration time.Duration,
) {
	fmt.Printf("Closed loop, %d connections, 2 x %v per variant and round, %d rounds.\n\n",
		connections, duration, len(byRound))

	fmt.Println("| variant | round | req/s | p50 µs | p90 µs | p99 µs | statuses |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for i, v := range variants {
		for round, figures := range byRound {
			f := figures[i]
			fmt.Printf("| %s | %d | %.0f | %.0f | %.0f | %.0f | %s |\n",
				v.name, round+1, f.RequestsPerSecond, f.P50, f.P90, f.P99, f.Statuses)
		}
	}
	fmt.Println()

	fmt.Printf("Ratios to %s within each round: median [min, max] over %d rounds.\n\n",
		variants[0].name, len(byRound))
	fmt.Println("| variant | what | req/s | req/s ratio | p50 ratio | p99 ratio | unexpected status |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for i, v := range variants {
		var throughput, throughputRatio, p50Ratio, p99Ratio, unexpected []float64
		for _, figures := range byRound {
			base, f := figures[0], figures[i]
			throughput = append(throughput, f.RequestsPerSecond)
			throughputRatio = append(throughputRatio, f.RequestsPerSecond/base.RequestsPerSecond)
			p50Ratio = append(p50Ratio, f.P50/base.P50)
			p99Ratio = append(p99Ratio, f.P99/base.P99)
			unexpected = append(unexpected, f.unexpected)
		}
		fmt.Printf("| %s | %s | %.0f | %s | %s | %s | %.2f%% |\n", v.name, v.description,
			stats.Median(throughput), spread(throughputRatio), spread(p50Ratio),
			spread(p99Ratio), 100*slices.Max(unexpected))
	}
	fmt.Println()
}

// spread formats the median and range of values, such as
// "0.95 [0.93, 0.98]".
func spread(values []float64) string {
	return fmt.Sprintf("%.3f [%.3f, %.3f]", stats.Median(values), slices.Min(values),
		slices.Max(values))
}

func writeRoundsJSON(path string, variants []variant, byRound [][]variantRound) error {
	type roundFigures struct {
		variantRound
		P50Microseconds float64 `json:"p50_us"`
		P90Microseconds float64 `json:"p90_us"`
		P99Microseconds float64 `json:"p99_us"`
	}
	figures := make(map[string][]roundFigures)
	for _, rounds := range byRound {
		for i, v := range variants {
			f := rounds[i]
			figures[v.name] = append(figures[v.name], roundFigures{f, f.P50, f.P90, f.P99})
		}
	}
	data, err := json.MarshalIndent(figures, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
