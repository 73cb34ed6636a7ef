# roost's Nix library: systems for roost's boards (docs/nix.md).
#
#   with import ./nix { };            # prebuilt inputs only, no nixpkgs
#   mkSystem { board = "qemu-x86_64"; config = { services = { ... }; };
#              roostd = ./roostd; kernel = ./bzImage; initrd = ./initrd; }
#
#   mkSystem { pkgs = import <nixpkgs> { }; board = "qemu-mipsel"; ... }
#                                     # roostd cross-built by buildGoModule
#
# Without nixpkgs every input must be prebuilt and the build runs with a
# static busybox alone, which Nix's sandbox must hold (sandbox-paths =
# /bin/busybox). pkgs and busybox here are mkSystem's defaults.
{ pkgs ? null, busybox ? null }:
let
  boards = import ./boards.nix;
  go = import ./go.nix { inherit boards; };
  roostd = import ./roostd.nix { inherit go; };
in
{
  # boards.NAME: boards/boards.json, the data roostd embeds.
  inherit boards;
  # goEnv NAME: GOOS, GOARCH, GOMIPS, GOARM and CGO_ENABLED for the board.
  inherit (go) goEnv;
  # The Go source roostd is built from, and the hash of its vendored modules.
  inherit (roostd) source vendorHash;
  # roostdFor { pkgs; board; version ? "dev"; }: roostd cross-built for
  # board by nixpkgs' buildGoModule (board = null: for the build machine).
  inherit (roostd) roostdFor;
  # mkSystem { board; config; roostd; kernel; initrd; … }: a system.
  mkSystem = import ./system.nix {
    inherit boards go;
    inherit (roostd) roostdFor;
    defaults = { inherit pkgs busybox; };
  };
}
