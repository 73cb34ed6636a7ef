# roost's build, test and benchmark targets. README.md and .ci/run use them.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# A count, not a time: a time-bounded run can fail with "context deadline
# exceeded" when the deadline falls in the fuzzer's own bookkeeping.
FUZZTIME ?= 10000x

# Debian packages the tests and benchmarks use (squashfs-tools, mtd-utils
# and e2fsprogs: roost image's mksquashfs, ubinize and mke2fs; u-boot-tools,
# device-tree-compiler and lzma-alone: its mkimage and dumpimage, dtc,
# fdtput and fdtget, and the LZMA SDK encoder for U-Boot's uImage and FIT).
DEBIAN_PACKAGES := nix-bin busybox-static zstd iproute2 gcc git ca-certificates openssh-client openssh-server util-linux iputils-ping nftables nmap kea-dhcp4-server kea-dhcp6-server ndisc6 dhcpcd-base dnsmasq-base isc-dhcp-server isc-dhcp-client wide-dhcpv6-server nsd bind9-dnsutils dnsperf squashfs-tools mtd-utils e2fsprogs u-boot-tools device-tree-compiler lzma-alone

# What the VM tier (make vmtest) adds: QEMU, Debian's kernel, pppd and
# pppoe-server; QEMU's MIPS boards, for a router's kernel (below); mke2fs
# for the router VM's disk.
VM_PACKAGES := qemu-system-x86 linux-image-amd64 ppp pppoe qemu-system-mips e2fsprogs

# A router's kernel for the VM tier: Debian's MIPS 4kc-malta, unpacked here
# (not installed: another architecture) from the package that
# linux-image-4kc-malta:mipsel names. itest/vm (MIPSKernelDir) looks here.
MIPS_KERNEL_DIR := /var/cache/roost-vm/mipsel

# Debian's armmp zImage and its device trees, for updater/kexec's tests of
# the ARM loader (no VM: QEMU's ARM boards are not installed). Fetched with
# apt lists of their own, so the host's dpkg gains no architecture.
ARM_KERNEL_DIR := /var/cache/roost-vm/armhf

# Where build puts roostd and roost for the lab and the benchmarks: inside
# itest, which owns those commands (git ignores it).
BIN := itest/bin

.PHONY: build deps vmdeps test lint unit itest vmtest fuzz bench cross lab lab-down clean

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./agent/cmd/roostd ./hosttool/cmd/roost

# deps installs what is missing, so it is quick when nothing is.
deps:
	@command -v $(GO) >/dev/null || { echo "Go is not installed: install Go 1.26 or newer and put it in PATH"; exit 1; }
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

vmdeps: deps
	@missing=""; for p in $(VM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@set -e; if ! ls $(MIPS_KERNEL_DIR)/boot/vmlinuz-*-4kc-malta >/dev/null 2>&1; then \
		echo "unpacking Debian's MIPS 4kc-malta kernel into $(MIPS_KERNEL_DIR)"; \
		dpkg --print-foreign-architectures | grep -qx mipsel || dpkg --add-architecture mipsel; \
		apt-get update -qq; \
		pkg=$$(apt-cache depends linux-image-4kc-malta:mipsel | sed -n 's/^ *Depends: \(linux-image-[0-9].*-4kc-malta\)\(:mipsel\)\?$$/\1/p' | head -n 1); \
		[ -n "$$pkg" ] || { echo "no linux-image-*-4kc-malta for mipsel in apt's lists"; exit 1; }; \
		mkdir -p $(dir $(MIPS_KERNEL_DIR)); \
		tmp=$$(mktemp -d $(MIPS_KERNEL_DIR).XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
		(cd "$$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$$pkg:mipsel"); \
		dpkg-deb -x "$$tmp"/*.deb "$$tmp/root"; \
		rm -rf $(MIPS_KERNEL_DIR); mv "$$tmp/root" $(MIPS_KERNEL_DIR); \
	fi
	@set -e; if ! ls $(ARM_KERNEL_DIR)/boot/vmlinuz-*-armmp >/dev/null 2>&1; then \
		echo "unpacking Debian's armmp zImage and device trees into $(ARM_KERNEL_DIR)"; \
		mkdir -p $(dir $(ARM_KERNEL_DIR)); \
		tmp=$$(mktemp -d $(ARM_KERNEL_DIR).XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
		mkdir -p "$$tmp/lists/partial" "$$tmp/cache/archives/partial"; \
		apt="-o Dir::State::Lists=$$tmp/lists -o Dir::Cache=$$tmp/cache -o Dir::State::status=/dev/null -o APT::Architectures::=armhf -o APT::Architecture=armhf -o APT::Sandbox::User=root"; \
		apt-get $$apt update -qq; \
		pkg=$$(apt-cache $$apt depends linux-image-armmp:armhf | sed -n 's/^ *Depends: \(linux-image-[0-9].*-armmp\)\(:armhf\)\?$$/\1/p' | head -n 1); \
		[ -n "$$pkg" ] || { echo "no linux-image-*-armmp for armhf in apt's lists"; exit 1; }; \
		(cd "$$tmp" && apt-get $$apt download -qq "$$pkg:armhf"); \
		dpkg-deb -x "$$tmp"/*.deb "$$tmp/root"; \
		mkdir -p "$$tmp/keep/boot" "$$tmp/keep/usr/lib"; \
		cp "$$tmp"/root/boot/vmlinuz-* "$$tmp"/root/boot/config-* "$$tmp/keep/boot/"; \
		cp -r "$$tmp"/root/usr/lib/linux-image-* "$$tmp/keep/usr/lib/"; \
		rm -rf $(ARM_KERNEL_DIR); mv "$$tmp/keep" $(ARM_KERNEL_DIR); \
	fi

# test is the README's test command and what CI runs.
test: deps vmdeps lint cross fuzz unit itest vmtest

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	CGO_ENABLED=0 $(GO) vet ./...
	CGO_ENABLED=0 $(GO) run $(STATICCHECK) ./...

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 $$($(GO) list ./... | grep -v /itest)

# itest runs on the host's kernel; the tests named …InVM are vmtest's.
itest:
	CGO_ENABLED=0 $(GO) test -count=1 -v -timeout 30m -skip 'InVM$$' ./itest/... 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+)' ; exit $${PIPESTATUS[0]}

# vmtest runs the tests that need a kernel of their own (PPP, 802.1Q) in
# QEMU with Debian's kernel, and roostd on a router's MIPS kernel (itest/vm).
vmtest: vmdeps build
	CGO_ENABLED=0 $(GO) test -count=1 -v -timeout 45m -run 'InVM$$' ./itest/ 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+)' ; exit $${PIPESTATUS[0]}

# fuzz runs every fuzz target for FUZZTIME (make fuzz FUZZTIME=10m for a long run).
# A run that fails without writing a failing input is the fuzzer's own
# hiccup, not a finding: it is retried once, and said so.
fuzz:
	@set -e; for f in $$(git grep -l '^func Fuzz' -- '*_test.go'); do \
		pkg=./$$(dirname $$f); \
		for name in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
			echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
			for try in 1 2; do \
				if CGO_ENABLED=0 $(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg >/tmp/roost-fuzz.log 2>&1; then break; fi; \
				if grep -q 'Failing input written' /tmp/roost-fuzz.log || [ $$try = 2 ]; then cat /tmp/roost-fuzz.log; exit 1; fi; \
				echo "  the fuzzer failed without a failing input (its own hiccup): running it once more"; \
			done; \
		done; \
	done

# cross builds roostd for every board's Go target, each once: the list is
# boards/boards.json's, through roostd boards --targets (GOARCH and GOMIPS
# or GOARM, a tab, the boards). The roostd that prints it is built for this
# machine as the board target of the same architecture is, so it costs no
# build of its own.
cross:
	@set -o pipefail; CGO_ENABLED=0 $(GO) run ./agent/cmd/roostd boards --targets | \
	while IFS=$$'\t' read -r target boards; do \
		env CGO_ENABLED=0 GOOS=linux $$target $(GO) build -o /dev/null ./agent/cmd/roostd || exit 1; \
		echo "built roostd for $$target ($$boards)"; \
	done

# BENCH=mips (or store, agent, …, ota: itest/cmd/bench --only) runs one
# table; the mips one boots the MIPS VM (sizes, idle RSS, image upgrade).
bench: deps vmdeps build
	CGO_ENABLED=0 $(GO) run ./itest/cmd/bench --bin $(BIN) $(if $(BENCH),--only $(BENCH))

# lab: an ISP, the router (roostd) and a LAN host in network namespaces, and
# a rebuild to the router from the LAN host. lab-down removes it all.
# WAN=dhcp (kea at the ISP, the default), WAN=static, or WAN=pppoe (in the
# QEMU test bed: needs make vmdeps). ROUTER=ns (roostd in a namespace, the
# default) or ROUTER=vm (a QEMU VM booting its own disk). make lab on a lab
# that is up rebuilds the router with the freshly built roostd.
WAN ?= dhcp
ROUTER ?= ns
lab: deps build $(if $(filter pppoe,$(WAN)),vmdeps) $(if $(filter vm,$(ROUTER)),vmdeps)
	CGO_ENABLED=0 $(GO) run ./itest/cmd/lab up --dir .lab --bin $(BIN) --wan $(WAN) --router $(ROUTER)

lab-down:
	CGO_ENABLED=0 $(GO) run ./itest/cmd/lab down --dir .lab

clean:
	rm -rf $(BIN)
