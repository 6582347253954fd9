package orderstore

import (
	"io/fs"
	"net/url"
	"strings"
)

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	return sub
}

// hasParam reports whether a postgres URL or keyword/value DSN sets key.
func hasParam(dsn, key string) bool {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Query().Has(key)
	}
	return strings.Contains(dsn, key+"=")
}
