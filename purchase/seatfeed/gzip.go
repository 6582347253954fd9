package seatfeed

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// A stream is gzip-compressed (Content-Encoding: gzip) when the page
// accepts it, which every browser's EventSource does. The costly part,
// compressing, is done once per event for all pages, never per stream:
//
//   - each event is deflated on its own, by a fresh compressor, and ended
//     with a sync flush (a byte-aligned, non-final block), so its bytes
//     refer to nothing before them and can follow any other event's: a
//     stream's body is the gzip header, then the deflated events it is sent,
//     back to back;
//   - a stream keeps only the CRC-32 and length of what it sent (8 bytes),
//     for the gzip trailer it writes when the hub ends it.
//
// A snapshot of 10M seats (3.3 MB of base64) is deflated once per version
// of the seats, however many pages load it; docs/sale-page.md has the
// sizes. Compressing the response per stream instead (a gzip.Writer each)
// would cost ~800 KiB of compressor state per open stream and the CPU of
// compressing the snapshot for every page.

// event is one rendered server-sent event, shared by every page it is sent
// to; its deflated form is made on first use.
type event struct {
	plain []byte
	once  sync.Once
	gz    []byte
}

func newEvent(b []byte) *event { return &event{plain: b} }

// deflated is the event as a run of deflate blocks ending byte-aligned.
func (e *event) deflated() []byte {
	e.once.Do(func() { e.gz = deflateBlocks(e.plain) })
	return e.gz
}

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// deflateBlocks compresses b on its own (no back-reference before it) and
// sync-flushes: the output ends on a byte boundary, no block final.
func deflateBlocks(b []byte) []byte {
	var buf bytes.Buffer
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&buf)
	_, _ = w.Write(b)
	_ = w.Flush()
	deflaters.Put(w)
	return buf.Bytes()
}

// gzipHeader is a gzip member header: deflate, no name, no mtime, OS unknown.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// gzipEnd is an empty final stored block, then the trailer follows.
var gzipEnd = []byte{0x01, 0x00, 0x00, 0xff, 0xff}

// gzStream is what one compressed stream keeps: its checksum and length.
type gzStream struct {
	crc  uint32
	size uint32
}

// frame returns what to write for ev on this stream, and counts it.
func (z *gzStream) frame(ev *event) []byte {
	z.crc = crc32.Update(z.crc, crc32.IEEETable, ev.plain)
	z.size += uint32(len(ev.plain))
	return ev.deflated()
}

// trailer ends the gzip member: a final empty block, CRC-32, ISIZE.
func (z *gzStream) trailer() []byte {
	b := append([]byte(nil), gzipEnd...)
	b = binary.LittleEndian.AppendUint32(b, z.crc)
	return binary.LittleEndian.AppendUint32(b, z.size)
}

// acceptsGzip reports whether r's Accept-Encoding accepts gzip (q > 0).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
			if !ok {
				return true
			}
			f, err := strconv.ParseFloat(q, 64)
			return err == nil && f > 0
		}
	}
	return false
}
