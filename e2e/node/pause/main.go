// Command pause is the test node's sandbox ("pause") image: PID 1 of every pod's sandbox, holding
// the pod's namespaces. It reaps the zombies it inherits and exits on SIGTERM/SIGINT, like the
// upstream pause image (which is C and comes from a registry; there is none here). Built static
// (CGO_ENABLED=0) into an image FROM scratch by e2e/node/build.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			// Reap every exited child (processes re-parented to the sandbox's PID 1).
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
