// Package stats implements the few statistics that the benchmarks of the
// api_key handler report: percentiles, the Mann-Whitney U test, the
// two-sample Kolmogorov-Smirnov test and Welch's t-test on cropped samples,
// as used by dudect-style timing tests.
//
// The p-values use large-sample approximations (normal for U and t, the
// asymptotic Kolmogorov distribution for D), which are accurate for the
// thousands of samples the benchmarks take, not for small samples.
package stats

import (
	"math"
	"slices"
)

// Percentile returns the p-th percentile (0 <= p <= 100) of sorted, by
// the nearest-rank method, or NaN for an empty slice.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank-1, 0), len(sorted)-1)]
}

// Median returns the median of values, which need not be sorted.
func Median(values []float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return Percentile(sorted, 50)
}

// MannWhitneyResult is the outcome of a Mann-Whitney U test.
type MannWhitneyResult struct {
	// U is the statistic of the first sample.
	U float64

	// Effect is U divided by the number of pairs: the probability that a
	// value of the first sample exceeds one of the second, counting ties
	// as one half. It is 0.5 when neither sample tends to be larger.
	Effect float64

	// Z is the normal approximation of U, with tie and continuity
	// corrections.
	Z float64

	// P is the two-sided p-value.
	P float64
}

// MannWhitney tests whether values of x tend to be larger or smaller than
// values of y.
func MannWhitney(x, y []float64) MannWhitneyResult {
	n1, n2 := float64(len(x)), float64(len(y))
	if len(x) == 0 || len(y) == 0 {
		return MannWhitneyResult{U: math.NaN(), Effect: math.NaN(), Z: math.NaN(), P: math.NaN()}
	}

	type observation struct {
		value float64
		first bool
	}
	all := make([]observation, 0, len(x)+len(y))
	for _, v := range x {
		all = append(all, observation{v, true})
	}
	for _, v := range y {
		all = append(all, observation{v, false})
	}
	slices.SortFunc(all, func(a, b observation) int {
		switch {
		case a.value < b.value:
			return -1
		case a.value > b.value:
			return 1
		}
		return 0
	})

	// Tied values share the mean of their ranks, and tieSum collects the
	// sum of t^3 - t over groups of t ties for the variance correction.
	var rankSumX, tieSum float64
	for start := 0; start < len(all); {
		end := start + 1
		for end < len(all) && all[end].value == all[start].value {
			end++
		}
		meanRank := float64(start+end+1) / 2
		for _, o := range all[start:end] {
			if o.first {
				rankSumX += meanRank
			}
		}
		ties := float64(end - start)
		tieSum += ties*ties*ties - ties
		start = end
	}

	n := n1 + n2
	u := rankSumX - n1*(n1+1)/2
	mean := n1 * n2 / 2
	variance := n1 * n2 / 12 * ((n + 1) - tieSum/(n*(n-1)))
	result := MannWhitneyResult{U: u, Effect: u / (n1 * n2)}
	if variance <= 0 {
		result.Z, result.P = 0, 1
		return result
	}
	difference := u - mean
	switch {
	case difference > 0.5:
		difference -= 0.5
	case difference < -0.5:
		difference += 0.5
	default:
		difference = 0
	}
	result.Z = difference / math.Sqrt(variance)
	result.P = math.Erfc(math.Abs(result.Z) / math.Sqrt2)
	return result
}

// KolmogorovSmirnovResult is the outcome of a two-sample
// Kolmogorov-Smirnov test.
type KolmogorovSmirnovResult struct {
	// D is the largest distance between the two empirical distribution
	// functions.
	D float64

	// P is the asymptotic p-value.
	P float64
}

// KolmogorovSmirnov tests whether x and y come from the same
// distribution.
func KolmogorovSmirnov(x, y []float64) KolmogorovSmirnovResult {
	if len(x) == 0 || len(y) == 0 {
		return KolmogorovSmirnovResult{D: math.NaN(), P: math.NaN()}
	}
	sortedX, sortedY := slices.Clone(x), slices.Clone(y)
	slices.Sort(sortedX)
	slices.Sort(sortedY)

	n1, n2 := float64(len(x)), float64(len(y))
	var d float64
	for i, j := 0, 0; i < len(sortedX) && j < len(sortedY); {
		// Step past every copy of the smaller value in both samples, so
		// that ties move both distribution functions at once.
		value := min(sortedX[i], sortedY[j])
		for i < len(sortedX) && sortedX[i] == value {
			i++
		}
		for j < len(sortedY) && sortedY[j] == value {
			j++
		}
		d = max(d, math.Abs(float64(i)/n1-float64(j)/n2))
	}

	effective := math.Sqrt(n1 * n2 / (n1 + n2))
	lambda := (effective + 0.12 + 0.11/effective) * d
	return KolmogorovSmirnovResult{D: d, P: kolmogorovTail(lambda)}
}

// kolmogorovTail returns P(K > lambda) for the Kolmogorov distribution:
// 2 * sum over j >= 1 of (-1)^(j-1) * exp(-2 j^2 lambda^2).
func kolmogorovTail(lambda float64) float64 {
	if lambda < 0.2 {
		// The series converges slowly here, and the tail is 1 to within
		// 1e-9 anyway.
		return 1
	}
	var sum float64
	sign := 1.0
	for j := 1; j <= 100; j++ {
		term := sign * math.Exp(-2*float64(j*j)*lambda*lambda)
		sum += term
		if math.Abs(term) < 1e-12 {
			break
		}
		sign = -sign
	}
	return min(max(2*sum, 0), 1)
}

// WelchResult is the outcome of Welch's t-test.
type WelchResult struct {
	// T is the statistic. dudect reports a leak when |T| exceeds 4.5.
	T float64

	// P is the two-sided p-value, from the normal approximation.
	P float64

	// SamplesKept is the number of samples of x and y together that remained
	// after cropping.
	SamplesKept int
}

// WelchCropped runs Welch's t-test on the values of x and y that are at
// most the given percentile of both samples together. Cropping removes the
// long tail of a timing distribution (interrupts, preemption, garbage
// collection), which would otherwise swamp small differences.
func WelchCropped(x, y []float64, percentile float64) WelchResult {
	together := append(slices.Clone(x), y...)
	slices.Sort(together)
	limit := Percentile(together, percentile)

	meanX, varianceX, countX := moments(x, limit)
	meanY, varianceY, countY := moments(y, limit)
	result := WelchResult{SamplesKept: countX + countY}
	if countX < 2 || countY < 2 {
		result.T, result.P = math.NaN(), math.NaN()
		return result
	}
	standardError := math.Sqrt(varianceX/float64(countX) + varianceY/float64(countY))
	if standardError == 0 {
		result.T, result.P = 0, 1
		return result
	}
	result.T = (meanX - meanY) / standardError
	result.P = math.Erfc(math.Abs(result.T) / math.Sqrt2)
	return result
}

// moments returns the mean, the sample variance and the number of the
// values that are at most limit.
func moments(values []float64, limit float64) (mean, variance float64, count int) {
	// Welford's method keeps the variance accurate for large counts.
	var sumSquares float64
	for _, v := range values {
		if v > limit {
			continue
		}
		count++
		delta := v - mean
		mean += delta / float64(count)
		sumSquares += delta * (v - mean)
	}
	if count > 1 {
		variance = sumSquares / float64(count-1)
	}
	return mean, variance, count
}
