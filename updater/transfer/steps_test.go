package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
	"github.com/roostrouter/roost/updater/storetest"
)

// frame is one frame as it is on the wire.
type frame struct {
	t       byte
	payload []byte
}

// record returns the bytes that write puts on a connection.
func record(t *testing.T, write func(c *conn) error) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := write(newConn(nil, &b)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// parseFrames splits a recorded stream into its frames.
func parseFrames(t *testing.T, b []byte) []frame {
	t.Helper()
	r := bytes.NewReader(b)
	c := newConn(r, io.Discard)
	var out []frame
	for r.Len() > 0 || c.r.Buffered() > 0 {
		typ, payload, err := c.read()
		if err != nil {
			t.Fatalf("recorded stream: %v", err)
		}
		out = append(out, frame{typ, bytes.Clone(payload)})
	}
	return out
}

func frameTypes(fs []frame) string {
	var s []byte
	for _, f := range fs {
		s = append(s, f.t)
	}
	return string(s)
}

func jsonFrame(typ byte, v any) func(c *conn) error {
	return func(c *conn) error { return c.writeJSON(typ, v) }
}

func rawFrame(typ byte, payload string) func(c *conn) error {
	return func(c *conn) error { return c.write(typ, []byte(payload), true) }
}

// TestSenderHandshake: the laptop's hello names the protocol, its version
// and program; a router's hello of another protocol, of version 0, or an
// error frame, ends the transfer with what the user needs to know.
func TestSenderHandshake(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reply   func(c *conn) error
		wantErr string
	}{
		{"version 3", jsonFrame(frameHelloReply, hello{Protocol: Protocol, Version: 3, Agent: "roostd 1.0"}), ""},
		{"version 1", jsonFrame(frameHelloReply, hello{Protocol: Protocol, Version: 1}), ""},
		{"other protocol", jsonFrame(frameHelloReply, hello{Protocol: "other", Version: 3}), `the router speaks "other" version 3`},
		{"version 0", jsonFrame(frameHelloReply, hello{Protocol: Protocol}), "version 0"},
		{"refused", jsonFrame(frameError, errorMsg{Message: "another transfer is running"}), "the router refused the transfer: another transfer is running"},
		{"not a hello", jsonFrame(frameMissing, missingMsg{}), "expected a hello frame, got missing"},
		{"hung up", func(*conn) error { return nil }, "connection closed by the peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent bytes.Buffer
			c := newConn(bytes.NewReader(record(t, tc.reply)), &sent)
			h, err := (&Sender{Agent: "roost test"}).handshake(c, []byte("closure"), nil)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("handshake: %v, want error %q", err, tc.wantErr)
			}
			if err == nil && h.Protocol != Protocol {
				t.Errorf("handshake returned %+v", h)
			}
			fs := parseFrames(t, sent.Bytes())
			var got hello
			if len(fs) != 1 || fs[0].t != frameHello || json.Unmarshal(fs[0].payload, &got) != nil {
				t.Fatalf("the laptop sent %q, want one hello frame", frameTypes(fs))
			}
			if want := (hello{Protocol: Protocol, Version: Version, Compression: []string{"zstd", "none", "delta"}, Agent: "roost test", Closure: []byte("closure")}); !slices.Equal(got.Compression, want.Compression) ||
				got.Protocol != want.Protocol || got.Version != want.Version || got.Agent != want.Agent || string(got.Closure) != string(want.Closure) {
				t.Errorf("hello %+v, want %+v", got, want)
			}
		})
	}
}

// TestOfferClosure: the closure goes compressed to a router of version 3
// and plain to an older one, and not again to a router of version 4 that
// had it in the hello; the answer must ask only for paths in it.
func TestOfferClosure(t *testing.T) {
	l := newLaptop(t, storetest.Closure("offer", 3, 1, 10))
	stranger := storetest.NewPath("stranger")
	for _, tc := range []struct {
		name      string
		version   int
		reply     func(c *conn) error
		wantFrame byte
		wantErr   string
	}{
		{"version 4, inline", 4, jsonFrame(frameMissing, missingMsg{Missing: []storepath.Path{l.infos[0].Path}}), 0, ""},
		{"version 4, too large to inline", 4, jsonFrame(frameMissing, missingMsg{Missing: []storepath.Path{l.infos[0].Path}}), frameClosureZ, ""},
		{"version 3", 3, jsonFrame(frameMissing, missingMsg{Missing: []storepath.Path{l.infos[0].Path}}), frameClosureZ, ""},
		{"version 2", 2, jsonFrame(frameMissing, missingMsg{Missing: []storepath.Path{l.infos[0].Path}}), frameClosure, ""},
		{"nothing missing", 3, jsonFrame(frameMissing, missingMsg{}), frameClosureZ, ""},
		{"asks for a stranger", 3, jsonFrame(frameMissing, missingMsg{Missing: []storepath.Path{stranger}}), frameClosureZ, "which is not in the closure"},
		{"refused", 3, jsonFrame(frameError, errorMsg{Message: "closure is not closed"}), frameClosureZ, "the router refused the transfer: closure is not closed"},
		{"garbage", 3, rawFrame(frameMissing, "{"), frameClosureZ, "bad missing frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent bytes.Buffer
			c := newConn(bytes.NewReader(record(t, tc.reply)), &sent)
			var m missingMsg
			var err error
			if tc.name != "version 4, inline" {
				err = sendClosure(c, tc.version, l.infos)
			}
			if err == nil {
				m, err = readMissing(c, l.infos)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("offerClosure: %v, want error %q", err, tc.wantErr)
			}
			fs := parseFrames(t, sent.Bytes())
			if tc.wantFrame == 0 {
				if len(fs) != 0 {
					t.Fatalf("the laptop sent %q after an inline closure, want nothing", frameTypes(fs))
				}
				return
			}
			if len(fs) != 1 || fs[0].t != tc.wantFrame {
				t.Fatalf("the laptop sent %q, want %q", frameTypes(fs), tc.wantFrame)
			}
			var cl closureMsg
			if err := newConn(&sent, io.Discard).readClosure(&cl); err != nil || len(cl.Paths) != 3 {
				t.Fatalf("the closure sent reads back as %d paths, %v", len(cl.Paths), err)
			}
			if err == nil && tc.name != "nothing missing" && (len(m.Missing) != 1 || m.Missing[0] != l.infos[0].Path) {
				t.Errorf("missing %v, want %v", m.Missing, l.infos[0].Path)
			}
		})
	}
}

// TestNextAck: what the ack reader makes of each frame the router sends.
func TestNextAck(t *testing.T) {
	paths := []storepath.Path{storetest.NewPath("a"), storetest.NewPath("b")}
	for _, tc := range []struct {
		name    string
		in      func(c *conn) error
		want    ackEvent
		wantErr string
	}{
		{"ack", jsonFrame(frameAck, ackMsg{Paths: paths}), ackEvent{n: 2}, ""},
		{"summary", jsonFrame(frameSummary, Summary{Received: 7, NARBytes: 700}), ackEvent{sum: &Summary{Received: 7, NARBytes: 700}}, ""},
		{"error", jsonFrame(frameError, errorMsg{Message: "disk full"}), ackEvent{}, "disk full"},
		{"bad ack", rawFrame(frameAck, "[1]"), ackEvent{}, "bad ack frame"},
		{"other frame", jsonFrame(frameHelloReply, hello{}), ackEvent{}, "expected a summary frame, got hello"},
		{"hung up", func(*conn) error { return nil }, ackEvent{}, "connection closed by the peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := nextAck(newConn(bytes.NewReader(record(t, tc.in)), io.Discard))
			if tc.wantErr != "" {
				if ev.err == nil || !strings.Contains(ev.err.Error(), tc.wantErr) {
					t.Fatalf("event %+v, want error %q", ev, tc.wantErr)
				}
				return
			}
			if ev.err != nil || ev.n != tc.want.n || (ev.sum == nil) != (tc.want.sum == nil) || ev.sum != nil && *ev.sum != *tc.want.sum {
				t.Fatalf("event %+v, want %+v", ev, tc.want)
			}
		})
	}
}

// TestSendNAR: a NAR goes as a NAR frame naming it, data frames whose
// zstd stream is the NAR, and an end frame.
func TestSendNAR(t *testing.T) {
	l := newLaptop(t, storetest.Closure("nar", 1, 4, 200_000))
	p := l.infos[0].Path
	var sent bytes.Buffer
	c := newConn(nil, &sent)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	n, err := sendNAR(c, enc, p, l.source, nil)
	if err != nil || n != l.infos[0].NarSize {
		t.Fatalf("sendNAR: %d bytes, %v; want %d", n, err, l.infos[0].NarSize)
	}
	fs := parseFrames(t, sent.Bytes())
	types := frameTypes(fs)
	if types[0] != frameNAR || types[len(types)-1] != frameEnd || strings.Trim(types[1:len(types)-1], "D") != "" {
		t.Fatalf("frames %q, want N D… E", types)
	}
	var nm narMsg
	if err := json.Unmarshal(fs[0].payload, &nm); err != nil || nm != (narMsg{Path: p, Compression: "zstd"}) {
		t.Fatalf("NAR frame %s", fs[0].payload)
	}
	var z []byte
	for _, f := range fs[1 : len(fs)-1] {
		z = append(z, f.payload...)
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	got, err := dec.DecodeAll(z, nil)
	if err != nil || !bytes.Equal(got, l.nars[p]) {
		t.Fatalf("the data frames decode to %d bytes (%v), want the %d of the NAR", len(got), err, len(l.nars[p]))
	}

	// A path the local store cannot read ends the transfer saying which.
	_, err = sendNAR(newConn(nil, io.Discard), enc, p, func(storepath.Path, io.Writer) error { return errors.New("no such file") }, nil)
	if err == nil || !strings.Contains(err.Error(), "read "+p.String()+" from the local store: no such file") {
		t.Fatalf("sendNAR of an unreadable path: %v", err)
	}
}

// TestFinish: after the finish frame, acks are counted up to the summary;
// an error frame is the router's refusal; a cancelled ctx ends the wait.
func TestFinish(t *testing.T) {
	sum := &Summary{Received: 5, NARBytes: 50}
	for _, tc := range []struct {
		name      string
		events    []ackEvent
		cancel    bool
		wantAcked int
		wantErr   string
	}{
		{"acks then summary", []ackEvent{{n: 2}, {n: 3}, {sum: sum}}, false, 5, ""},
		{"refused", []ackEvent{{n: 2}, {err: &PeerError{Message: "disk full"}}}, false, 2, "the router refused the transfer: disk full"},
		{"no summary, cancelled", []ackEvent{{n: 1}}, true, 1, context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent bytes.Buffer
			c := newConn(nil, &sent)
			acks := &ackReader{events: make(chan ackEvent, len(tc.events))}
			for _, ev := range tc.events {
				acks.events <- ev
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			rep := &reporter{cw: &countingWriter{}}
			got, err := finish(ctx, c, acks, rep)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("finish: %v, want error %q", err, tc.wantErr)
			}
			if err == nil && got != *sum {
				t.Errorf("summary %+v, want %+v", got, *sum)
			}
			if rep.prog.Acked != tc.wantAcked {
				t.Errorf("%d acked, want %d", rep.prog.Acked, tc.wantAcked)
			}
			if fs := parseFrames(t, sent.Bytes()); frameTypes(fs) != string(frameFinish) {
				t.Errorf("the laptop sent %q, want one finish frame", frameTypes(fs))
			}
		})
	}
}

// TestServerHandshake: the router answers a hello of its protocol with
// its own, and nothing to anything else.
func TestServerHandshake(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      func(c *conn) error
		wantErr string
	}{
		{"version 3", jsonFrame(frameHello, hello{Protocol: Protocol, Version: 3}), ""},
		{"version 1", jsonFrame(frameHello, hello{Protocol: Protocol, Version: 1}), ""},
		{"a future version", jsonFrame(frameHello, hello{Protocol: Protocol, Version: 99}), ""},
		{"other protocol", jsonFrame(frameHello, hello{Protocol: "nix-serve", Version: 3}), `peer speaks "nix-serve", not roost-transfer`},
		{"version 0", jsonFrame(frameHello, hello{Protocol: Protocol}), "peer speaks version 0, this roostd speaks 4"},
		{"not a hello", jsonFrame(frameClosure, closureMsg{}), "expected a hello frame, got closure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent bytes.Buffer
			c := newConn(bytes.NewReader(record(t, tc.in)), &sent)
			_, err := (&Server{Agent: "roostd test"}).handshake(c)
			fs := parseFrames(t, sent.Bytes())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("handshake: %v, want %q", err, tc.wantErr)
				}
				if len(fs) != 0 {
					t.Fatalf("the router answered a bad hello with %q", frameTypes(fs))
				}
				return
			}
			var h hello
			if err != nil || len(fs) != 1 || fs[0].t != frameHelloReply || json.Unmarshal(fs[0].payload, &h) != nil {
				t.Fatalf("handshake: %v, sent %q", err, frameTypes(fs))
			}
			if h.Protocol != Protocol || h.Version != Version || h.Agent != "roostd test" {
				t.Errorf("the router's hello: %+v", h)
			}
		})
	}
}

// TestReceiverExpect: a NAR frame must name the next missing path, in
// zstd, as it is or as a copy delta, against a base only if the router
// offered that base (and always for a copy delta).
func TestReceiverExpect(t *testing.T) {
	a, b, old, other := storetest.NewPath("a"), storetest.NewPath("b"), storetest.NewPath("b-old"), storetest.NewPath("other")
	rc := func(next int) *receiver {
		return &receiver{missing: []storepath.Path{a, b}, next: next, bases: map[storepath.Path]Base{b: {Path: old}}}
	}
	for _, tc := range []struct {
		name    string
		next    int
		in      func(c *conn) error
		wantErr string
	}{
		{"next", 0, jsonFrame(frameNAR, narMsg{Path: a, Compression: "zstd"}), ""},
		{"delta against the offered base", 1, jsonFrame(frameNAR, narMsg{Path: b, Compression: "zstd", Base: old}), ""},
		{"out of order", 0, jsonFrame(frameNAR, narMsg{Path: b, Compression: "zstd"}), "peer sent " + b.String() + ", expected " + a.String()},
		{"one too many", 2, jsonFrame(frameNAR, narMsg{Path: a, Compression: "zstd"}), "expected nothing more"},
		{"as it is", 0, jsonFrame(frameNAR, narMsg{Path: a, Compression: "none"}), ""},
		{"copy delta against the offered base", 1, jsonFrame(frameNAR, narMsg{Path: b, Compression: "delta", Base: old}), ""},
		{"copy delta without a base", 1, jsonFrame(frameNAR, narMsg{Path: b, Compression: "delta"}), "a delta without a base"},
		{"as it is, against a base", 1, jsonFrame(frameNAR, narMsg{Path: b, Compression: "none", Base: old}), "uncompressed, yet against a base"},
		{"other compression", 0, jsonFrame(frameNAR, narMsg{Path: a, Compression: "xz"}), `unsupported compression "xz"`},
		{"base not offered", 0, jsonFrame(frameNAR, narMsg{Path: a, Compression: "zstd", Base: old}), "which the router did not offer"},
		{"other base", 1, jsonFrame(frameNAR, narMsg{Path: b, Compression: "zstd", Base: other}), "a delta against " + other.String()},
		{"data instead", 0, rawFrame(frameData, "xx"), "expected a nar frame, got data"},
		{"laptop gives up", 0, jsonFrame(frameError, errorMsg{Message: "interrupted"}), "interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(bytes.NewReader(record(t, tc.in)), io.Discard)
			typ, payload, err := c.read()
			if err != nil {
				t.Fatal(err)
			}
			_, err = rc(tc.next).expect(typ, payload)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("expect: %v, want error %q", err, tc.wantErr)
			}
		})
	}
}

// stalledRouter answers the handshake and the closure (every path is
// missing), then runs rest on the connection.
func stalledRouter(t *testing.T, srv net.Conn, rest func(c *conn)) {
	c := newConn(srv, srv)
	var h hello
	var cl closureMsg
	if c.readJSON(frameHello, &h) != nil ||
		c.writeJSON(frameHelloReply, hello{Protocol: Protocol, Version: Version}) != nil ||
		decodeClosure(h.Closure, &cl) != nil {
		t.Error("the stalled router's handshake failed")
		return
	}
	var m missingMsg
	for _, i := range cl.Paths {
		m.Missing = append(m.Missing, i.Path)
	}
	if c.writeJSON(frameMissing, m) != nil {
		return
	}
	rest(c)
}

// transferGoroutines lists the goroutines running the package's code that
// were not there before (ignoring the tests' own).
func transferGoroutines(before map[string]bool) []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(g, " [")
		if before != nil && before[id] || !strings.Contains(g, "roost/updater/transfer.") || strings.Contains(g, "transfer.Test") {
			continue
		}
		out = append(out, g)
	}
	return out
}

func goroutineIDs() map[string]bool {
	ids := map[string]bool{}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(g, " [")
		ids[id] = true
	}
	return ids
}

// TestSendLeavesNothingBehind: when Send returns early, on a router that
// stops answering or on an error while acks pile up, it returns on ctx's
// cancellation, and once the caller closes the connection no goroutine of
// its is left blocked.
func TestSendLeavesNothingBehind(t *testing.T) {
	l := newLaptop(t, storetest.Closure("stall", 4, 1, 100))
	for _, tc := range []struct {
		name string
		// router runs after the handshake; stuck is closed when the
		// laptop should be stuck and ctx is cancelled.
		router  func(c *conn, stuck chan<- struct{})
		src     func(release <-chan struct{}) NARSource
		wantErr string
	}{
		{
			name: "no summary",
			router: func(c *conn, stuck chan<- struct{}) {
				for {
					t, _, err := c.read()
					if err != nil {
						return
					}
					if t == frameFinish {
						close(stuck) // and never answer
					}
				}
			},
			src:     func(<-chan struct{}) NARSource { return l.source },
			wantErr: context.Canceled.Error(),
		},
		{
			name: "acks pile up while the local store hangs",
			router: func(c *conn, stuck chan<- struct{}) {
				go func() { // takes what the laptop sends
					for {
						if _, _, err := c.read(); err != nil {
							return
						}
					}
				}()
				for i := 0; ; i++ {
					// More acks than the reader queues (16): the laptop
					// is in the local store and takes none.
					if i == 17 {
						close(stuck)
					}
					if c.writeJSON(frameAck, ackMsg{Paths: []storepath.Path{l.infos[0].Path}}) != nil {
						return
					}
				}
			},
			src: func(release <-chan struct{}) NARSource {
				return func(p storepath.Path, w io.Writer) error {
					<-release
					return errors.New("the disk went away")
				}
			},
			// The sender waits for a worker, which is in the local store.
			wantErr: context.Canceled.Error(),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goroutineIDs()
			cli, srv := net.Pipe()
			stuck, release := make(chan struct{}), make(chan struct{})
			routerDone := make(chan struct{})
			go func() {
				defer close(routerDone)
				stalledRouter(t, srv, func(c *conn) { tc.router(c, stuck) })
			}()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sendErr := make(chan error, 1)
			go func() {
				_, err := (&Sender{}).Send(ctx, cli, cli, l.infos, tc.src(release))
				sendErr <- err
			}()
			select {
			case <-stuck:
			case <-time.After(10 * time.Second):
				t.Fatal("the laptop never got stuck")
			}
			cancel()
			close(release)
			var err error
			select {
			case err = <-sendErr:
			case <-time.After(5 * time.Second):
				cli.Close()
				t.Fatal("Send did not return after its ctx was cancelled")
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Send: %v, want %q", err, tc.wantErr)
			}
			// The caller closes the connection, as it does after Send.
			cli.Close()
			<-routerDone
			var left []string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if left = transferGoroutines(before); len(left) == 0 {
					return
				}
			}
			t.Fatalf("%d goroutines left behind by Send:\n%s", len(left), strings.Join(left, "\n\n"))
		})
	}
}

// TestReceiverCommit: a commit registers the NARs received since the last
// one and acknowledges exactly those; with none, it sends nothing.
func TestReceiverCommit(t *testing.T) {
	s := store.New(t.TempDir(), store.Options{})
	l := newLaptop(t, storetest.Closure("commit", 2, 1, 100))
	ss, err := s.NewSession(newServer(s).Lock)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	var sent bytes.Buffer
	rc := &receiver{c: newConn(nil, &sent), ss: ss}
	if err := rc.commit(context.Background()); err != nil || sent.Len() != 0 {
		t.Fatalf("a commit of nothing: %v, sent %d bytes", err, sent.Len())
	}
	for _, info := range l.infos {
		st, err := ss.Restore(bytes.NewReader(l.nars[info.Path]), store.Expect{Path: info.Path, NarHash: &info.NarHash, NarSize: info.NarSize})
		if err != nil {
			t.Fatal(err)
		}
		rc.unacked = append(rc.unacked, store.Item{Staged: st, Info: info})
		rc.unackedBytes += info.NarSize
	}
	if err := rc.commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	fs := parseFrames(t, sent.Bytes())
	var ack ackMsg
	if len(fs) != 1 || fs[0].t != frameAck || json.Unmarshal(fs[0].payload, &ack) != nil {
		t.Fatalf("the router sent %q, want one ack", frameTypes(fs))
	}
	if !slices.Equal(ack.Paths, []storepath.Path{l.infos[0].Path, l.infos[1].Path}) {
		t.Errorf("acked %v, want both paths", ack.Paths)
	}
	if rc.sum.Received != 2 || rc.sum.NARBytes != l.infos[0].NarSize+l.infos[1].NarSize || len(rc.unacked) != 0 {
		t.Errorf("after the commit: %+v, %d unacked", rc.sum, len(rc.unacked))
	}
	if n := validCount(t, s); n != 2 {
		t.Errorf("%d paths valid after the commit, want 2", n)
	}
}
