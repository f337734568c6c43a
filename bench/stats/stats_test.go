package stats

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The expected values below were worked out by hand from the textbook
// formulas, and the comments show the steps.

func TestPercentile(t *testing.T) {
	sorted := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		p    float64
		want float64
	}{
		{0, 1},
		{50, 5},
		{90, 9},
		{99, 10},
		{100, 10},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Percentile(sorted, tt.p), "p%v", tt.p)
	}
	assert.True(t, math.IsNaN(Percentile(nil, 50)))
}

func TestMedianUnsorted(t *testing.T) {
	values := []float64{9, 1, 5, 3, 7}

	assert.Equal(t, 5.0, Median(values))
	assert.Equal(t, []float64{9, 1, 5, 3, 7}, values, "input reordered")
}

func TestMannWhitneySeparated(t *testing.T) {
	// Ranks of x are 1, 2, 3, so U = 6 - 3*4/2 = 0. The mean of U is 4.5
	// and its variance 9/12 * 7 = 5.25. With the continuity correction,
	// z = -4 / sqrt(5.25).
	result := MannWhitney([]float64{1, 2, 3}, []float64{4, 5, 6})

	assert.Equal(t, 0.0, result.U)
	assert.Equal(t, 0.0, result.Effect)
	assert.InDelta(t, -4/math.Sqrt(5.25), result.Z, 1e-12)
	assert.InDelta(t, 0.08086, result.P, 1e-5)
}

func TestMannWhitneyTies(t *testing.T) {
	// The three 2s share rank 3, so the rank sum of x is 1 + 3 + 3 = 7 and
	// U = 1. The tie correction is (3^3 - 3) / (6 * 5) = 0.8, the variance
	// 9/12 * (7 - 0.8) = 4.65, and z = (1 - 4.5 + 0.5) / sqrt(4.65).
	result := MannWhitney([]float64{1, 2, 2}, []float64{2, 3, 4})

	assert.Equal(t, 1.0, result.U)
	assert.InDelta(t, 1.0/9, result.Effect, 1e-12)
	assert.InDelta(t, -3/math.Sqrt(4.65), result.Z, 1e-12)
	assert.InDelta(t, 0.1642, result.P, 1e-4)
}

func TestMannWhitneyIdentical(t *testing.T) {
	result := MannWhitney([]float64{1, 2, 3, 4}, []float64{1, 2, 3, 4})

	assert.Equal(t, 0.5, result.Effect)
	assert.Equal(t, 1.0, result.P)
}

func TestKolmogorovSmirnovDistance(t *testing.T) {
	tests := []struct {
		name string
		x, y []float64
		want float64
	}{
		{"separated", []float64{1, 2, 3}, []float64{4, 5, 6}, 1},
		// At 2 the distribution functions are 0.5 and 0.
		{"overlapping", []float64{1, 2, 3, 4}, []float64{3, 4, 5, 6}, 0.5},
		{"identical", []float64{1, 2, 2, 3}, []float64{3, 2, 1, 2}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, KolmogorovSmirnov(tt.x, tt.y).D)
		})
	}
}

func TestKolmogorovTail(t *testing.T) {
	// Tabulated values of the Kolmogorov distribution: 1.36 and 1.63 are
	// its 5% and 1% critical values.
	assert.InDelta(t, 0.0494, kolmogorovTail(1.36), 1e-4)
	assert.InDelta(t, 0.0098, kolmogorovTail(1.63), 1e-4)
	assert.InDelta(t, 0.9639, kolmogorovTail(0.5), 1e-4)
	assert.Equal(t, 1.0, kolmogorovTail(0.1))
}

func TestWelchCroppedAll(t *testing.T) {
	// x has mean 3 and variance 2.5, y mean 7 and variance 14, so
	// t = -4 / sqrt(2.5/5 + 14/6).
	x := []float64{1, 2, 3, 4, 5}
	y := []float64{2, 4, 6, 8, 10, 12}

	result := WelchCropped(x, y, 100)

	assert.InDelta(t, -4/math.Sqrt(2.5/5+14.0/6), result.T, 1e-12)
	assert.Equal(t, 11, result.SamplesKept)
}

func TestWelchCroppedMedian(t *testing.T) {
	// The median of all 11 values is 4, which keeps 1, 2, 3, 4 of x and
	// 2, 4 of y.
	x := []float64{1, 2, 3, 4, 5}
	y := []float64{2, 4, 6, 8, 10, 12}

	result := WelchCropped(x, y, 50)

	assert.Equal(t, 6, result.SamplesKept)
}
