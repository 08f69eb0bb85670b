// Command coredns is CoreDNS with only the plugins the test node's cluster DNS needs: the
// kubernetes plugin (Services, headless Service pod records), cache, hosts (the node's name),
// errors, log, health, ready and bind. Built by e2e/node/build.sh; nothing forwards upstream:
// the test node's pods resolve cluster names only, and no query leaves the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins, each registering itself with the server.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins in the order upstream's plugin.cfg gives them (a query passes through them in this
// order, whatever their order in the Corefile): only those imported above.
var directives = []string{
	"bind",
	"ready",
	"health",
	"errors",
	"log",
	"cache",
	"hosts",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
