/* url.h: base URLs and listen addresses (url.c, pure). */
#ifndef NW_URL_H
#define NW_URL_H

#include <stddef.h>
#include <stdint.h>

#include "nw.h"

typedef struct {
    int tls;            /* https:// (wss) */
    char host[256];     /* no brackets for IPv6 literals */
    uint16_t port;      /* explicit or scheme default (80/443) */
    char path[1024];    /* base path without trailing '/'; "" for root */
} nw_url_t;

enum { NW_LISTEN_AUTO = 0, NW_LISTEN_TLS = 1, NW_LISTEN_PLAIN = 2 };

typedef struct {
    char host[256]; /* "" means every interface */
    uint16_t port;
    int scheme;     /* NW_LISTEN_*: "https://ADDR", "http://ADDR" or bare */
    int tls;        /* resolved: serve TLS on this listener */
} nw_listen_t;

/* Parse "http://host[:port][/base/path]" or https. Rejects other schemes,
 * userinfo, query, fragment, empty host, port 0 or > 65535. 0 or NW_ECONFIG
 * with a reason in err. */
int nw_url_parse(const char *s, nw_url_t *u, char *err, size_t errlen);

/* Parse ":8000", "0.0.0.0:8000", "127.0.0.1:8000", "[::1]:8000", "8000",
 * optionally prefixed "http://" (plain) or "https://" (TLS). Port 0 is
 * allowed (pick a free one). 0 or NW_ECONFIG with a reason in err. */
int nw_listen_parse(const char *s, nw_listen_t *l, char *err, size_t errlen);

#endif
