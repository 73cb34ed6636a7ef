package screen

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestConnDropsWhatDoesNotParse(t *testing.T) {
	srv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var logged bytes.Buffer
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	c := &Conn{PacketConn: srv,
		Parse: func(b []byte) error {
			if !bytes.HasPrefix(b, []byte("ok")) {
				return errors.New("no ok")
			}
			return nil
		},
		Log: &Limited{Log: slog.New(slog.NewTextHandler(&logged, nil)), What: "test packet", Now: func() time.Time { return now }}}
	peer, err := net.Dial("udp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for _, p := range []string{"junk", "more junk", "and more", "ok good"} {
		peer.Write([]byte(p))
	}
	b := make([]byte, 100)
	n, _, err := c.ReadFrom(b)
	if err != nil || string(b[:n]) != "ok good" {
		t.Fatalf("ReadFrom = %q, %v; want the packet that parses", b[:n], err)
	}
	if got := strings.Count(logged.String(), "dropped a malformed test packet"); got != 1 {
		t.Fatalf("%d log lines for 3 drops within a period, want 1:\n%s", got, logged.String())
	}
	now = now.Add(2 * time.Minute)
	peer.Write([]byte("junk"))
	peer.Write([]byte("ok"))
	c.ReadFrom(b)
	if !strings.Contains(logged.String(), "droppedSinceLastLine=2") {
		t.Fatalf("the next line does not count the drops in between:\n%s", logged.String())
	}
}
