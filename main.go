// Command flux-order is the Flux-Order operator, its purchase service and its
// load generator, in one binary.
package main

import (
	"os"

	"github.com/flux-order/flux-order/cmd"
)

func main() { os.Exit(cmd.Execute()) }
