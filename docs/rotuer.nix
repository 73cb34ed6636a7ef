# rotuer, the lab's router, as a system of roost's Nix library: the
# config of docs/rotuer-dhcp.json (wan = "dhcp": DHCPv4, and DHCPv6 with a
# delegated prefix, from the ISP) or of docs/rotuer.json (wan = "static"),
# written in Nix. make lab builds it with itest/bin/roostd, through the
# .lab/rotuer.nix it writes:
#
#   import ./docs/rotuer.nix { roostd = ./itest/bin/roostd; authorizedKeys = [ "ssh-ed25519 …" ]; }
#
# and the VM lab (make lab ROUTER=vm) on board qemu-x86_64, with Debian's
# kernel, an initrd and the modules the system loads.
{ roost ? import ../nix { }
, roostd                 # a static roostd for the board (make build puts one in itest/bin)
, board ? "lab"
, wan ? "dhcp"           # or "static"
, authorizedKeys ? [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGg8pV3x3wG3Z0T8mH0Xc1r2q8yH0rX1yqJ9vQ4tq0Zk you@laptop" ]
, kernel ? null
, initrd ? null
, modules ? [ ]
, kernelParams ? [ ]
}:
let
  sysctl = values: { kind = "sysctl"; inherit values; };

  # The LAN: two ports in a bridge, 192.168.1.1/24.
  lan = {
    lan = { kind = "bridge"; name = "br-lan"; };
    lan0 = { kind = "link"; interface = "lan0"; bridge = "lan"; };
    lan1 = { kind = "link"; interface = "lan1"; bridge = "lan"; };
    lan-addr = { kind = "address"; link = "lan"; address = "192.168.1.1/24"; };
    forwarding = sysctl { "net.ipv4.ip_forward" = "1"; "net.ipv6.conf.all.forwarding" = "1"; };
  };
  zones = { wan = { services = [ "wan" ]; interfaces = [ "ppp0" ]; }; lan = { services = [ "lan" ]; }; };

  # Addresses from the ISP; the LAN gets IPv4 from the router's DHCP
  # server and IPv6 by SLAAC in a /64 of the delegated prefix.
  dhcp = lan // {
    wan = { kind = "link"; interface = "wan"; };
    wan-dhcp = { kind = "dhcp4-client"; link = "wan"; hostname = "rotuer"; };
    wan-dhcp6 = { kind = "dhcp6-client"; link = "wan"; prefixHint = 56; };
    default = { kind = "route"; link = "wan"; destination = "0.0.0.0/0"; gateway = { service = "wan-dhcp"; output = "router"; }; };
    lan-dhcp = {
      kind = "dhcp4-server"; link = "lan"; address = "lan-addr";
      pool = { start = "192.168.1.100"; end = "192.168.1.199"; };
      domain = "home.arpa";
    };
    lan-dns = {
      kind = "dns"; link = "lan"; hostname = "rotuer";
      upstreams = [ { service = "wan-dhcp"; } { service = "wan-dhcp6"; } ];
      leasesFrom = "lan-dhcp";
    };
    lan-ra = { kind = "ra"; link = "lan"; prefixFrom = "wan-dhcp6"; subnet = 1; };
    firewall = { kind = "firewall"; inherit zones; };
  };

  # Fixed addresses, a port forward to the LAN host and an IPv6 pinhole.
  static = lan // {
    wan = { kind = "link"; interface = "wan"; mtu = 1500; };
    wan-addr = { kind = "address"; link = "wan"; address = "192.0.2.2/24"; };
    wan-addr6 = { kind = "address"; link = "wan"; address = "2001:db8:0:1::2/64"; };
    lan-addr6 = { kind = "address"; link = "lan"; address = "fd00:1::1/64"; };
    default = { kind = "route"; link = "wan"; destination = "0.0.0.0/0"; gateway = "192.0.2.1"; after = [ "wan-addr" ]; };
    default6 = { kind = "route"; link = "wan"; destination = "::/0"; gateway = "2001:db8:0:1::1"; after = [ "wan-addr6" ]; };
    lan-dns = { kind = "dns"; link = "lan"; hostname = "rotuer"; upstreams = [ "192.0.2.53" "2001:db8::53" ]; };
    firewall = {
      kind = "firewall";
      inherit zones;
      forwards = [ { proto = "tcp"; port = 8080; to = "192.168.1.100"; toPort = 80; } ];
      allow6 = [ { to = "fd00:1::100/128"; proto = "tcp"; port = 80; } ];
    };
  };

  services =
    if wan == "dhcp" then dhcp
    else if wan == "static" then static
    else throw "rotuer.nix: wan = \"${wan}\": want \"dhcp\" or \"static\"";
in
roost.mkSystem {
  inherit board roostd kernel initrd modules kernelParams;
  config = {
    hostname = "rotuer";
    ssh = { listen = [ "192.168.1.1:22" ]; inherit authorizedKeys; };
    inherit services;
  };
}
