// Package cmd holds the flux-order command line: one binary, one subcommand
// per role (manager, purchase, loadtest, receive, order, version).
package cmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix prefixes the environment variable of every flag:
// --database-url is also FLUX_ORDER_DATABASE_URL.
const envPrefix = "FLUX_ORDER_"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "flux-order",
		Short:         "Flash-sale ticketing on Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newManagerCommand(), newPurchaseCommand(), newLoadtestCommand(), newReceiveCommand(), newOrderCommand(), newVersionCommand())
	return root
}

// Execute runs the command line and returns the process exit code. Errors
// are one line on stderr.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "flux-order: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	return 0
}

// bindEnv fills every flag not given on the command line from its
// FLUX_ORDER_* variable, so the operator can configure pods by env.
func bindEnv(flags *pflag.FlagSet) error {
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if serr := flags.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("invalid value %q for --%s (from %s): %v", v, f.Name, name, serr)
			}
		}
	})
	return err
}

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func newLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, nil))
}
