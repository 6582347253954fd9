package page

import (
	"net/http"
	"testing"
)

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "gzip": true, "br, gzip;q=0.5": true, "deflate": false, "gzip;q=0": false,
		"gzip; q=0.000": false, "*": true, "GZIP": true, "identity, gzip;q=0.001": true,
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Accept-Encoding", v)
		}
		if got := acceptsGzip(h); got != want {
			t.Errorf("Accept-Encoding %q: got %v, want %v", v, got, want)
		}
	}
}
