# The builder of mkSystem (system.nix), run by busybox sh: the config is
# checked before anything is written, so a bad one fails the build with
# roostd's own message.
B=$busybox
bin() { if [ -d "$1" ]; then echo "$1/bin/roostd"; else echo "$1"; fi; }

check=$(bin "$checker")
$B mkdir -p etc/roost
$B cp "$configJSONPath" etc/roost/config.json
echo "$check config check etc/roost/config.json --board $board"
"$check" config check etc/roost/config.json --board "$board" || {
	status=$?
	if [ $status -ge 126 ]; then
		echo "roost.lib.mkSystem: $check cannot run here: the checker must be a static roostd (CGO_ENABLED=0) for the build machine" >&2
	fi
	exit $status
}

$B mkdir -p "$out/etc/roost" "$out/bin"
$B cp etc/roost/config.json "$out/etc/roost/config.json"
$B chmod 444 "$out/etc/roost/config.json"
$B ln -s "$(bin "$roostd")" "$out/bin/roostd"
echo "$board" > "$out/board"
if [ -n "$kernel" ]; then $B ln -s "$kernel" "$out/kernel"; fi
if [ -n "$initrd" ]; then $B ln -s "$initrd" "$out/initrd"; fi
if [ -n "$dtbs" ]; then $B ln -s "$dtbs" "$out/dtbs"; fi
if [ -n "$writeCmdline" ]; then echo "$cmdline" > "$out/cmdline"; fi
if [ -s "$modulesListPath" ]; then $B cp "$modulesListPath" "$out/modules"; fi
if [ -n "$activate" ]; then
	$B cp "$activate" "$out/activate"
	$B chmod 555 "$out/activate"
fi
