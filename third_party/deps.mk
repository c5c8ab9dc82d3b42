# third_party/deps.mk: find the system libraries natwrp builds against.
# Nothing here is third-party source: llhttp's C files are compiled from
# where Debian's node-llhttp puts them (override LLHTTP_DIR / LLHTTP_INC).

LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= $(firstword $(wildcard $(LLHTTP_DIR)/include $(LLHTTP_DIR)/../include/llhttp \
                 /usr/share/include/llhttp) $(LLHTTP_DIR))
LLHTTP_SRCS := $(addprefix $(LLHTTP_DIR)/,llhttp.c api.c http.c)

PKG_CONFIG ?= pkg-config
UV_CFLAGS    := $(shell $(PKG_CONFIG) --cflags libuv 2>/dev/null)
UV_LIBS      := $(or $(shell $(PKG_CONFIG) --libs libuv 2>/dev/null),-luv)
WSLAY_CFLAGS := $(shell $(PKG_CONFIG) --cflags libwslay 2>/dev/null)
WSLAY_LIBS   := $(or $(shell $(PKG_CONFIG) --libs libwslay 2>/dev/null),-lwslay)
MBEDTLS_LIBS ?= -lmbedtls -lmbedx509 -lmbedcrypto

DEP_CFLAGS := -I$(LLHTTP_INC) $(UV_CFLAGS) $(WSLAY_CFLAGS)
DEP_LIBS   := $(UV_LIBS) $(WSLAY_LIBS) $(MBEDTLS_LIBS)
