package seatfeed

import (
	"errors"
	"net/http"
	"time"
)

// GET /v1/events: the seat-change stream (server-sent events) of this pod's
// one feed. See docs/sale-page.md for the format.

var (
	// feedHeartbeat keeps idle proxies (the Ingress' 60 s read timeout)
	// and the page's liveness check happy while nothing changes.
	feedHeartbeat = 15 * time.Second
	// feedWriteTimeout bounds one write to a page: the server's
	// WriteTimeout bounds a whole answer, which a stream outlives, so each
	// write moves the deadline instead.
	feedWriteTimeout = 10 * time.Second
)

// Stream serves one page's stream until the page or the hub ends it. It
// returns ErrClosed or ErrFull, having written nothing, when the hub is
// closed (shutting down: the page reconnects elsewhere) or serves its cap.
func (f *Hub) Stream(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		return nil
	}
	c, err := f.subscribe()
	if err != nil {
		return err
	}
	defer f.unsubscribe(c)
	rc := http.NewResponseController(w)
	// The server's ReadTimeout also ends the background read that watches
	// for the client hanging up, which would cancel the stream: lift it.
	// The request (a GET without body) is already read.
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Vary", "Accept-Encoding")
	var z *gzStream
	if acceptsGzip(r) {
		z = &gzStream{}
		h.Set("Content-Encoding", "gzip")
		f.opened[1].Inc()
	} else {
		f.opened[0].Inc()
	}
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // proxies must pass each event on at once
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if z != nil {
		if _, err := w.Write(gzipHeader); err != nil {
			return nil
		}
	}
	// retry: how soon a page reconnects after the stream ends (another
	// pod, a fresh snapshot).
	if !writeEvent(rc, w, z, retryEvent) {
		return nil
	}
	beat := time.NewTicker(feedHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-c.gone:
			if z != nil { // the hub ends it: a complete gzip member
				_ = rc.SetWriteDeadline(time.Now().Add(feedWriteTimeout))
				_, _ = w.Write(z.trailer())
				_ = rc.Flush()
			}
			return nil
		case ev := <-c.events:
			if !writeEvent(rc, w, z, ev) {
				return nil
			}
		case <-beat.C:
			if !writeEvent(rc, w, z, heartbeatEvent) {
				return nil
			}
		}
	}
}

// The events every stream sends alike (deflated once, on first use).
var (
	retryEvent     = newEvent([]byte("retry: 1000\n\n"))
	heartbeatEvent = newEvent([]byte(": heartbeat\n\n"))
)

// writeEvent writes and flushes one event within feedWriteTimeout,
// deflated when the stream is compressed (z not nil).
func writeEvent(rc *http.ResponseController, w http.ResponseWriter, z *gzStream, ev *event) bool {
	if err := rc.SetWriteDeadline(time.Now().Add(feedWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return false
	}
	b := ev.plain
	if z != nil {
		b = z.frame(ev)
	}
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// Close ends every stream and refuses new ones. The server calls it when
// it shuts down (after the drain delay), so open streams do not hold
// Shutdown until the grace ends; the pages' EventSource reconnects, through
// the Service, to a pod that still serves.
func (f *Hub) Close() { f.close() }
