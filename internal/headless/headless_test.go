package headless

import (
	"strings"
	"testing"
)

// Without a browser on PATH the error names the command that installs one.
func TestPath_MissingNamesTheInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Path()
	if err == nil || !strings.Contains(err.Error(), InstallCommand) {
		t.Fatalf("want an error naming %q, got %v", InstallCommand, err)
	}
}
