# dm - differential migration for PostgreSQL.
# make            build bin/
# make check      unit tests and bats suites against throwaway clusters
# make demo       migrate pagila on a throwaway local cluster
# make install    PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
PKG_CONFIG ?= pkg-config
PKGS = libpq msgpack libxxhash

CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -std=c11 -Wall -Wextra -Werror -Wshadow -Wvla-larger-than=65536 -Wformat=2
ifeq ($(SANITIZE),1)
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
endif

PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = $(WARNINGS) -Ilib $(PKG_CFLAGS) $(CFLAGS) -MMD -MP

LIB_SRC = lib/util.c lib/stream.c lib/pg.c lib/copytext.c lib/state.c
LIB_OBJ = $(LIB_SRC:lib/%.c=build/lib/%.o)

PROGS = bin/dm-extract bin/dm-entities bin/dm-diff bin/dm-cat bin/dm-load bin/dm-ckpt
SCRIPTS = bin/dm-migrate
UNIT_TESTS = bin/test-stream bin/test-copytext bin/test-merge

all: deps $(PROGS) $(SCRIPTS)

deps:
	@scripts/check-deps build

build/lib/%.o: lib/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/libdm.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $(LIB_OBJ)

bin/dm-extract: build/extract/dm-extract.o build/libdm.a
bin/dm-entities: build/extract/dm-entities.o build/libdm.a
bin/dm-diff: build/diff/dm-diff.o build/libdm.a
bin/dm-cat: build/diff/dm-cat.o build/libdm.a
bin/dm-load: build/load/dm-load.o build/libdm.a
bin/dm-ckpt: build/checkpoint/dm-ckpt.o build/libdm.a
bin/test-stream: build/tests/unit/test-stream.o build/libdm.a
bin/test-copytext: build/tests/unit/test-copytext.o build/libdm.a
bin/test-merge: build/tests/unit/test-merge.o build/libdm.a

$(PROGS) $(UNIT_TESTS):
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

bin/dm-migrate: scripts/dm-migrate
	@mkdir -p $(@D)
	cp scripts/dm-migrate $@
	chmod +x $@

check: all $(UNIT_TESTS)
	@scripts/check-deps check
	@PATH="$(CURDIR)/bin:$$PATH" tests/run-all

demo: all
	@scripts/check-deps demo
	@PATH="$(CURDIR)/bin:$$PATH" scripts/demo

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -m 755 $(PROGS) $(SCRIPTS) $(DESTDIR)$(BINDIR)
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/man1
	install -m 644 man/*.5 $(DESTDIR)$(MANDIR)/man5
	install -m 644 man/*.7 $(DESTDIR)$(MANDIR)/man7

lint-man:
	mandoc -T lint -W warning man/*.1 man/*.5 man/*.7

clean:
	rm -rf build bin

.PHONY: all deps check demo install lint-man clean
-include $(shell find build -name '*.d' 2>/dev/null)
