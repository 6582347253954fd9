// Command screenshots takes the sale page's pictures in docs/ (README,
// docs/sale-page.md): before the start, on sale, sold out, and on a phone.
// It serves real sales (the test harness's throw-away redis-server and
// PostgreSQL) and photographs them in headless Chromium:
//
//	go run ./hack/screenshots
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/internal/headless"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

const displayName = "Demo Concert: The Flux Orchestra"

func main() {
	out := flag.String("out", "docs", "directory of the PNG files")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

// sale is one served sale.
type sale struct {
	url  string
	stop func()
}

func run(out string) error {
	ctx := context.Background()
	rdb, pg, stopServers, err := purchasetest.Servers()
	if err != nil {
		return err
	}
	defer stopServers()
	browser, stop, err := headless.Start(1280, 900)
	if err != nil {
		return err
	}
	defer stop()

	serve := func(name string, tickets int64, edit func(*purchase.Config)) (sale, error) {
		cfg, err := purchasetest.NewConfig(ctx, rdb, pg, name, tickets)
		if err != nil {
			return sale{}, err
		}
		cfg.DisplayName = displayName
		if edit != nil {
			edit(&cfg)
		}
		_, url, stop, err := purchasetest.Serve(ctx, cfg, purchasetest.Discard())
		if err != nil {
			return sale{}, err
		}
		return sale{url: url, stop: stop}, nil
	}

	// Before the start, with a waiting room open.
	before, err := serve("before", 500, func(c *purchase.Config) {
		c.Schedule.StartsAt = time.Now().Add(2*time.Hour + 13*time.Minute)
		c.WaitingRoom = waitingroom.Settings{AdmitPerSecond: 50}
	})
	if err != nil {
		return err
	}
	defer before.stop()
	if err := shoot(browser, before.url, "", filepath.Join(out, "sale-page-before-start.png"), 1280, 900, nil); err != nil {
		return err
	}

	// On sale with 5-minute holds: a third sold and a few held at random,
	// then the buyer holds seat 42 and sees the checkout.
	onSale, err := serve("onsale", 500, func(c *purchase.Config) { c.HoldTTL = 5 * time.Minute })
	if err != nil {
		return err
	}
	defer onSale.stop()
	for i, id := range rand.Perm(500)[:180] {
		if id+1 == 42 {
			continue // alice's
		}
		action := "purchase"
		if i%18 == 0 {
			action = "hold"
		}
		if err := post(onSale.url, int64(id+1), action, fmt.Sprintf("buyer-%d", id%60)); err != nil {
			return err
		}
	}
	pick := chromedp.Steps(
		chromedp.Click(chromedp.CSS(`[data-seat="42"]`)),
		chromedp.Poll[chromedp.Void](`!document.getElementById('order').hidden || !document.getElementById('checkout').hidden`),
	)
	if err := shoot(browser, onSale.url, "alice", filepath.Join(out, "sale-page-on-sale.png"), 1280, 900, pick); err != nil {
		return err
	}
	if err := shoot(browser, onSale.url, "bob", filepath.Join(out, "sale-page-phone.png"), 390, 844, nil); err != nil {
		return err
	}

	// Sold out.
	soldOut, err := serve("soldout", 120, nil)
	if err != nil {
		return err
	}
	defer soldOut.stop()
	for id := int64(1); id <= 120; id++ {
		if err := post(soldOut.url, id, "purchase", fmt.Sprintf("buyer-%d", id%40)); err != nil {
			return err
		}
	}
	return shoot(browser, soldOut.url, "carol", filepath.Join(out, "sale-page-sold-out.png"), 1280, 900, nil)
}

// post is one purchase or hold through the API.
func post(base string, id int64, action, buyer string) error {
	resp, err := http.Post(fmt.Sprintf("%s/v1/tickets/%d/%s", base, id, action), "application/json",
		strings.NewReader(fmt.Sprintf(`{"buyerId":%q}`, buyer)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%s seat %d: %s", action, id, resp.Status)
	}
	return nil
}

// shoot opens the page as buyer in a viewport of w × h, runs then (if
// set), and writes a PNG of the viewport.
func shoot(browser context.Context, url, buyer, file string, w, h int64, then chromedp.Action[chromedp.Void]) error {
	tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancel()
	tab, cancelTimeout := context.WithTimeout(tab, time.Minute)
	defer cancelTimeout()
	steps := []chromedp.Action[chromedp.Void]{
		chromedp.EmulateViewport(w, h),
		chromedp.Navigate(url + "/"),
		chromedp.Poll[chromedp.Void](`document.body.dataset.live === "true"`),
	}
	if buyer != "" {
		steps = append(steps, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const b = document.querySelector('[data-testid="buyer"]');
			b.value = %q; b.dispatchEvent(new Event('change')); })()`, buyer)))
	}
	if then != nil {
		steps = append(steps, then)
	}
	steps = append(steps, chromedp.Sleep(300*time.Millisecond)) // let the last frame paint
	if err := chromedp.Do(tab, steps...); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if len(png) == 0 {
		return errors.New(file + ": empty screenshot")
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%d bytes)\n", file, len(png))
	return os.WriteFile(file, png, 0o644)
}
