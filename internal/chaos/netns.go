package chaos

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Net places worker processes in network namespaces of their own, joined
// to the test's host by a bridge, so that the test can cut one off (a
// network partition) without touching the others. Where the machine does
// not allow it (not root, no iproute2) the workers share the host's
// loopback and Isolated is false.
type Net struct {
	// Isolated reports whether the workers have namespaces of their own.
	Isolated bool
	// Why says why they have not (empty when Isolated).
	Why string
	// Host is the address the workers reach the host at: the bridge's
	// address, or 127.0.0.1.
	Host string

	ip     string
	prefix [][]string
	links  []string // the host end of each worker's veth pair
}

// Listen returns the address a server of the test should listen on:
// Host with an unused port.
func (n *Net) Listen() string { return n.Host + ":0" }

// Prefix returns the command prefix that runs a program in worker i's
// namespace (nil on loopback).
func (n *Net) Prefix(i int) []string {
	if !n.Isolated {
		return nil
	}
	return n.prefix[i]
}

// Cut cuts worker i off the network: its link goes down, so that its
// packets are dropped, not refused (the peers see silence, as in a real
// partition). Heal undoes it. Both need Isolated.
func (n *Net) Cut(i int) error { return n.link(i, "down") }

// Heal restores worker i's link.
func (n *Net) Heal(i int) error { return n.link(i, "up") }

func (n *Net) link(i int, state string) error {
	if !n.Isolated {
		return fmt.Errorf("chaos: no network namespaces: %s", n.Why)
	}
	return run(n.ip, "link", "set", n.links[i], state)
}

// NewNet gives each of workers a network namespace when the machine allows
// it, and removes them when the test ends.
func NewNet(t testing.TB, workers int) *Net {
	t.Helper()
	n := &Net{Host: "127.0.0.1"}
	loopback := func(why string) *Net {
		n.Why = why
		t.Logf("workers on loopback, not in network namespaces: %s", why)
		return n
	}
	if os.Geteuid() != 0 {
		return loopback("not root")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return loopback("no ip command (iproute2)")
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	subnet := fmt.Sprintf("10.%d.%d", 200+int(b[0])%50, b[1])
	bridge := "kbr" + tag
	var cleanup []func()
	undo := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	ip := func(args ...string) error { return run(ipPath, args...) }
	steps := func() error {
		if err := ip("link", "add", bridge, "type", "bridge"); err != nil {
			return err
		}
		cleanup = append(cleanup, func() { _ = ip("link", "del", bridge) })
		if err := ip("addr", "add", subnet+".1/24", "dev", bridge); err != nil {
			return err
		}
		if err := ip("link", "set", bridge, "up"); err != nil {
			return err
		}
		for i := range workers {
			ns := fmt.Sprintf("kiln-%s-%d", tag, i)
			host, peer := fmt.Sprintf("kv%s%da", tag, i), fmt.Sprintf("kv%s%db", tag, i)
			if err := ip("netns", "add", ns); err != nil {
				return err
			}
			cleanup = append(cleanup, func() { _ = ip("netns", "del", ns) })
			if err := ip("link", "add", host, "type", "veth", "peer", "name", peer); err != nil {
				return err
			}
			cleanup = append(cleanup, func() { _ = ip("link", "del", host) })
			for _, args := range [][]string{
				{"link", "set", peer, "netns", ns},
				{"link", "set", host, "master", bridge},
				{"link", "set", host, "up"},
				{"netns", "exec", ns, "ip", "addr", "add", fmt.Sprintf("%s.%d/24", subnet, i+2), "dev", peer},
				{"netns", "exec", ns, "ip", "link", "set", peer, "up"},
				{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
			} {
				if err := ip(args...); err != nil {
					return err
				}
			}
			n.prefix = append(n.prefix, []string{ipPath, "netns", "exec", ns})
			n.links = append(n.links, host)
		}
		return nil
	}
	if err := steps(); err != nil {
		undo()
		n.prefix, n.links = nil, nil
		return loopback(err.Error())
	}
	t.Cleanup(undo)
	n.Isolated, n.Host, n.ip = true, subnet+".1", ipPath
	t.Logf("workers in %d network namespaces, the host on bridge %s at %s", workers, bridge, n.Host)
	return n
}

// run runs a command and returns its output in the error when it fails.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput() //nolint:gosec // G204: iproute2 and mount with arguments of the test's own making
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
