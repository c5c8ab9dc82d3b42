/* cfg_int.h: what the configuration files (cfg.c, cfg_serve.c, cfg_agent.c,
 * url.c, env.c) share: error helper, character classes, the option table and
 * its layers. Private to src/core. */
#ifndef NW_CFG_INT_H
#define NW_CFG_INT_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

#define BYTES_MAX 2147483647ULL   /* largest window or head size */
#define BYTES_MIN 1024ULL         /* smallest window or head size */
#define QLEN 80                   /* bad values are quoted up to this many bytes */

/* Write the message into err (when err and errlen are given); NW_ECONFIG. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
int nw__cfg_fail(char *err, size_t errlen, const char *fmt, ...);

static inline int is_digit(int c) { return c >= '0' && c <= '9'; }
static inline int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline int is_blank(int c) { return c == ' ' || c == '\t'; }

/* Decimal digits only, at most max. 0 or -1. */
int nw__cfg_uint(const char *s, size_t n, uint64_t max, uint64_t *out);

enum {
    OPT_SECS,    /* uint64_t ms, must be > 0 */
    OPT_BYTES,   /* uint32_t, BYTES_MIN..BYTES_MAX, k/m/g suffixes */
    OPT_COUNT,   /* uint32_t, 0..max */
    OPT_COUNT1,  /* uint32_t, 1..max */
    OPT_LEVEL,   /* int log level */
    OPT_ID,      /* char[129] agent id */
    OPT_URL,     /* nw_url_t */
    OPT_URLS,    /* nw_urls_t: comma-separated URLs */
    OPT_SECS0,   /* uint64_t ms, 0 allowed (off) */
    OPT_PATH,    /* char[1024] file name */
    OPT_BOOL,    /* int; a bare flag sets 1; values 1/true/yes/on or 0/false/no/off */
    OPT_TOKEN,   /* char[NW_CFG_TOKEN_MAX + 1], visible ASCII */
    OPT_REGEX,   /* char[1024], a POSIX extended regular expression that compiles */
    OPT_BALANCE, /* int NW_BALANCE_* */
    OPT_DOMAIN,  /* char[NW_CFG_DOMAIN_MAX + 1], a DNS name, stored lowercase */
    OPT_ADDR,    /* nw_cfg_addr_t: one listen address (--admin) */
    OPT_LOGFMT,  /* int NW_LOGFMT_* */
    OPT_LISTEN,  /* repeatable, handled by nw_cfg_serve */
    OPT_ENVFILE, /* handled by nw_cfg_agent */
    OPT_ROUTES,  /* char[NW_CFG_ROUTES_LEN], handled by nw_cfg_agent */
    OPT_BASIC,   /* nw_creds_t, handled by nw_cfg_agent */
    OPT_BASIC_FILE, /* char[1024] file of credentials, handled by nw_cfg_agent */
};

/* One setting: its flag, its environment name, how its value is checked
 * and where in the config struct it goes. */
typedef struct {
    const char *flag; /* "--window" */
    const char *env;  /* "WINDOW", or NULL when only a flag sets it */
    int kind;         /* OPT_* */
    size_t off;       /* offset of the field in the config struct */
    uint64_t max;     /* OPT_COUNT and OPT_COUNT1 upper bound */
    int required;     /* must be set in some layer */
} opt_t;

#define MAX_OPTS 40

/* The raw values of every layer for one run. Nothing is validated until
 * the layers are merged; file values are owned copies. */
typedef struct {
    const opt_t *opts;
    size_t nopts;
    const char *flag_val[MAX_OPTS];
    char *file_val[MAX_OPTS];
    const char *val[MAX_OPTS];  /* winner after merging */
    const char *from[MAX_OPTS]; /* its name in messages: flag or env name */
    const char *listen[NW_CFG_MAX_LISTEN];
    int nlisten;
} layers_t;

/* Empty layers for a table; free releases the file layer's copies. */
void nw__cfg_layers_init(layers_t *ly, const opt_t *opts, size_t n);
void nw__cfg_layers_free(layers_t *ly);
/* Index of the first option of kind (OPT_*) in the table, or -1. */
int nw__cfg_find_kind(const layers_t *ly, int kind);
/* Later layers win: .env file, then the environment, then flags. Empty
 * values in the file or the environment count as unset. */
void nw__cfg_layers_merge(layers_t *ly);
/* Validate every merged value in table order and store it. */
int nw__cfg_layers_apply(layers_t *ly, void *cfg, char *err, size_t errlen);
/* Record every flag's raw value. Returns 0, 1 after printing help or the
 * version, or NW_ECONFIG. Values are checked later, so --help wins over a
 * bad value anywhere on the line. */
int nw__cfg_parse_args(int argc, char **argv, layers_t *ly, void (*usage)(void), char *err,
                       size_t errlen);

#endif
