# roostd from source with nixpkgs' buildGoModule: the path a router owner
# with nixpkgs takes. It cannot be built here (no nixpkgs offline): the
# itests evaluate it as far as it goes without nixpkgs (docs/nix.md).
{ go }:
rec {
  # The Go source: go.mod, go.sum, every .go file and what Go embeds, and
  # nothing else, so that docs or Nix edits do not rebuild roostd.
  source = builtins.path {
    name = "roost-source";
    path = ./..;
    filter = path: type:
      let
        rel = builtins.substring (builtins.stringLength (toString ./..) + 1) (-1) (toString path);
        base = baseNameOf path;
      in
      if type == "directory" then
        !(builtins.elem rel [ ".git" ".lab" "itest/bin" "nix" "docs" ])
      else
        builtins.elem rel [ "go.mod" "go.sum" "boards/boards.json" ]
        || builtins.match ".*\\.go" base != null;
  };

  # The hash of `go mod vendor` on source (buildGoModule's goModules). The
  # itest TestNixLibVendorHash recomputes it with go and nix hash path, and
  # says the new value when go.mod or go.sum changed.
  vendorHash = "sha256-N+NkbsHIXqv7eMnwaLT5ItemfUGlbRfbX7ryetNtqZo=";

  roostdFor =
    { pkgs
    , board ? null # null: for the build machine
    , version ? "dev"
    , buildGoModule ? (if pkgs == null then null else pkgs.buildGoModule) # must bring Go 1.26
    }:
    if buildGoModule == null then
      throw "roost: building roostd needs nixpkgs: import ./nix { pkgs = import <nixpkgs> { }; }, or pass a prebuilt roostd"
    else
      let
        # board = null: Go's own architecture, even from a cross pkgs.
        env = if board == null then { CGO_ENABLED = "0"; GOOS = "linux"; GOARCH = "$(go env GOHOSTARCH)"; } else go.goEnv board;
        exports = builtins.concatStringsSep " " (map (k: "${k}=${env.${k}}") (builtins.attrNames env));
      in
      buildGoModule {
        pname = if board == null then "roostd" else "roostd-${board}";
        inherit version vendorHash;
        src = source;
        subPackages = [ "agent/cmd/roostd" ];
        ldflags = [ "-s" "-w" "-X main.version=${version}" ];
        doCheck = false;
        # Go cross-compiles by itself: the board is only environment.
        # buildGoModule moves $GOPATH/bin/$GOOS_$GOARCH to $out/bin.
        preBuild = "export ${exports}";
        passthru = { inherit board env; };
      };
}
