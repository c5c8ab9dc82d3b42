/* cfg.h: flags, environment and .env files, URL and listen-address parsing.
 * Every limit lives in a config struct, validated once, then read-only. */
#ifndef NW_CFG_H
#define NW_CFG_H

#include "nw.h"

#define NW_TUNNEL_PATH "/_natwrp/tunnel"
#define NW_CFG_MAX_LISTEN 8
#define NW_CFG_ERRLEN 256

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

typedef struct {
    nw_listen_t listen[NW_CFG_MAX_LISTEN];
    int nlisten;
    uint64_t response_timeout_ms; /* --response-timeout SECS, default 60 */
    uint64_t ping_interval_ms;    /* --ping-interval SECS / PING_INTERVAL, default 30 */
    uint32_t max_head;            /* --max-head BYTES, default 65536 */
    uint32_t window;              /* --window BYTES, per-stream receive window, default 262144 */
    int log_level;                /* 0 error 1 warn 2 info 3 debug; --log-level / LOG_LEVEL */
    char tls_cert[1024];          /* --tls-cert / TLS_CERT: PEM chain, leaf first */
    char tls_key[1024];           /* --tls-key / TLS_KEY */
    int trust_proxy;              /* --trust-proxy / TRUST_PROXY: keep incoming X-Forwarded-* */
} nw_serve_cfg_t;

typedef struct {
    char agent_id[129];        /* AGENT_ID / --id: [A-Za-z0-9._@:+-]{1,128} */
    nw_url_t remote;           /* REMOTE_URL / --remote: http(s)://host[:port][/path] */
    nw_url_t local;            /* LOCAL_URL / --local */
    uint64_t ping_interval_ms; /* PING_INTERVAL (seconds, fractions allowed), default 30 */
    uint64_t connect_timeout_ms; /* CONNECT_TIMEOUT (seconds), default 10 */
    uint32_t pool_size;        /* POOL_SIZE / --pool-size: idle local connections kept, default 16 */
    uint32_t window;           /* WINDOW / --window: per-stream receive window, default 262144 */
    uint32_t max_head;         /* max response head from the local service, default 65536 */
    int log_level;
    char ca_file[1024];        /* CA_FILE / --ca-file: CAs for REMOTE_URL ("" = system) */
    int insecure;              /* TLS_INSECURE / --insecure: skip REMOTE_URL verification */
    char local_ca_file[1024];  /* LOCAL_CA_FILE / --local-ca-file */
    int local_insecure;        /* LOCAL_INSECURE / --local-insecure */
    char env_file[1024];       /* file actually read, "" if none */
} nw_agent_cfg_t;

/* Parse "http://host[:port][/base/path]" or https. Rejects other schemes,
 * userinfo, query, fragment, empty host, port 0 or > 65535. 0 or NW_ECONFIG
 * with a reason in err. */
int nw_url_parse(const char *s, nw_url_t *u, char *err, size_t errlen);

/* Parse ":8000", "0.0.0.0:8000", "127.0.0.1:8000", "[::1]:8000", "8000",
 * optionally prefixed "http://" (plain) or "https://" (TLS). */
int nw_listen_parse(const char *s, nw_listen_t *l, char *err, size_t errlen);

/* dotenv syntax: comments, blank lines, "export KEY=...", single and double
 * quotes (double quotes understand \n \t \" \\), inline " # comment" after
 * unquoted values. Calls cb for each KEY=VALUE in order; a later duplicate
 * overrides an earlier one at the caller's choice. Returns 0 or NW_ECONFIG
 * with "line N: reason" in err. */
typedef int (*nw_env_cb)(const char *key, const char *val, void *ud);
int nw_env_parse(const char *text, size_t len, nw_env_cb cb, void *ud, char *err,
                 size_t errlen);

/* Parse "30", "0.5" seconds into milliseconds; rejects negatives and junk. */
int nw_parse_secs(const char *s, uint64_t *ms);
/* Parse a byte count "65536", "64k", "1m"; rejects junk and overflow. */
int nw_parse_bytes(const char *s, uint64_t *out);

/* Build the whole configuration from argv (argv[0] is the subcommand name),
 * the .env file and the process environment, in increasing precedence:
 * file < environment < flags. Returns 0; 1 when --help or --version was
 * printed (exit 0); NW_ECONFIG with a one-line reason naming the setting in
 * err (exit 2). */
int nw_cfg_serve(int argc, char **argv, nw_serve_cfg_t *cfg, char *err, size_t errlen);
int nw_cfg_agent(int argc, char **argv, nw_agent_cfg_t *cfg, char *err, size_t errlen);

#endif
