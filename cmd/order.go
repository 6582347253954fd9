package cmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// newOrderCommand is the platform's side of the purchase pods' admin API
// (issue 19): flux-order order cancel. The API is on a pod's private port;
// an operator reaches it with kubectl port-forward (docs/purchase.md).
func newOrderCommand() *cobra.Command {
	c := &cobra.Command{Use: "order", Short: "Act on a sale's orders through a purchase pod's admin API"}
	c.AddCommand(newOrderCancelCommand())
	return c
}

func newOrderCancelCommand() *cobra.Command {
	var base, tokenFile, reason, by string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "cancel ORDER_ID",
		Short: "Cancel an order: its seat goes back on sale, its buyer's count drops, order.cancelled is sent",
		Long: "Cancel an order through a purchase pod's admin API (POST /admin/v1/orders/{id}/cancel on its\n" +
			"private port). Reach the port with, for example:\n\n" +
			"  kubectl -n NS port-forward deploy/SALE-purchase 9090:9090\n" +
			"  kubectl -n NS get secret SALE-sale -o jsonpath='{.data.admin-token}' | base64 -d > token\n" +
			"  flux-order order cancel --token-file token --reason chargeback --by you@example ORDER_ID\n\n" +
			"A repeat answers the first cancellation. Prints the cancellation as JSON.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := bindEnv(c.Flags()); err != nil {
				return err
			}
			id, err := uuid.Parse(args[0])
			if err != nil {
				return fmt.Errorf("ORDER_ID %q is not an order id (a UUID)", args[0])
			}
			if tokenFile == "" || reason == "" || by == "" {
				return errors.New("--token-file, --reason and --by are required")
			}
			raw, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--token-file: %w", err)
			}
			token := strings.TrimSpace(string(raw))
			if token == "" {
				return fmt.Errorf("--token-file %s is empty", tokenFile)
			}
			u, err := url.Parse(base)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("--url %q is not an http(s) URL of a pod's private port", base)
			}
			body, _ := json.Marshal(map[string]string{"reason": reason, "cancelledBy": by})
			req, err := http.NewRequestWithContext(c.Context(), http.MethodPost,
				strings.TrimSuffix(base, "/")+"/admin/v1/orders/"+id.String()+"/cancel", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := (&http.Client{Timeout: timeout}).Do(req)
			if err != nil {
				return fmt.Errorf("cancel order %s: %w", id, err)
			}
			defer resp.Body.Close()
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode != http.StatusOK {
				var p struct{ Code, Detail string }
				_ = json.Unmarshal(answer, &p)
				return fmt.Errorf("cancel order %s: %s %s: %s", id, resp.Status, p.Code, p.Detail)
			}
			if resp.Header.Get("Idempotent-Replayed") == "true" {
				fmt.Fprintln(c.ErrOrStderr(), "already cancelled: this is the first cancellation")
			}
			_, err = c.OutOrStdout().Write(answer)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&base, "url", "http://127.0.0.1:9090", "the purchase pod's private port (its --metrics-listen), e.g. through kubectl port-forward")
	f.StringVar(&tokenFile, "token-file", "", "file holding the sale's admin token (the sale Secret's admin-token key); required")
	f.StringVar(&reason, "reason", "", "why the order is cancelled (audited, sent in order.cancelled); required")
	f.StringVar(&by, "by", "", "who cancels it (audited, sent in order.cancelled); required")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the answer")
	return c
}
