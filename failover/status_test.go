package failover

import "testing"

func TestRoundLag(t *testing.T) {
	for _, c := range []struct{ secs, maxLag, want int64 }{
		{0, 30, 0}, {1, 30, 0}, {4, 30, 0}, {5, 30, 5}, {29, 30, 10}, {30, 30, 30}, {31, 30, 30},
		{6, 2, 5}, {3, 2, 2}, {7200, 30, 3600}, {100000, 30, 24 * 3600},
	} {
		if got := roundLag(c.secs, c.maxLag); got != c.want {
			t.Errorf("roundLag(%d, max-lag %d) = %d, want %d", c.secs, c.maxLag, got, c.want)
		}
	}
}
