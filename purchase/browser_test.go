package purchase_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/internal/headless"
)

// The browser tests drive the real page in headless Chromium (Debian's
// chromium package; hack/test-deps.sh installs it) against real purchase
// servers, Redis and PostgreSQL. One Chromium process serves the whole
// package; each page gets its own browser context (its own storage, as a
// second browser would have).

var browserOnce struct {
	sync.Once
	ctx  context.Context
	stop func()
	err  error
}

// browser returns the package's Chromium, started on first use. A missing
// chromium fails the test with the command that installs it.
func browser(t *testing.T) context.Context {
	t.Helper()
	browserOnce.Do(func() {
		browserOnce.ctx, browserOnce.stop, browserOnce.err = headless.Start(1280, 900)
	})
	if browserOnce.err != nil {
		t.Fatalf("the browser tests need Chromium: %v", browserOnce.err)
	}
	return browserOnce.ctx
}

// closeBrowser ends the package's Chromium (TestMain, after the tests).
func closeBrowser() {
	if browserOnce.stop != nil {
		browserOnce.stop()
	}
}

// newTab opens a tab in a fresh browser context, bounded by timeout.
func newTab(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser(t), chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancel() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// run runs steps in a tab, failing the test with what it was doing.
func run(t *testing.T, tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tab, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in a tab.
func eval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// get runs one action that returns a value.
func value[T any](t *testing.T, tab context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(tab, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// openSalePage loads the page as buyer and waits until the seat stream
// has delivered its snapshot.
func openSalePage(t *testing.T, tab context.Context, url, buyer string) {
	t.Helper()
	run(t, tab, "open "+url,
		chromedp.Navigate(url),
		chromedp.Poll[chromedp.Void](`document.body.dataset.live === "true"`, chromedp.WithPollingInterval(10*time.Millisecond)),
		setBuyer(buyer),
	)
}

// setBuyer types the buyer id the way a change event reports it.
func setBuyer(buyer string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const b = document.querySelector('[data-testid="buyer"]');
		b.value = %q; b.dispatchEvent(new Event('change')); })()`, buyer))
}

// seatState is the data-state of a rendered seat ("" when not rendered).
func seatState(id int64) string {
	return fmt.Sprintf(`((document.querySelector('[data-seat="%d"]') || {dataset: {}}).dataset.state || '')`, id)
}

// waitSeatState waits in the page until seat id shows state.
func waitSeatState(id int64, state string, within time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](fmt.Sprintf(`%s === %q`, seatState(id), state),
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(within))
}

// clickSeat clicks a rendered seat.
func clickSeat(id int64) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-seat="%d"]`, id)))
}

// waitProblem waits for the problem message with code.
func waitProblem(code string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`[data-testid="problem"][data-code=%q]`, code)))
}
