# The board data: boards/boards.json, the file roostd embeds, as an
# attribute set by name. One source of truth for Go and Nix.
let
  list = builtins.fromJSON (builtins.readFile ../boards/boards.json);
in
builtins.listToAttrs (map (b: { name = b.name; value = b; }) list)
