// Package page is the sale page (docs/sale-page.md): one HTML document and
// its assets, embedded in the binary, served by every purchase pod. No CDN,
// no framework: the page must load wherever the sale's host does.
package page

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed *.html *.js *.css *.svg
var pageFiles embed.FS

// pageAsset is one file of the page, ready to serve in both encodings.
type pageAsset struct {
	contentType string
	plain, gz   []byte
	plainLen    []string
	gzLen       []string
}

// pageAssets holds the page under its URL paths: "/" and
// "/assets/<name>.<hash>.<ext>". The content hash in each asset's name lets
// the assets be cached forever while the document is revalidated every
// time, so a new image never mixes an old script with a new document.
var pageAssets = loadPageAssets()

func loadPageAssets() map[string]*pageAsset {
	entries, err := fs.ReadDir(pageFiles, ".")
	if err != nil {
		panic(err)
	}
	out := map[string]*pageAsset{}
	var index []byte
	var renames []string
	for _, e := range entries {
		b, err := fs.ReadFile(pageFiles, e.Name())
		if err != nil {
			panic(err)
		}
		if e.Name() == "index.html" {
			index = b
			continue
		}
		sum := sha256.Sum256(b)
		ext := path.Ext(e.Name())
		hashed := strings.TrimSuffix(e.Name(), ext) + "." + hex.EncodeToString(sum[:5]) + ext
		out["/assets/"+hashed] = newPageAsset(contentTypeOf(ext), b)
		renames = append(renames, "/assets/"+e.Name(), "/assets/"+hashed)
	}
	out["/"] = newPageAsset("text/html; charset=utf-8", []byte(strings.NewReplacer(renames...).Replace(string(index))))
	return out
}

func contentTypeOf(ext string) string {
	switch ext {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return "application/octet-stream"
}

func newPageAsset(contentType string, plain []byte) *pageAsset {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(plain)
	_ = zw.Close()
	return &pageAsset{
		contentType: contentType,
		plain:       plain, gz: buf.Bytes(),
		plainLen: []string{strconv.Itoa(len(plain))},
		gzLen:    []string{strconv.Itoa(buf.Len())},
	}
}

// pageCSP allows only the page's own scripts, styles and API: no inline
// script or style (an injected <script> does not run), no framing
// (clickjacking a buy button), no form posts, no <base> tricks.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Serve answers GET or HEAD of the page ("/") or one of its assets
// ("/assets/<name>.<hash>.<ext>"); false, having written nothing, for any
// other path.
func Serve(w http.ResponseWriter, r *http.Request) bool {
	a, ok := pageAssets[r.URL.Path]
	if !ok {
		return false
	}
	servePageAsset(w, r, a, r.URL.Path != "/")
	return true
}

func servePageAsset(w http.ResponseWriter, r *http.Request, a *pageAsset, immutable bool) {
	h := w.Header()
	setPageSecurityHeaders(h)
	h["Content-Type"] = []string{a.contentType}
	h["Vary"] = []string{"Accept-Encoding"}
	if immutable {
		h["Cache-Control"] = []string{"public, max-age=31536000, immutable"}
	} else {
		h["Cache-Control"] = []string{"no-cache"}
	}
	body, n := a.plain, a.plainLen
	if acceptsGzip(r.Header) {
		body, n = a.gz, a.gzLen
		h["Content-Encoding"] = []string{"gzip"}
	}
	h["Content-Length"] = n
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// setPageSecurityHeaders sets what every page answer carries.
func setPageSecurityHeaders(h http.Header) {
	h["Content-Security-Policy"] = []string{pageCSP}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["X-Frame-Options"] = []string{"DENY"} // frame-ancestors for old browsers
	h["Referrer-Policy"] = []string{"no-referrer"}
	h["Cross-Origin-Opener-Policy"] = []string{"same-origin"}
}

// acceptsGzip reads Accept-Encoding: gzip (or *) listed without q=0.
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != "gzip" && name != "*" {
				continue
			}
			q := strings.ReplaceAll(strings.ToLower(params), " ", "")
			if q == "q=0" || strings.HasPrefix(q, "q=0.0") && strings.Trim(q[len("q=0."):], "0") == "" {
				return false
			}
			return true
		}
	}
	return false
}
