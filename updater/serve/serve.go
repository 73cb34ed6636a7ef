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
	"slices"
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

// u64s reads consecutive integers into vs.
func (c *conn) u64s(vs ...*uint64) error {
	for _, v := range vs {
		n, err := c.u64()
		if err != nil {
			return err
		}
		*v = n
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
	minor, err := handshake(c)
	if err != nil {
		return err
	}
	sess := &session{s: s, c: c, minor: minor}
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

// handshake reads the client's magic, answers with the server's magic and
// version, and reads the client's version, which must be 2.x. It returns
// the minor version both sides then speak: the lower of the two (Nix's
// BasicServerConnection::handshake).
func handshake(c *conn) (minor uint64, err error) {
	m, err := c.u64()
	if err != nil {
		return 0, fmt.Errorf("serve: read greeting: %w", err)
	}
	if m != magic1 {
		return 0, errors.New("protocol mismatch (is this nix-store --serve's client?)")
	}
	c.putU64(magic2)
	c.putU64(Version)
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	clientVersion, err := c.u64()
	if err != nil {
		return 0, fmt.Errorf("serve: read client version: %w", err)
	}
	if clientVersion&0xff00 != 0x200 {
		return 0, fmt.Errorf("the client speaks serve protocol %d.%d, roostd only 2.x: use a Nix that speaks 2.x (every Nix since 2.0 does)",
			clientVersion>>8, clientVersion&0xff)
	}
	return min(clientVersion&0xff, Version&0xff), nil
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

// command reads the arguments of one command and writes its answer; the
// caller flushes. An error ends the connection.
func (ss *session) command(ctx context.Context, cmd uint64) error {
	switch cmd {
	case cmdQueryValidPaths:
		return ss.queryValidPaths()
	case cmdQueryPathInfos:
		return ss.queryPathInfos()
	case cmdDumpStorePath:
		return ss.dumpStorePath()
	case cmdImportPaths:
		return ss.importPaths(ctx)
	case cmdExportPaths:
		return ss.exportPaths()
	case cmdQueryClosure:
		return ss.queryClosure()
	case cmdAddToStoreNar:
		return ss.addToStoreNar(ctx)
	case cmdBuildPaths:
		return ss.buildPaths()
	case cmdBuildDerivation:
		return ss.buildDerivation()
	}
	return fmt.Errorf("unknown serve command %d", cmd)
}

// queryValidPaths reads a lock flag, a substitute flag (a router has no
// substituters) and paths; it answers with those of them that are valid.
func (ss *session) queryValidPaths() error {
	c := ss.c
	if _, err := c.u64(); err != nil { // lock
		return err
	}
	if _, err := c.u64(); err != nil { // substitute
		return err
	}
	ps, err := c.paths("paths")
	if err != nil {
		return err
	}
	reg, err := ss.s.Store.Registry()
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
	return nil
}

// queryPathInfos reads paths and answers with the info of each valid one,
// as the negotiated version has it, then an empty string.
func (ss *session) queryPathInfos() error {
	ps, err := ss.c.paths("paths")
	if err != nil {
		return err
	}
	reg, err := ss.s.Store.Registry()
	if err != nil {
		return err
	}
	for _, p := range ps {
		if info, ok := reg.Get(p); ok {
			ss.putPathInfo(info)
		}
	}
	ss.c.putStr("")
	return nil
}

// putPathInfo writes a path's info: path, deriver, references, download
// and NAR size; from 2.4 the NAR hash, content address and signatures.
func (ss *session) putPathInfo(info *registry.Info) {
	c := ss.c
	c.putStr(info.Path.String())
	deriver := ""
	if info.Deriver != "" {
		deriver = info.Deriver.String()
	}
	c.putStr(deriver)
	c.putPaths(info.References)
	c.putU64(info.NarSize) // download size
	c.putU64(info.NarSize)
	if ss.minor < 4 {
		return
	}
	c.putStr(info.NarHash.String()) // sha256:<nix32>: the client wants the prefix
	c.putStr("")                    // content address
	// Nix 2.34 and later parse each signature and drop the connection on
	// one that is not name:base64, which older clients may have sent:
	// such a one verifies nothing.
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

// dumpStorePath reads a path and answers with its NAR.
func (ss *session) dumpStorePath() error {
	ps, err := ss.c.str("path")
	if err != nil {
		return err
	}
	p, err := storepath.Parse(ps)
	if err != nil {
		return err
	}
	reg, err := ss.s.Store.Registry()
	if err != nil {
		return err
	}
	return ss.s.Store.Dump(ss.c.w, reg, p)
}

// importPaths reads a nix-store --export stream, registers its paths and
// answers 1.
func (ss *session) importPaths(ctx context.Context) error {
	w, err := ss.writer()
	if err != nil {
		return err
	}
	res, err := w.ImportExport(ctx, ss.c.r, nil)
	if err != nil {
		return err
	}
	ss.s.Log.Info("serve: imported", "paths", len(res.Added))
	ss.c.putU64(1)
	return nil
}

// exportPaths reads an obsolete flag and paths, and answers with them as
// a nix-store --export stream.
func (ss *session) exportPaths() error {
	if _, err := ss.c.u64(); err != nil { // obsolete
		return err
	}
	ps, err := ss.c.paths("paths")
	if err != nil {
		return err
	}
	return ss.s.export(ss.c, ps)
}

// queryClosure reads an include-outputs flag (there are no derivations
// here) and paths, and answers with the valid paths of their closure, in
// the order of Nix's StorePathSet: sorted.
func (ss *session) queryClosure() error {
	if _, err := ss.c.u64(); err != nil { // include outputs
		return err
	}
	ps, err := ss.c.paths("paths")
	if err != nil {
		return err
	}
	reg, err := ss.s.Store.Registry()
	if err != nil {
		return err
	}
	var out []storepath.Path
	for p := range store.Closure(reg, ps) {
		if _, ok := reg.Get(p); ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	ss.c.putPaths(out)
	return nil
}

// buildPaths reads the whole request (paths, build options), then answers
// as a failed build, so the client shows the reason and the connection
// stays usable.
func (ss *session) buildPaths() error {
	if err := ss.c.skipStrs("paths to build", 1); err != nil {
		return err
	}
	if err := ss.skipBuildOptions(); err != nil {
		return err
	}
	ss.s.Log.Info("serve: refused a build")
	ss.c.putU64(statusMiscFailure)
	ss.c.putStr(noBuilds)
	return nil
}

// buildDerivation reads the whole request (derivation path, derivation,
// build options), then answers with a failed BuildResult.
func (ss *session) buildDerivation() error {
	if err := ss.c.skipStr("derivation path"); err != nil {
		return err
	}
	if err := skipDerivation(ss.c); err != nil {
		return err
	}
	if err := ss.skipBuildOptions(); err != nil {
		return err
	}
	ss.s.Log.Info("serve: refused a build")
	ss.putFailedBuildResult(noBuilds)
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

// addToStoreNar reads a path's info and its NAR, registers it (or reads
// the NAR through if the path is already valid, keeping what is there) and
// answers 1.
func (ss *session) addToStoreNar(ctx context.Context) error {
	info, err := ss.readAddToStoreNar()
	if err != nil {
		return err
	}
	size := info.NarSize
	w, err := ss.writer()
	if err != nil {
		return err
	}
	reg, err := ss.s.Store.Registry()
	if err != nil {
		return err
	}
	if _, ok := reg.Get(info.Path); ok {
		if err := nar.Parse(io.LimitReader(ss.c.r, int64(size)), nar.Discard{}, int64(size)); err != nil {
			return err
		}
		if err := w.Hold(info.Path); err != nil {
			return err
		}
	} else {
		st, err := w.Restore(ss.c.r, store.Expect{Path: info.Path, NarHash: &info.NarHash, NarSize: size})
		if err != nil {
			return err
		}
		if _, err := w.Commit(ctx, []store.Item{{Staged: st, Info: info}}); err != nil {
			return err
		}
		ss.s.Log.Info("serve: added", "path", info.Path, "narSize", size)
	}
	ss.c.putU64(1)
	return nil
}

// readAddToStoreNar reads AddToStoreNar's arguments up to the NAR: path,
// deriver, NAR hash, references, registration time (ours is when we
// register), NAR size, ultimate, signatures, content address.
func (ss *session) readAddToStoreNar() (info registry.Info, err error) {
	c := ss.c
	ps, err := c.str("path")
	if err != nil {
		return info, err
	}
	if info.Path, err = storepath.Parse(ps); err != nil {
		return info, err
	}
	deriver, err := c.str("deriver")
	if err != nil {
		return info, err
	}
	hash, err := c.str("NAR hash")
	if err != nil {
		return info, err
	}
	if info.NarHash, err = nixhash.ParseSHA256(hash); err != nil {
		return info, fmt.Errorf("%s: %w", info.Path, err)
	}
	if info.References, err = c.paths("references"); err != nil {
		return info, err
	}
	var regTime, ultimate uint64
	if err := c.u64s(&regTime, &info.NarSize, &ultimate); err != nil {
		return info, err
	}
	if info.Signatures, err = c.strs("signatures"); err != nil {
		return info, err
	}
	if _, err := c.str("content address"); err != nil {
		return info, err
	}
	if info.NarSize == 0 || info.NarSize > maxNARSize {
		return info, fmt.Errorf("%s: NAR size %d is not acceptable", info.Path, info.NarSize)
	}
	if deriver != "" {
		if info.Deriver, err = storepath.Parse(deriver); err != nil {
			return info, err
		}
	}
	return info, nil
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
