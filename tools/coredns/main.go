// Command coredns is a minimal CoreDNS build for Shakedown: service discovery
// served from etcd (the SkyDNS layout) and nothing else. Fewer plugins mean a
// smaller binary, a faster cold build and no surprise behaviour from plugins
// we never configure. Built by scripts/build-coredns.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins we compile in; each registers itself in init().
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/etcd"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is the plugin chain order, copied from plugin.cfg of the pinned
// CoreDNS version (the order a query passes through, not Corefile order).
// bind is here because a server block otherwise listens on every interface;
// we serve on 127.0.0.1 only.
var directives = []string{
	"bind",
	"ready",
	"health",
	"errors",
	"log",
	"cache",
	"etcd",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
