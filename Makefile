# natwrp: NAT-traversal web reverse proxy.
#   make            optimised build/natwrp
#   make test       sanitizer build, unit + integration tests
#   make demo       serve + agent + demo service on loopback
#   make bench      plain vs TLS tunnel throughput (scripts/bench.sh)
#   make install PREFIX=/usr/local

CC      ?= cc
PREFIX  ?= /usr/local
BUILD   ?= build
PYTHON  ?= python3

include third_party/deps.mk

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
BASE    := -std=c11 -D_GNU_SOURCE -Isrc $(DEP_CFLAGS)
CFLAGS  ?= -O2 -g
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_CFLAGS := -O1 -g $(SAN)

SRCS     := $(sort $(wildcard src/*.c))
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
UNIT_SRCS := $(sort $(wildcard test/unit/test_*.c))

REL_OBJS  := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
ASAN_OBJS := $(SRCS:src/%.c=$(BUILD)/asan/obj/%.o)
ASAN_LIB  := $(LIB_SRCS:src/%.c=$(BUILD)/asan/obj/%.o)
LL_REL    := $(BUILD)/obj/llhttp.a
LL_ASAN   := $(BUILD)/asan/obj/llhttp.a
UNIT_BINS := $(UNIT_SRCS:test/unit/%.c=$(BUILD)/asan/%)

.PHONY: all asan unit install clean test integ demo deps lint check-clang bench
all: $(BUILD)/natwrp

# --- release build ---------------------------------------------------------
$(BUILD)/natwrp: $(REL_OBJS) $(LL_REL)
	$(CC) $(CFLAGS) -o $@ $^ $(DEP_LIBS) $(LDFLAGS)

$(BUILD)/obj/%.o: src/%.c src/*.h | $(BUILD)/obj
	$(CC) $(BASE) $(WARN) $(CFLAGS) -MMD -c -o $@ $<

# --- sanitizer build (tests) -----------------------------------------------
asan: $(BUILD)/asan/natwrp
$(BUILD)/asan/natwrp: $(ASAN_OBJS) $(LL_ASAN)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(DEP_LIBS)

$(BUILD)/asan/obj/%.o: src/%.c src/*.h | $(BUILD)/asan/obj
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

-include $(BUILD)/obj/*.d

# --- everything else -------------------------------------------------------
install: $(BUILD)/natwrp
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/natwrp $(DESTDIR)$(PREFIX)/bin/natwrp

clean:
	rm -rf $(BUILD)

deps:
	scripts/deps.sh

# nginx too: test/integ/test_95_proxy.py runs serve behind it.
test:
	scripts/deps.sh --nginx
	$(MAKE) asan unit
	scripts/test.sh

# Build warning-free with clang too (gcc is the default CC).
check-clang:
	$(MAKE) BUILD=$(BUILD)/clang CC=clang all

demo: deps
	$(MAKE) all
	scripts/demo.sh

# Throughput and latency, plain vs TLS tunnel, measured side by side in one
# run; reports only (never asserts timings).
bench:
	scripts/deps.sh --bench
	$(MAKE) all
	scripts/bench.sh

lint:
	@! grep -nE '\b(strcpy|sprintf|atoi|gets)\s*\(' src/*.c || (echo "lint: banned call" && false)
