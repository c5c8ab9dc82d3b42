# natwrp: NAT-traversal web reverse proxy.
#   make            optimised build/natwrp
#   make test       sanitizer build, unit + integration tests
#   make demo       serve + agent + demo service on loopback
#   make bench      natwrp vs nginx vs direct: req/s, MB/s, latency, memory (scripts/bench.sh)
#   make install PREFIX=/usr/local [DESTDIR=...]; make uninstall

CC      ?= cc
PREFIX  ?= /usr/local
BUILD   ?= build
PYTHON  ?= python3

include third_party/deps.mk

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
# src/ is one folder per layer (README, "How it works"); like nginx, each
# folder is on the include path, so a header is named by its file alone.
SRC_DIRS := src $(patsubst %/,%,$(sort $(dir $(wildcard src/*/*.c src/*/*.h))))
HDRS     := $(wildcard src/*.h src/*/*.h)
# build/gen: generated headers (the dashboard's embedded files).
BASE    := -std=c11 -D_GNU_SOURCE $(addprefix -I,$(SRC_DIRS)) -I$(BUILD)/gen $(DEP_CFLAGS)
CFLAGS  ?= -O2 -g
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_CFLAGS := -O1 -g $(SAN)

SRCS     := $(sort $(wildcard src/*.c src/*/*.c))
# Objects go into archives by base name (the fuzz build's libnatwrp.a), so
# two sources may not share one.
SAME_NAME := $(shell printf '%s\n' $(notdir $(SRCS)) | sort | uniq -d)
$(if $(SAME_NAME),$(error src/: more than one file named $(SAME_NAME)))
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
UNIT_SRCS := $(sort $(wildcard test/unit/test_*.c))

REL_OBJS  := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
ASAN_OBJS := $(SRCS:src/%.c=$(BUILD)/asan/obj/%.o)
ASAN_LIB  := $(LIB_SRCS:src/%.c=$(BUILD)/asan/obj/%.o)
LL_REL    := $(BUILD)/obj/llhttp.a
LL_ASAN   := $(BUILD)/asan/obj/llhttp.a
UNIT_BINS := $(UNIT_SRCS:test/unit/%.c=$(BUILD)/asan/%)

.PHONY: all asan unit install uninstall clean test integ demo deps lint check-clang bench image
all: $(BUILD)/natwrp

# --- release build ---------------------------------------------------------
$(BUILD)/natwrp: $(REL_OBJS) $(LL_REL)
	$(CC) $(CFLAGS) -o $@ $^ $(DEP_LIBS) $(LDFLAGS)

$(BUILD)/obj/%.o: src/%.c $(HDRS) | $(BUILD)/obj
	@mkdir -p $(@D)
	$(CC) $(BASE) $(WARN) $(CFLAGS) -MMD -MP -c -o $@ $<

# --- sanitizer build (tests) -----------------------------------------------
asan: $(BUILD)/asan/natwrp
$(BUILD)/asan/natwrp: $(ASAN_OBJS) $(LL_ASAN)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(DEP_LIBS)

$(BUILD)/asan/obj/%.o: src/%.c $(HDRS) | $(BUILD)/asan/obj
	@mkdir -p $(@D)
	$(CC) $(BASE) $(WARN) $(ASAN_CFLAGS) -c -o $@ $<

unit: $(UNIT_BINS)
$(BUILD)/asan/test_%: test/unit/test_%.c test/unit/unit.h $(ASAN_LIB) $(LL_ASAN)
	$(CC) $(BASE) -Itest/unit $(WARN) $(ASAN_CFLAGS) -o $@ $< $(ASAN_LIB) $(LL_ASAN) $(DEP_LIBS)

# --- llhttp, compiled from the system's sources with their own flags -------
$(BUILD)/obj/llhttp.a: $(LLHTTP_SRCS) | $(BUILD)/obj
	cd $(BUILD)/obj && for f in $(LLHTTP_SRCS); do \
	  $(CC) -O2 -w -I$(LLHTTP_INC) -c -o ll_$$(basename $$f .c).o $$f || exit 1; done
	ar rcs $@ $(BUILD)/obj/ll_*.o
$(BUILD)/asan/obj/llhttp.a: $(LLHTTP_SRCS) | $(BUILD)/asan/obj
	cd $(BUILD)/asan/obj && for f in $(LLHTTP_SRCS); do \
	  $(CC) -O1 -g -w $(SAN) -I$(LLHTTP_INC) -c -o ll_$$(basename $$f .c).o $$f || exit 1; done
	ar rcs $@ $(BUILD)/asan/obj/ll_*.o

$(BUILD)/obj $(BUILD)/asan/obj:
	mkdir -p $@

-include $(BUILD)/obj/*.d $(BUILD)/obj/*/*.d

# --- the dashboard, embedded at build time ---------------------------------
# src/admin/ui/* become C arrays in $(BUILD)/gen/ui_files.h (od and sed,
# scripts/embed.sh), which src/admin/ui.c includes: one way for gcc, clang
# and the fuzz build.
UI_FILES := $(sort $(wildcard src/admin/ui/*))
UI_GEN   := $(BUILD)/gen/ui_files.h
$(UI_GEN): $(UI_FILES) scripts/embed.sh
	@mkdir -p $(@D)
	scripts/embed.sh $(UI_FILES) >$@.tmp && mv $@.tmp $@
$(BUILD)/obj/admin/ui.o $(BUILD)/asan/obj/admin/ui.o $(BUILD)/fuzz/obj/admin/ui.o: $(UI_GEN)

# --- everything else -------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=...]: the optimised binary, the
# man page, the systemd units (in $(PREFIX)/lib/systemd/system, which systemd
# searches for /usr/local and /usr; their ExecStart is $(PREFIX)/bin/natwrp)
# and the example settings file. Nothing in /etc is written: the settings
# files are yours (/etc/natwrp/serve.env, /etc/natwrp/NAME.env).
# make uninstall removes exactly those files.
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/natwrp
UNITS   := natwrp-serve.service natwrp-agent@.service
INSTALLED := $(BINDIR)/natwrp $(MANDIR)/man1/natwrp.1 $(addprefix $(UNITDIR)/,$(UNITS)) \
             $(DOCDIR)/natwrp.env.example

install: $(BUILD)/natwrp
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BUILD)/natwrp $(DESTDIR)$(BINDIR)/natwrp
	install -m 0644 docs/natwrp.1 $(DESTDIR)$(MANDIR)/man1/natwrp.1
	for u in $(UNITS); do \
	  sed 's|/usr/local/bin/natwrp|$(BINDIR)/natwrp|g' dist/systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u.tmp && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && \
	  mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	install -m 0644 dist/natwrp.env.example $(DESTDIR)$(DOCDIR)/natwrp.env.example

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true

clean:
	rm -rf $(BUILD)

deps:
	scripts/deps.sh

# nginx, haproxy, chromium, promtool and podman/buildah too: serve behind
# nginx (test_95_proxy.py), replicas behind haproxy (test_g1_haproxy.py), a
# headless browser through the tunnel (test_c1_browser.py), /metrics checked
# by promtool (test_f0_admin.py), the container image (test_i0_image.py),
# apache2 and litmus (test_j1_webdav.py), jupyter-notebook (test_j2_jupyter.py),
# Node.js with express and socket.io (test_j3_express.py).
test:
	scripts/deps.sh --nginx --haproxy --browser --jupyter --promtool --image --webdav --node
	$(MAKE) asan unit
	scripts/test.sh

# Build warning-free with clang too (gcc is the default CC).
check-clang:
	$(MAKE) BUILD=$(BUILD)/clang CC=clang all

# The container image natwrp:VERSION and natwrp:latest (IMAGE=name to name
# it otherwise), FROM scratch: the stripped release binary, its shared
# libraries, the CA bundle, /etc/passwd and /etc/group; built with buildah or
# podman, reproducibly (file times from the last commit). scripts/image.sh;
# README, "Container image".
IMAGE ?= natwrp
image: $(BUILD)/natwrp
	scripts/deps.sh --image
	IMAGE=$(IMAGE) scripts/image.sh $(BUILD)/natwrp

demo: deps
	$(MAKE) all
	scripts/demo.sh

# natwrp (plain and wss tunnels) beside nginx as a one-hop proxy and a direct
# connection, interleaved in one run: req/s, latency, MB/s, streaming delay,
# head-of-line, memory per open stream. Reports only (never asserts timings);
# see docs/benchmarks.md.
bench:
	scripts/deps.sh --bench
	$(MAKE) all
	scripts/bench.sh

lint:
	@! grep -nE '\b(strcpy|sprintf|atoi|gets)\s*\(' $(SRCS) || (echo "lint: banned call" && false)

# --- fuzzing ---------------------------------------------------------------
# libFuzzer targets (test/fuzz/fuzz_*.c) for the frame codec, the .env parser,
# request-head parsing, the tunnel session (a hand-made peer's bytes into a
# real nw_tun_t), request-path normalisation, route matching and the tokens
# file, built with clang's -fsanitize=fuzzer plus ASan and UBSan (libFuzzer
# comes with Debian's clang, in libclang-rt-14-dev).
#   make fuzz                  build them all, run each for FUZZ_TIME seconds
#   make fuzz FUZZ_TIME=60
#   make fuzz-build            build only
#   build/fuzz/fuzz_head FILE  replay one input (e.g. a crash artifact)
# Each run starts from a copy of test/fuzz/corpus/NAME/ in
# build/fuzz/corpus-NAME/ (the repo's seeds are never written); what a run
# finds stays there for the next one. Crashes, leaks, timeouts and OOMs go to
# build/fuzz/artifacts/NAME-* and fail the make after all targets have run.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 20
FUZZ_DIR   := $(BUILD)/fuzz
FUZZ_NAMES := mux env head tun path routes tokens
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# Library code gets coverage instrumentation only (fuzzer-no-link); the
# targets link libFuzzer's main as well.
FUZZ_OBJ_CFLAGS := -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_BIN_CFLAGS := -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer
FUZZ_LIB   := $(FUZZ_DIR)/libnatwrp.a
FUZZ_LL    := $(FUZZ_DIR)/llhttp.a
FUZZ_BINS  := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_OPTS  := -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS)

$(FUZZ_DIR)/obj/%.o: src/%.c $(HDRS) | $(FUZZ_DIR)/obj
	@mkdir -p $(@D)
	$(FUZZ_CC) $(BASE) $(WARN) $(FUZZ_OBJ_CFLAGS) -c -o $@ $<

# An archive, so each target pulls in only the modules it uses (main.c is
# left out: libFuzzer brings its own main).
$(FUZZ_LIB): $(LIB_SRCS:src/%.c=$(FUZZ_DIR)/obj/%.o)
	rm -f $@ && ar rcs $@ $^

# llhttp is instrumented too: its state machine is most of what fuzz_head
# explores.
$(FUZZ_LL): $(LLHTTP_SRCS) | $(FUZZ_DIR)/ll
	cd $(FUZZ_DIR)/ll && for f in $(LLHTTP_SRCS); do \
	  $(FUZZ_CC) -w $(FUZZ_OBJ_CFLAGS) -I$(LLHTTP_INC) -c -o ll_$$(basename $$f .c).o $$f || exit 1; done
	rm -f $@ && ar rcs $@ $(FUZZ_DIR)/ll/ll_*.o

$(FUZZ_DIR)/fuzz_%: test/fuzz/fuzz_%.c $(FUZZ_LIB) $(FUZZ_LL)
	$(FUZZ_CC) $(BASE) $(WARN) $(FUZZ_BIN_CFLAGS) -o $@ $< $(FUZZ_LIB) $(FUZZ_LL) $(DEP_LIBS)

$(FUZZ_DIR)/obj $(FUZZ_DIR)/ll:
	mkdir -p $@

# Every target runs (single process) even if an earlier one failed; the log
# of each is build/fuzz/NAME.log. On failure the report (up to SUMMARY) and
# the artifact's name are shown.
fuzz: $(FUZZ_BINS)
	@mkdir -p $(FUZZ_DIR)/artifacts; failed=""; \
	for t in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus-$$t && cp test/fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus-$$t/; \
	  echo "== fuzz_$$t: $(FUZZ_TIME) s"; \
	  if UBSAN_OPTIONS=print_stacktrace=1 $(FUZZ_DIR)/fuzz_$$t $(FUZZ_OPTS) \
	       -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $(FUZZ_DIR)/corpus-$$t \
	       >$(FUZZ_DIR)/$$t.log 2>&1; then \
	    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
	      $(FUZZ_DIR)/$$t.log; \
	  else \
	    sed -n '/check failed\|runtime error\|==ERROR\|ERROR: libFuzzer/,/^SUMMARY/p' \
	      $(FUZZ_DIR)/$$t.log | head -n 60; \
	    grep -E 'Test unit written|^Base64' $(FUZZ_DIR)/$$t.log; failed="$$failed $$t"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "fuzz: FAILED:$$failed (reproducers in $(FUZZ_DIR)/artifacts/, logs in $(FUZZ_DIR)/*.log)"; exit 1; \
	fi; \
	echo "fuzz: no crash, leak or timeout in $(FUZZ_NAMES)"
