// Package headless starts Debian's chromium headless for the sale page's
// browser tests and screenshots (chromedp drives it).
package headless

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/chromedp/chromedp"
)

// InstallCommand installs the browser (hack/test-deps.sh runs it as root).
const InstallCommand = "apt-get install -y chromium"

// Path finds Debian's chromium, or another Chromium or Chrome on PATH.
func Path() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("chromium is not installed: run `%s` (as root; `make test` does it through hack/test-deps.sh)", InstallCommand)
}

// Start starts one headless browser with a window of width × height and
// returns its chromedp context: tabs are chromedp.NewContext(ctx, ...).
// stop ends the browser and removes its profile.
func Start(width, height int) (ctx context.Context, stop func(), err error) {
	path, err := Path()
	if err != nil {
		return nil, nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	stop = func() { cancelBrowser(); cancelAlloc() }
	if err := chromedp.Do(bctx); err != nil {
		stop()
		return nil, nil, fmt.Errorf("start %s: %w", path, err)
	}
	return bctx, stop, nil
}
