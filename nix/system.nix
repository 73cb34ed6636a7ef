# mkSystem: a roost system, the store path a router runs (DESIGN.md):
#
#   bin/roostd              link into roostd's store path
#   etc/roost/config.json   the config, written from Nix, checked by roostd
#   board                   the board's name
#   kernel, initrd          links to the images (boards that boot them)
#   cmdline                 the board's kernel parameters and kernelParams
#   modules                 the kernel modules to load at boot: their store
#                           paths and parameters, one a line, in order
#   activate                run on activation (a copy: it runs below any root)
#   dtbs                    link to the device tree blobs (boards whose U-Boot
#                           boots a device tree: roost image takes the board's
#                           boot.deviceTree from here)
#
# The config is checked at build time by `roostd config check --board`:
# a bad config fails the build with roostd's message, each problem with
# its JSON path.
{ boards, go, roostdFor, defaults }:

{ board
, config
, # roostd: a prebuilt static binary, or a folder (derivation) with
  # bin/roostd. null: cross-built from source with pkgs.
  roostd ? null
, kernel ? null
, initrd ? null
, modules ? [ ]        # kernel module files (.ko), or { file; params; }, in load order
, activate ? null      # a script
, dtbs ? null          # a folder of .dtb files as `make dtbs_install` lays it out
, kernelParams ? [ ]   # more kernel parameters, after the board's
, # the roostd that checks the config at build time: it must run on the
  # build machine.
  checker ? null
, # nixpkgs, to build what is not given (roostd, busybox); optional.
  pkgs ? defaults.pkgs
, # the shell the build runs with: a static busybox binary.
  busybox ? (if defaults.busybox != null then defaults.busybox
             else if pkgs != null then "${pkgs.pkgsStatic.busybox}/bin/busybox"
             else "/bin/busybox")
, version ? "dev"
, name ? "roost-system-${config.hostname or board}"
, # the build machine's Nix system (x86_64-linux …)
  system ? (if pkgs != null then pkgs.buildPlatform.system
            else if builtins ? currentSystem then builtins.currentSystem
            else throw "roost.lib.mkSystem: pass system = \"x86_64-linux\" (the build machine's): pure evaluation does not know it")
}:
let
  b = go.board board;
  needs = part: builtins.elem part b.needs;

  # A prebuilt input: a path (imported into the store with builtins.path),
  # a store path or a derivation (used as it is), or a string naming a
  # file outside the store (imported like a path).
  input = what: x:
    let
      inStore = builtins.substring 0 (builtins.stringLength builtins.storeDir + 1) x == builtins.storeDir + "/";
    in
    if builtins.isPath x then builtins.path { path = x; name = what; }
    else if builtins.isAttrs x then x
    else if !builtins.isString x then
      throw "roost.lib.mkSystem: ${what} must be a path, a store path or a derivation, not a ${builtins.typeOf x}"
    else if builtins.hasContext x then x
    else if inStore then builtins.storePath x
    else if builtins.substring 0 1 x == "/" then builtins.path { path = /. + x; name = what; }
    else throw "roost.lib.mkSystem: ${what} \"${x}\" is not an absolute path: pass a path (./${x}) or an absolute one";

  # A line of the modules list roostd init reads (agent/boot): the
  # module's store path and its parameters. m is a file, or
  # { file; params; }.
  moduleLine = m:
    let
      file = if builtins.isAttrs m && m ? file then m.file else m;
      params = if builtins.isAttrs m && (m.params or "") != "" then " ${m.params}" else "";
      n = baseNameOf (toString file);
      name = if builtins.match "[0-9a-z]{32}-.*" n != null then builtins.substring 33 (-1) n else n;
    in
    "${input name file}${params}\n";

  # An image the board may need: kernel or initrd.
  image = part: x:
    if x != null then input part x
    else if needs part then
      throw "roost.lib.mkSystem: board ${board} needs ${part}: pass ${part} = <path to the ${part} image>"
    else null;

  agent =
    if roostd != null then input "roostd" roostd
    else if pkgs != null then roostdFor { inherit pkgs board version; }
    else throw "roost.lib.mkSystem: no roostd: pass roostd = <a static roostd for ${b.goarch}>, or pass pkgs = import <nixpkgs> { } to build it from source";

  check =
    if checker != null then input "roostd-checker" checker
    else if roostd == null && pkgs != null then roostdFor { inherit pkgs version; board = null; }
    else if go.runsOn board system then agent
    else throw "roost.lib.mkSystem: roostd for board ${board} (${b.goarch}) cannot run on ${system} to check the config: pass checker = <a roostd for this machine>";

  cfg = { inherit board; } // config;
in
derivation {
  inherit name system;
  builder = busybox;
  args = [ "sh" "-e" ./system.sh ];
  inherit busybox board;
  roostd = agent;
  checker = check;
  kernel = image "kernel" kernel;
  initrd = image "initrd" initrd;
  modulesList = builtins.concatStringsSep "" (map moduleLine modules);
  activate = if activate == null then null else input "activate" activate;
  dtbs = if dtbs == null then null else input "dtbs" dtbs;
  cmdline = builtins.concatStringsSep " " (b.cmdline ++ kernelParams);
  writeCmdline = needs "cmdline" || kernel != null;
  configJSON = builtins.toJSON cfg;
  passAsFile = [ "configJSON" "modulesList" ];
}
