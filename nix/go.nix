# Go's view of the boards: the environment that builds roostd for each.
{ boards }:
let
  board = name:
    if boards ? ${name} then boards.${name}
    else throw "roost: unknown board \"${name}\" (known: ${builtins.concatStringsSep ", " (builtins.attrNames boards)})";

  # What a Nix system name's CPU is in GOARCH terms, to tell whether a
  # roostd built for a board runs on the build machine.
  nixCPU = {
    amd64 = "x86_64"; arm64 = "aarch64"; mips = "mips"; mipsle = "mipsel";
  };
in
{
  inherit board;

  # goEnv name: GOOS, GOARCH, GOMIPS and GOARM (as the board has them) and
  # CGO_ENABLED=0, as the environment of go build.
  goEnv = name:
    let b = board name; in
    { GOOS = "linux"; GOARCH = b.goarch; CGO_ENABLED = "0"; }
    // (if b ? gomips then { GOMIPS = b.gomips; } else { })
    // (if b ? goarm then { GOARM = b.goarm; } else { });

  # runsOn name system: whether a roostd for board name runs on a machine
  # of Nix system (x86_64-linux …). 32-bit ARM is never assumed to.
  runsOn = name: system:
    let b = board name; in
    (nixCPU ? ${b.goarch}) && system == "${nixCPU.${b.goarch}}-linux";
}
