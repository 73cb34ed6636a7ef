package isp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"
)

// Advertise sends router advertisements on ifname in namespace ns (the
// current one if ns is empty) every interval until ctx ends, as an ISP's
// access router does: a default router, and the M and O flags that say
// "addresses and prefixes come from DHCPv6". It returns once it sends.
func Advertise(ctx context.Context, ns, ifname string, interval time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		// The thread enters ns and is never unlocked: it ends with this
		// goroutine instead of going back to the pool in the wrong namespace.
		runtime.LockOSThread()
		if ns != "" {
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				errc <- err
				return
			}
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
			if err != nil {
				errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
				return
			}
		}
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			errc <- err
			return
		}
		conn, _, err := ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			errc <- fmt.Errorf("router advertisements on %s: %w", ifname, err)
			return
		}
		defer conn.Close()
		ra := &ndp.RouterAdvertisement{CurrentHopLimit: 64, ManagedConfiguration: true, OtherConfiguration: true,
			RouterLifetime: 30 * time.Minute,
			Options:        []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
		all := netip.MustParseAddr("ff02::1")
		if err := conn.WriteTo(ra, nil, all); err != nil {
			errc <- fmt.Errorf("advertise on %s: %w", ifname, err)
			return
		}
		errc <- nil
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				conn.WriteTo(ra, nil, all)
			}
		}
	}()
	return <-errc
}
