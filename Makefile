# wsgate — the two commands a new user needs:
#   make run    install what is missing, build, start the demo
#   make test   install what is missing, build, run every test (and again under ASan+UBSan)
BUILD      ?= build
ASAN_BUILD ?= build-asan
MESON      ?= meson
# Debian bookworm packages the build, the tests and the demo need.
DEB_PKGS := gcc make pkg-config meson ninja-build libuv1-dev libssl-dev libjansson-dev libc-ares-dev liburing-dev \
            check node-llhttp python3 python3-websockets python3-pytest openssl curl chromium \
            python3-jsonschema python3-yaml man-db
BENCH_PKGS := haproxy nginx-light wrk procps util-linux
FUZZ_PKGS  := clang-14 libclang-rt-14-dev
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps js-deps bench-deps fuzz-deps build build-asan run test test-fast test-repeat fuzz bench clean

all: build

# Installs only what dpkg says is missing, so a machine that has everything
# never touches the network.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The real framework clients and servers of the end-to-end tests (tests/js,
# pinned by its package-lock.json). Node.js comes from Debian when the
# machine has none.
js-deps:
	@command -v npm >/dev/null 2>&1 || { echo "installing: nodejs npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	@if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then \
	  cd tests/js && npm ci --no-audit --no-fund --loglevel=error; fi

bench-deps:
	@missing=$$(for p in $(BENCH_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

fuzz-deps:
	@missing=$$(for p in $(FUZZ_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

$(ASAN_BUILD)/build.ninja:
	$(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

run: build
	./bench/demo.sh $(BUILD)

test: build build-asan js-deps
	$(MESON) test -C $(BUILD) --print-errorlogs
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(MESON) test -C $(ASAN_BUILD) --print-errorlogs

# libFuzzer over every target in fuzz/ for FUZZ_SECONDS each (clang-14,
# ASan+UBSan); `make test` replays the corpora without clang.
$(FUZZ_BUILD)/build.ninja:
	CC=clang-14 $(MESON) setup $(FUZZ_BUILD) -Dfuzzing=true -Db_sanitize=address,undefined \
	  -Db_lundef=false -Dbuildtype=debugoptimized

fuzz: deps fuzz-deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./fuzz/run.sh $(FUZZ_BUILD)

# The end-to-end suite N times in a row (default 20), stopping at the first
# failure: the check that no test is flaky.
N ?= 20
test-repeat: build js-deps
	@for i in $$(seq $(N)); do echo "== e2e run $$i of $(N)"; \
	  $(MESON) test -C $(BUILD) --suite e2e --print-errorlogs || exit 1; done

# Only the normal build, for quick iteration.
test-fast: build js-deps
	$(MESON) test -C $(BUILD) --print-errorlogs

# Published numbers come from an optimised build of its own, linked with
# link-time optimisation (docs/performance.md, "The build"); an existing
# directory is switched to it.
REL_BUILD ?= build-rel
REL_OPTS = --buildtype=release -Db_lto=true

$(REL_BUILD)/build.ninja:
	$(MESON) setup $(REL_BUILD) $(REL_OPTS)

bench: deps bench-deps $(REL_BUILD)/build.ninja
	$(MESON) configure $(REL_BUILD) $(REL_OPTS)
	ninja -C $(REL_BUILD)
	./bench/compare --build $(REL_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(REL_BUILD)
