// Package serve speaks Nix's legacy SSH store protocol, the other end of
// `nix-store --serve --write`, so that unmodified `nix copy --to ssh://`
// and `nix-copy-closure` work against a router that has no Nix. Builds are
// refused: a router receives closures, it does not build them.
//
// The protocol's minor versions (NixOS/nix src/libstore/serve-protocol.cc,
// src/nix/nix-store/nix-store.cc opServe), each both sides speaking the
// lower of the two versions they announce:
//
//	2.2  build options: maxLogSize
//	2.3  build options: nrRepeats, enforceDeterminism; build results:
//	     timesBuilt, isNonDeterministic, startTime, stopTime
//	2.4  path infos: NAR hash, content address, signatures
//	2.5  AddToStoreNar (Nix 2.32+ refuses a server older than this)
//	2.6  build results: built outputs
//	2.7  build options: keepFailed (Nix 2.4 to 2.34, Lix)
//	2.8  build results: built outputs as realisations (Nix 2.35+)
//
// Everything past 2.5 concerns builds, which roostd refuses, so it speaks
// 2.7: what Lix and most Nix releases speak.
package serve

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/roostrouter/roost/updater/nar"
	"github.com/roostrouter/roost/updater/nixexport"
	"github.com/roostrouter/roost/updater/nixhash"
	"github.com/roostrouter/roost/updater/registry"
	"github.com/roostrouter/roost/updater/store"
	"github.com/roostrouter/roost/updater/storepath"
)

const (
	magic1 = 0x390c9deb
	magic2 = 0x5452eecb
	// Version is the protocol version this server answers with.
	Version = 0x207

	maxString  = 4096
	maxList    = 1 << 20
	maxNARSize = 1 << 40
	// maxSkipped bounds one string of a build request, which is read only
	// to be thrown away (a derivation's environment can hold whole scripts).
	maxSkipped = 1 << 30
)

// statusMiscFailure is BuildResult's MiscFailure on the wire
// (src/libstore/common-protocol.cc, buildResultStatusTable).
const statusMiscFailure = 9

const noBuilds = "roostd does not build: build on a machine with Nix and copy the result (nix copy --to ssh://…)"

// The commands of the serve protocol.
const (
	cmdQueryValidPaths = 1
	cmdQueryPathInfos  = 2
	cmdDumpStorePath   = 3
	cmdImportPaths     = 4
	cmdExportPaths     = 5
	cmdBuildPaths      = 6
	cmdQueryClosure    = 7
	cmdBuildDerivation = 8
	cmdAddToStoreNar   = 9
)

// Server serves a store.
type Server struct {
	Store *store.Store
	Write bool // --write: imports allowed
	Log   *slog.Logger
	// Lock takes the store's writer lock.
	Lock func(ctx context.Context) (*store.Txn, error)
}

type conn struct {
	r   *bufio.Reader
	w   *bufio.Writer
	buf [8]byte
}

func (c *conn) u64() (uint64, error) {
	if _, err := io.ReadFull(c.r, c.buf[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(c.buf[:]), nil
}

func (c *conn) str(what string) (string, error) {
	n, err := c.u64()
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	if n > maxString {
		return "", fmt.Errorf("%s of %d bytes is longer than the %d allowed", what, n, maxString)
	}
	b := make([]byte, n+(8-n%8)%8)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return string(b[:n]), nil
}

func (c *conn) strs(what string) ([]string, error) {
	n, err := c.u64()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if n > maxList {
		return nil, fmt.Errorf("%d %s, more than the %d allowed", n, what, maxList)
	}
	out := make([]string, 0, min(n, 1024))
	for i := uint64(0); i < n; i++ {
		s, err := c.str(what)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (c *conn) paths(what string) ([]storepath.Path, error) {
	ss, err := c.strs(what)
	if err != nil {
		return nil, err
	}
	out := make([]storepath.Path, 0, len(ss))
	for _, s := range ss {
		p, err := storepath.Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// skipStr reads a string and throws it away.
func (c *conn) skipStr(what string) error {
	n, err := c.u64()
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if n > maxSkipped {
		return fmt.Errorf("%s of %d bytes is longer than the %d allowed", what, n, maxSkipped)
	}
	if _, err := io.CopyN(io.Discard, c.r, int64(n+(8-n%8)%8)); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return nil
}

// skipStrs reads a list of n strings, or of n (key, value) pairs and so on:
// per is the strings of each element.
func (c *conn) skipStrs(what string, per int) error {
	n, err := c.u64()
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if n > maxList {
		return fmt.Errorf("%d %s, more than the %d allowed", n, what, maxList)
	}
	for i := uint64(0); i < n*uint64(per); i++ {
		if err := c.skipStr(what); err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) skipU64s(n int, what string) error {
	for range n {
		if _, err := c.u64(); err != nil {
			return fmt.Errorf("read %s: %w", what, err)
		}
	}
	return nil
}

func (c *conn) putU64(n uint64) {
	binary.LittleEndian.PutUint64(c.buf[:], n)
	c.w.Write(c.buf[:])
}

func (c *conn) putStr(s string) {
	c.putU64(uint64(len(s)))
	c.w.WriteString(s)
	c.w.Write(make([]byte, (8-len(s)%8)%8))
}

func (c *conn) putPaths(ps []storepath.Path) {
	c.putU64(uint64(len(ps)))
	for _, p := range ps {
		c.putStr(p.String())
	}
}

// Serve answers commands on r and w until the client hangs up. Errors go
// back the way Nix reports them: the caller prints the error on stderr and
// exits 1.
func (s *Server) Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	c := &conn{r: bufio.NewReaderSize(r, 256<<10), w: bufio.NewWriterSize(w, 256<<10)}
	m, err := c.u64()
	if err != nil {
		return fmt.Errorf("serve: read greeting: %w", err)
	}
	if m != magic1 {
		return errors.New("protocol mismatch (is this nix-store --serve's client?)")
	}
	c.putU64(magic2)
	c.putU64(Version)
	if err := c.w.Flush(); err != nil {
		return err
	}
	clientVersion, err := c.u64()
	if err != nil {
		return fmt.Errorf("serve: read client version: %w", err)
	}
	if clientVersion&0xff00 != 0x200 {
		return fmt.Errorf("the client speaks serve protocol %d.%d, roostd only 2.x: use a Nix that speaks 2.x (every Nix since 2.0 does)",
			clientVersion>>8, clientVersion&0xff)
	}
	// Both sides speak the lower version (Nix's BasicServerConnection::handshake).
	sess := &session{s: s, c: c, minor: min(clientVersion&0xff, Version&0xff)}
	defer sess.close()
	for {
		cmd, err := c.u64()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := sess.command(ctx, cmd); err != nil {
			return err
		}
		if err := c.w.Flush(); err != nil {
			return err
		}
	}
}

// session is one client's connection. Its store session holds what the
// client sent from gc; the store's writer lock is taken only to commit,
// never while the client is being read, so a stalled client holds up no
// other writer.
type session struct {
	s     *Server
	c     *conn
	minor uint64
	store *store.Session
}

func (ss *session) writer() (*store.Session, error) {
	if !ss.s.Write {
		return nil, errors.New("importing paths is not allowed (nix-store --serve without --write)")
	}
	if ss.store == nil {
		w, err := ss.s.Store.NewSession(ss.s.Lock)
		if err != nil {
			return nil, err
		}
		ss.store = w
	}
	return ss.store, nil
}

func (ss *session) close() {
	if ss.store != nil {
		ss.store.Close()
	}
}

func (ss *session) command(ctx context.Context, cmd uint64) error {
	s, c, minor := ss.s, ss.c, ss.minor
	switch cmd {
	case cmdQueryValidPaths:
		if _, err := c.u64(); err != nil { // lock
			return err
		}
		if _, err := c.u64(); err != nil { // substitute: a router has no substituters
			return err
		}
		ps, err := c.paths("paths")
		if err != nil {
			return err
		}
		reg, err := s.Store.Registry()
		if err != nil {
			return err
		}
		var valid []storepath.Path
		for _, p := range ps {
			if _, ok := reg.Get(p); ok {
				valid = append(valid, p)
			}
		}
		c.putPaths(valid)
	case cmdQueryPathInfos:
		ps, err := c.paths("paths")
		if err != nil {
			return err
		}
		reg, err := s.Store.Registry()
		if err != nil {
			return err
		}
		for _, p := range ps {
			info, ok := reg.Get(p)
			if !ok {
				continue
			}
			c.putStr(p.String())
			deriver := ""
			if info.Deriver != "" {
				deriver = info.Deriver.String()
			}
			c.putStr(deriver)
			c.putPaths(info.References)
			c.putU64(info.NarSize) // download size
			c.putU64(info.NarSize)
			if minor >= 4 {
				c.putStr(info.NarHash.String()) // sha256:<nix32>: the client wants the prefix
				c.putStr("")                    // content address
				// Nix 2.34 and later parse each signature and drop the
				// connection on one that is not name:base64, which older
				// clients may have sent: such a one verifies nothing.
				var sigs []string
				for _, sig := range info.Signatures {
					if wellFormedSignature(sig) {
						sigs = append(sigs, sig)
					}
				}
				c.putU64(uint64(len(sigs)))
				for _, sig := range sigs {
					c.putStr(sig)
				}
			}
		}
		c.putStr("")
	case cmdDumpStorePath:
		ps, err := c.str("path")
		if err != nil {
			return err
		}
		p, err := storepath.Parse(ps)
		if err != nil {
			return err
		}
		reg, err := s.Store.Registry()
		if err != nil {
			return err
		}
		return s.Store.Dump(c.w, reg, p)
	case cmdImportPaths:
		w, err := ss.writer()
		if err != nil {
			return err
		}
		res, err := w.ImportExport(ctx, c.r, nil)
		if err != nil {
			return err
		}
		s.Log.Info("serve: imported", "paths", len(res.Added))
		c.putU64(1)
	case cmdExportPaths:
		if _, err := c.u64(); err != nil { // obsolete
			return err
		}
		ps, err := c.paths("paths")
		if err != nil {
			return err
		}
		return s.export(c, ps)
	case cmdQueryClosure:
		if _, err := c.u64(); err != nil { // include outputs: there are no derivations here
			return err
		}
		ps, err := c.paths("paths")
		if err != nil {
			return err
		}
		reg, err := s.Store.Registry()
		if err != nil {
			return err
		}
		var out []storepath.Path
		for p := range store.Closure(reg, ps) {
			if _, ok := reg.Get(p); ok {
				out = append(out, p)
			}
		}
		c.putPaths(registry.TopoSort(nil, out))
	case cmdAddToStoreNar:
		return ss.addToStoreNar(ctx)
	case cmdBuildPaths:
		// Read the whole request, then answer as a failed build, so the
		// client shows the reason and the connection stays usable.
		if err := c.skipStrs("paths to build", 1); err != nil {
			return err
		}
		if err := ss.skipBuildOptions(); err != nil {
			return err
		}
		s.Log.Info("serve: refused a build")
		c.putU64(statusMiscFailure)
		c.putStr(noBuilds)
	case cmdBuildDerivation:
		if err := c.skipStr("derivation path"); err != nil {
			return err
		}
		if err := skipDerivation(c); err != nil {
			return err
		}
		if err := ss.skipBuildOptions(); err != nil {
			return err
		}
		s.Log.Info("serve: refused a build")
		ss.putFailedBuildResult(noBuilds)
	default:
		return fmt.Errorf("unknown serve command %d", cmd)
	}
	return nil
}

// skipBuildOptions reads the build options of BuildPaths and
// BuildDerivation as the negotiated version has them.
func (ss *session) skipBuildOptions() error {
	n := 2 // maxSilentTime, buildTimeout
	if ss.minor >= 2 {
		n++ // maxLogSize
	}
	if ss.minor >= 3 {
		n += 2 // nrRepeats, enforceDeterminism
	}
	if ss.minor >= 7 {
		n++ // keepFailed
	}
	return ss.c.skipU64s(n, "build options")
}

// skipDerivation reads a BasicDerivation as the client writes it
// (src/libstore/derivation/aterm.cc, derivation::write): outputs (name,
// path, hash algorithm, hash), input sources, platform, builder,
// arguments, environment.
func skipDerivation(c *conn) error {
	if err := c.skipStrs("derivation outputs", 4); err != nil {
		return err
	}
	if err := c.skipStrs("derivation inputs", 1); err != nil {
		return err
	}
	if err := c.skipStr("derivation platform"); err != nil {
		return err
	}
	if err := c.skipStr("derivation builder"); err != nil {
		return err
	}
	if err := c.skipStrs("derivation arguments", 1); err != nil {
		return err
	}
	return c.skipStrs("derivation environment", 2)
}

// putFailedBuildResult writes a BuildResult that failed with msg, with
// the fields of the negotiated version.
func (ss *session) putFailedBuildResult(msg string) {
	c := ss.c
	c.putU64(statusMiscFailure)
	c.putStr(msg)
	if ss.minor >= 3 {
		c.putU64(0) // timesBuilt
		c.putU64(0) // isNonDeterministic
		c.putU64(0) // startTime
		c.putU64(0) // stopTime
	}
	if ss.minor >= 6 {
		c.putU64(0) // no built outputs
	}
}

// wellFormedSignature is what Nix's Signature::parse accepts: a name, a
// colon, non-empty base64.
func wellFormedSignature(s string) bool {
	name, b64, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && len(b) > 0
}

func (ss *session) addToStoreNar(ctx context.Context) error {
	s, c := ss.s, ss.c
	ps, err := c.str("path")
	if err != nil {
		return err
	}
	p, err := storepath.Parse(ps)
	if err != nil {
		return err
	}
	deriverS, err := c.str("deriver")
	if err != nil {
		return err
	}
	hashS, err := c.str("NAR hash")
	if err != nil {
		return err
	}
	hash, err := nixhash.ParseSHA256(hashS)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	refs, err := c.paths("references")
	if err != nil {
		return err
	}
	if _, err := c.u64(); err != nil { // registration time: ours is when we register
		return err
	}
	size, err := c.u64()
	if err != nil {
		return err
	}
	if _, err := c.u64(); err != nil { // ultimate
		return err
	}
	sigs, err := c.strs("signatures")
	if err != nil {
		return err
	}
	if _, err := c.str("content address"); err != nil {
		return err
	}
	if size == 0 || size > maxNARSize {
		return fmt.Errorf("%s: NAR size %d is not acceptable", p, size)
	}
	info := registry.Info{Path: p, References: refs, Signatures: sigs}
	if deriverS != "" {
		if info.Deriver, err = storepath.Parse(deriverS); err != nil {
			return err
		}
	}
	w, err := ss.writer()
	if err != nil {
		return err
	}
	reg, err := s.Store.Registry()
	if err != nil {
		return err
	}
	if _, ok := reg.Get(p); ok {
		// Already here: read the NAR through and keep what we have.
		if err := nar.Parse(io.LimitReader(c.r, int64(size)), nar.Discard{}, int64(size)); err != nil {
			return err
		}
		if err := w.Hold(p); err != nil {
			return err
		}
	} else {
		st, err := w.Restore(c.r, store.Expect{Path: p, NarHash: &hash, NarSize: size})
		if err != nil {
			return err
		}
		if _, err := w.Commit(ctx, []store.Item{{Staged: st, Info: info}}); err != nil {
			return err
		}
		s.Log.Info("serve: added", "path", p, "narSize", size)
	}
	c.putU64(1)
	return nil
}

// export writes the paths (references first) as a nix-store --export stream.
func (s *Server) export(c *conn, ps []storepath.Path) error {
	reg, err := s.Store.Registry()
	if err != nil {
		return err
	}
	infos := map[storepath.Path]*registry.Info{}
	for _, p := range ps {
		info, ok := reg.Get(p)
		if !ok {
			return fmt.Errorf("export %s: %w", p, store.ErrNotValid)
		}
		infos[p] = info
	}
	for _, p := range registry.TopoSort(infos, ps) {
		nixexport.WriteNext(c.w, true)
		if err := s.Store.Dump(c.w, reg, p); err != nil {
			return err
		}
		info := infos[p]
		if err := nixexport.WriteTrailer(c.w, nixexport.Trailer{Path: p, References: info.References, Deriver: info.Deriver}); err != nil {
			return err
		}
	}
	return nixexport.WriteNext(c.w, false)
}
