# Petrel. `make test` runs every test (what CI runs); see README.md.
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^\#define PETREL_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' include/petrel.h | paste -sd.)
# The ABI's number: the soname is libpetrel.so.$(ABI_MAJOR), and it changes only when a function is
# removed or changes its signature (include/libpetrel.map, docs/c-api.md "Versions and the ABI").
ABI_MAJOR := 0
SONAME := libpetrel.so.$(ABI_MAJOR)
# libpetrel.so is built with the Swift runtime linked in statically, in a build folder of its own.
LIB_BUILD := .build-static
LIB := $(LIB_BUILD)/release/libpetrel.so

.PHONY: test demo cluster lib install docs microbench tlsbench bench bench-work soak
test:
	bash tools/test.sh

# The stock-ticker demo: builds and starts the Swift server with the sample feed; open the URL
# it prints. Flags after ARGS=, e.g. make demo ARGS="--port 9000 --host 0.0.0.0".
demo:
	@bash tools/apt.sh pkg-config zlib1g-dev libssl-dev libhiredis-dev
	swift build -c release --package-path examples/stock-swift --product stock-server
	examples/stock-swift/.build/release/stock-server $(ARGS)

# Three stock servers (Swift runs the feed; C and Python serve it) on one Redis, behind nginx:
# builds what it needs, prints the URL; Ctrl-C stops everything (docs/cluster.md).
cluster:
	@bash tools/apt.sh pkg-config zlib1g-dev libssl-dev libhiredis-dev redis-server nginx
	$(MAKE) install PREFIX=$(CURDIR)/.build/c-prefix >/dev/null
	PKG_CONFIG_PATH=$(CURDIR)/.build/c-prefix/lib/pkgconfig $(MAKE) -C examples/stock-c
	swift build -c release --package-path examples/stock-swift --product stock-server
	python3 examples/cluster/cluster.py $(ARGS)

# The version script exports petrel_* only, each at version PETREL_0; the Swift runtime is linked
# in and kept private. The soname link next to the build lets programs linked against this build
# folder (Benchmarks/servers) find it by its soname at run time.
lib:
	swift build -c release --product petrel --scratch-path $(LIB_BUILD) -Xswiftc -static-stdlib \
		-Xlinker --version-script=$(CURDIR)/include/libpetrel.map -Xlinker -soname=$(SONAME) -Xlinker --strip-debug
	ln -sf libpetrel.so $(LIB_BUILD)/release/$(SONAME)

install: lib
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/petrel.h $(DESTDIR)$(PREFIX)/include/petrel.h
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libpetrel.so.$(VERSION)
	ln -sf libpetrel.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libpetrel.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' include/petrel.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/petrel.pc

# The API references, generated from the sources into .build/docs: c-api-reference.md from the
# header's doc comments (it fails on a function without one), and the Swift module Petrel with
# DocC in swift/ (the swift-docc-plugin is a dependency only under PETREL_DOCS=1: Package.swift).
docs:
	python3 tools/c-api-reference.py include/petrel.h .build/docs/c-api-reference.md
	PETREL_DOCS=1 swift package --scratch-path .build-docs --allow-writing-to-directory .build/docs \
		generate-documentation --target Petrel --output-path .build/docs/swift --transform-for-static-hosting

microbench:
	cd Benchmarks && swift run -c release petrel-microbench

# Petrel next to libwebsockets, websockets, picows and NIOWebSocket: every scenario, 3 rounds,
# server on CPU 0 and load on CPU 1; writes .build/bench/results.md (about 25 minutes).
bench:
	bash Benchmarks/run.sh --micro $(ARGS)

# Work, not time: instructions per echoed message, per fan-out delivery and per handshake under
# callgrind, Petrel (Swift and C) next to libwebsockets and NIOWebSocket, 3 times (about 15 minutes).
bench-work:
	bash Benchmarks/run.sh --work $(ARGS)

# ws:// next to wss://: handshakes per second and echo throughput (certificates from the openssl command).
tlsbench:
	bash Tests/TLS/make-certs.sh .build/test-certs
	cd Benchmarks && swift build -c release --product petrel-tls-bench && taskset -c 0,1 .build/release/petrel-tls-bench --certs ../.build/test-certs

# The long soak (not in `make test`): the Swift stock server for MINUTES (30) under 20
# reconnecting clients through the fault proxy, churn and a fault every 30 s; samples RSS,
# descriptors and threads every 10 s into .build/soak (soak.csv, soak.png, summary.json).
MINUTES ?= 30
soak:
	@bash tools/apt.sh pkg-config zlib1g-dev libssl-dev libhiredis-dev python3-matplotlib
	$(MAKE) install PREFIX=$(CURDIR)/.build/c-prefix >/dev/null
	swift build -c release --package-path examples/stock-swift --product stock-server
	PETREL_LIBRARY=$(CURDIR)/.build/c-prefix/lib/libpetrel.so PYTHONPATH=$(CURDIR)/bindings/python/src \
		/usr/bin/python3 Benchmarks/soak.py --minutes $(MINUTES)
