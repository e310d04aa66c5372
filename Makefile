# dm - differential migration for PostgreSQL.
# make            build bin/
# make check      unit tests and bats suites against throwaway clusters
# make demo       migrate pagila into a redesigned schema on a throwaway local cluster
# make demo-copy  the zero-config copy of pagila
# make unit       the unit test binaries only (no PostgreSQL needed; the image build runs it)
# make image      the container image (docker, else podman or buildah); IMAGE=dm:VERSION
# make image-test build it with podman from a local Debian base and migrate Pagila with it
# make install    PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
PKG_CONFIG ?= pkg-config
PKGS = libpq msgpack libxxhash libcrypto jansson

CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -std=c11 -Wall -Wextra -Werror -Wshadow -Wvla -Wformat=2
ifeq ($(SANITIZE),1)
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
endif

PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = $(WARNINGS) -Ilib $(PKG_CFLAGS) $(CFLAGS) -MMD -MP

LIB_SRC = lib/util.c lib/stream.c lib/pg.c lib/copytext.c lib/state.c lib/merge.c lib/spec.c lib/mapping.c lib/report.c \
	lib/feed.c
LIB_OBJ = $(LIB_SRC:lib/%.c=build/lib/%.o)

PROGS = bin/dm-extract bin/dm-decode bin/dm-entities bin/dm-diff bin/dm-cat bin/dm-keys bin/dm-load bin/dm-ckpt
SERVE_OBJ = build/serve/dm-serve.o build/serve/api.o build/serve/run.o build/serve/events.o \
	build/serve/cache.o build/serve/exec.o build/serve/db.o build/serve/parse.o build/serve/assets.o
SERVE_LIBS := $(shell $(PKG_CONFIG) --libs libmicrohttpd 2>/dev/null) -lpthread
SERVE_CFLAGS := $(shell $(PKG_CONFIG) --cflags libmicrohttpd 2>/dev/null)
SCRIPTS = bin/dm-migrate
UNIT_TESTS = bin/test-stream bin/test-copytext bin/test-merge bin/test-spec

all: deps $(PROGS) bin/dm-serve $(SCRIPTS)

deps:
	@scripts/check-deps build

# The objects remember the flags they were built with: switching SANITIZE=1 on or
# off rebuilds everything instead of linking instrumented and plain objects together.
BUILD_FLAGS = $(CC) $(ALL_CFLAGS) $(LDFLAGS)
build/.flags: FORCE
	@mkdir -p build
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' >$@
FORCE:

build/lib/%.o: lib/%.c build/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/%.o: %.c build/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/libdm.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $(LIB_OBJ)

bin/dm-extract: build/extract/dm-extract.o build/libdm.a
bin/dm-entities: build/extract/dm-entities.o build/extract/split.o build/libdm.a
DECODE_OBJ = build/extract/dm-decode.o build/extract/follow.o build/extract/pgoutput.o
bin/dm-decode: $(DECODE_OBJ) build/libdm.a
bin/dm-diff: build/diff/dm-diff.o build/libdm.a
bin/dm-cat: build/diff/dm-cat.o build/libdm.a
bin/dm-keys: build/diff/dm-keys.o build/libdm.a
LOAD_OBJ = build/load/dm-load.o build/load/target.o build/load/stage.o build/load/deletes.o \
	build/load/bulk.o build/load/rejects.o
bin/dm-load: $(LOAD_OBJ) build/libdm.a
bin/dm-ckpt: build/checkpoint/dm-ckpt.o build/libdm.a
bin/test-stream: build/tests/unit/test-stream.o build/libdm.a
bin/test-copytext: build/tests/unit/test-copytext.o build/libdm.a
bin/test-merge: build/tests/unit/test-merge.o build/libdm.a
bin/test-spec: build/tests/unit/test-spec.o build/libdm.a

$(PROGS) $(UNIT_TESTS): build/.flags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter-out build/.flags,$^) $(PKG_LIBS)

# The dashboard and the OpenAPI document live in the binary: dm-serve needs no files.
build/serve/assets.c: serve/dashboard.html docs/openapi.json scripts/embed
	@mkdir -p $(@D)
	{ scripts/embed dashboard serve/dashboard.html && scripts/embed openapi docs/openapi.json; } >$@.tmp && mv $@.tmp $@

build/serve/assets.o: build/serve/assets.c build/.flags
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/serve/%.o: serve/%.c build/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SERVE_CFLAGS) -c -o $@ $<

bin/dm-serve: $(SERVE_OBJ) build/libdm.a build/.flags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(SERVE_OBJ) build/libdm.a $(PKG_LIBS) $(SERVE_LIBS)

bin/dm-migrate: scripts/dm-migrate
	@mkdir -p $(@D)
	cp scripts/dm-migrate $@
	chmod +x $@

check: all $(UNIT_TESTS) bin/test-fuzz-smoke
	@scripts/check-deps check
	@PATH="$(CURDIR)/bin:$$PATH" tests/run-all

# The unit tests alone: what the image's builder stage runs (no PostgreSQL there).
unit: all $(UNIT_TESTS)
	@tests/run-all $(UNIT_TESTS)

# The container image. The version comes from git (the build context has no .git).
DM_VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
IMAGE ?= dm:$(DM_VERSION)
image:
	@scripts/image-build $(IMAGE)

# Build the image with podman from an mmdebstrap'ed base and run what it holds (slow).
image-test:
	@scripts/check-deps image
	@scripts/image-test

# make demo: the examples/pagila migration (DEMO_KEEP=0: end and clean up, as CI does;
# by default, at a terminal, the cluster stays up until Ctrl-C). make demo-copy: the
# zero-config copy of Pagila into an identical empty schema.
demo: all
	@scripts/check-deps demo
	@PATH="$(CURDIR)/bin:$$PATH" DEMO_KEEP=$(DEMO_KEEP) scripts/demo

# make serve: the demo, then its cluster stays up with dm-serve on 127.0.0.1:8420 (Ctrl-C ends).
serve: all
	@scripts/check-deps demo
	@PATH="$(CURDIR)/bin:$$PATH" DEMO_KEEP=1 scripts/demo

demo-copy: all
	@scripts/check-deps demo
	@PATH="$(CURDIR)/bin:$$PATH" scripts/demo-copy

# The benchmark against raw COPY, pgcopydb, pgloader and pg_comparator (docs/benchmarks.md).
# make bench SCALE=10: 35 million rows, about 4 GB per side (not in CI); add
# BENCH_ARGS="--baseline DIR" (the results of a scale-1 run) for the growth from there.
bench: all
	@PATH="$(CURDIR)/bin:$$PATH" scripts/bench $(if $(SCALE),--scale $(SCALE)) $(BENCH_ARGS)
	@PATH="$(CURDIR)/bin:$$PATH" scripts/bench-driver
	@scripts/bench-upsert
	@PATH="$(CURDIR)/bin:$$PATH" scripts/bench-serve
	@scripts/bench-follow $(BENCH_FOLLOW_ARGS)

# dm-migrate follow against a changing source, and the cut-over (scripts/bench-follow).
bench-follow: all
	@scripts/bench-follow $(BENCH_FOLLOW_ARGS)

# dm-migrate's own cost on many small tables, against a plain loop of its programs
# (scripts/bench-driver).
bench-driver: all
	@PATH="$(CURDIR)/bin:$$PATH" scripts/bench-driver $(BENCH_DRIVER_ARGS)

# Applying a batch of changes: dm-load's upsert against MERGE and the others (scripts/bench-upsert).
bench-upsert:
	@scripts/bench-upsert $(BENCH_UPSERT_ARGS)

# dm-serve alone under load during a run: p99 latency and RSS (scripts/bench-serve).
bench-serve: all
	@PATH="$(CURDIR)/bin:$$PATH" scripts/bench-serve $(BENCH_SERVE_ARGS)

# The fault-injection scripts in full (make check runs them in reduced form).
faults: all
	@PATH="$(CURDIR)/bin:$$PATH" tests/faults/run $(FAULT_ARGS)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -m 755 $(PROGS) bin/dm-serve $(SCRIPTS) $(DESTDIR)$(BINDIR)
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/man1
	install -m 644 man/*.5 $(DESTDIR)$(MANDIR)/man5
	install -m 644 man/*.7 $(DESTDIR)$(MANDIR)/man7

lint-man:
	mandoc -T lint -W warning man/*.1 man/*.5 man/*.7

clean:
	rm -rf build bin

# docs/openapi.json is written by scripts/openapi.py (the API's one description)
openapi:
	python3 scripts/openapi.py >docs/openapi.json.tmp && mv docs/openapi.json.tmp docs/openapi.json

.PHONY: all deps check unit image image-test demo demo-copy serve bench bench-driver bench-upsert bench-serve bench-follow faults install lint-man clean openapi FORCE
-include $(shell find build -name '*.d' 2>/dev/null)

# Fuzzing (clang's libFuzzer): `make fuzz FUZZ_SECONDS=600`; `make fuzz-smoke` runs in check.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
bin/fuzz-stream: tests/fuzz/fuzz-stream.c $(LIB_SRC) lib/*.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(WARNINGS) -Ilib $(PKG_CFLAGS) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz-stream.c $(LIB_SRC) $(PKG_LIBS)

tests/fuzz/corpus/.seeded: bin/dm-extract bin/dm-diff
	scripts/fuzz-seeds tests/fuzz/corpus
	@touch $@

bin/fuzz-serve: tests/fuzz/fuzz-serve.c serve/parse.c lib/util.c serve/serve.h lib/*.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(WARNINGS) -Ilib -Iserve $(PKG_CFLAGS) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz-serve.c serve/parse.c lib/util.c $(PKG_LIBS)

# dm-decode's parsers: replication and pgoutput messages (no libpq), and the feed reader.
bin/fuzz-pgoutput: tests/fuzz/fuzz-pgoutput.c extract/pgoutput.c extract/pgoutput.h $(LIB_SRC) lib/*.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(WARNINGS) -Ilib -Iextract $(PKG_CFLAGS) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz-pgoutput.c extract/pgoutput.c $(LIB_SRC) $(PKG_LIBS)

# The three targets, FUZZ_SECONDS each: the stream reader and merge, dm-serve's parsers,
# dm-decode's parsers and the feed reader.
fuzz: bin/fuzz-stream bin/fuzz-serve bin/fuzz-pgoutput
	@mkdir -p build/fuzz-corpus build/fuzz-serve-corpus build/fuzz-pgoutput-corpus
	bin/fuzz-stream -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build/fuzz-corpus tests/fuzz/corpus
	bin/fuzz-serve -max_total_time=$(FUZZ_SECONDS) -max_len=70000 build/fuzz-serve-corpus tests/fuzz/serve-corpus
	bin/fuzz-pgoutput -max_total_time=$(FUZZ_SECONDS) -max_len=16384 build/fuzz-pgoutput-corpus tests/fuzz/pgoutput-corpus

fuzz-smoke: bin/fuzz-stream
	@mkdir -p build/fuzz-corpus
	bin/fuzz-stream -max_total_time=10 -max_len=8192 build/fuzz-corpus tests/fuzz/corpus

# In make check: ten seconds of fuzzing from the committed seeds, as one TAP test.
bin/test-fuzz-smoke: bin/fuzz-stream
	printf '#!/bin/sh\n# generated by make: a short fuzz run over tests/fuzz/corpus\nd=$$(mktemp -d) && trap "rm -rf $$d" EXIT\nif "%s/bin/fuzz-stream" -max_total_time=10 -max_len=8192 -artifact_prefix="$$d/" "$$d" "%s/tests/fuzz/corpus" >"$$d/log" 2>&1; then echo "ok 1 - fuzz smoke: $$(grep -o "Done [0-9]* runs" "$$d/log")"; else tail -20 "$$d/log"; echo "not ok 1 - fuzz smoke found a crash"; fi\necho 1..1\n' "$(CURDIR)" "$(CURDIR)" >$@
	chmod +x $@

.PHONY: fuzz fuzz-smoke
