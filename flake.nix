{
  description = "roost: a router OS built from Nix, and its agent roostd";

  # No inputs: the library builds systems from prebuilt inputs without
  # nixpkgs. Pass mkSystem your nixpkgs (pkgs = import nixpkgs { … }) to
  # cross-build roostd from this source instead (docs/nix.md).
  outputs = { self }: {
    # roost.lib.mkSystem { board; config; roostd; kernel; initrd; … },
    # roost.lib.boards, roost.lib.goEnv, roost.lib.roostdFor.
    lib = import ./nix { };
  };
}
