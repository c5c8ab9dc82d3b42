/* cfg.h: the configuration of both roles, from flags, the environment and
 * (agent) a .env file. Every limit lives in a config struct, validated once,
 * then read-only. The defaults in the comments below are the ones set in
 * serve_defaults() (cfg_serve.c) and agent_defaults() (cfg_agent.c); the
 * bounds are in each role's option table there. URLs and listen addresses:
 * url.h; the .env parser: env.h. */
#ifndef NW_CFG_H
#define NW_CFG_H

#include "creds.h"
#include "env.h"
#include "nw.h"
#include "url.h"

#define NW_TUNNEL_PATH "/_natwrp/tunnel"
#define NW_CFG_MAX_LISTEN 8
#define NW_CFG_ERRLEN 256
#define NW_CFG_TOKEN_MAX 256 /* CONN_TOKEN, AUTH_TOKEN: 1-256 visible ASCII characters */
#define NW_CFG_DOMAIN_MAX 200 /* --domain: leaves room for route labels under it (253) */
/* ROUTES as sent: up to NW_ROUTES_MAX items of at most "*." + 253 + 513 bytes,
 * joined with ", " (cfg_agent.c checks this against routes.h). */
#define NW_CFG_ROUTES_LEN 49408

/* A listen address that may be off (--admin). */
typedef struct {
    int set;
    nw_listen_t addr;
} nw_cfg_addr_t;

enum { NW_LOGFMT_TEXT = 0, NW_LOGFMT_JSON = 1 };

/* What both roles run beside their work (issue 12): the admin listener,
 * the access log, the log format. */
typedef struct {
    nw_cfg_addr_t admin;          /* --admin ADDR / ADMIN_LISTEN: off by default */
    char admin_token[NW_CFG_TOKEN_MAX + 1]; /* --admin-token / ADMIN_TOKEN: "" = open */
    char access_log[1024];        /* --access-log PATH|- / ACCESS_LOG: "" = none */
    int log_format;               /* --log-format text|json / LOG_FORMAT: default text */
} nw_ops_cfg_t;

/* serve. Each setting is a flag; most also read the environment variable of
 * the flag's name in capitals (MAX_HEADERS, GRACE, ...); see serve_opts. */
typedef struct {
    nw_listen_t listen[NW_CFG_MAX_LISTEN]; /* --listen ADDR (repeatable), default ":8000", */
    int nlisten;                  /* or ":$PORT" when PORT is set and no --listen is given */
    uint64_t response_timeout_ms; /* --response-timeout SECS, default 60 */
    uint64_t ping_interval_ms;    /* --ping-interval SECS, default 30 */
    uint32_t max_head;            /* --max-head BYTES (flag only), default 65536 */
    uint32_t window;              /* --window BYTES: per-stream receive window, default 262144 */
    int log_level;                /* --log-level: NW_LOG_*, default info */
    char tls_cert[1024];          /* --tls-cert / TLS_CERT: PEM chain, leaf first */
    char tls_key[1024];           /* --tls-key / TLS_KEY */
    int trust_proxy;              /* --trust-proxy: keep incoming X-Forwarded-*, default off */
    /* Who may open a tunnel, who may pass (issue 4). Empty strings: off. */
    char conn_token[NW_CFG_TOKEN_MAX + 1]; /* --conn-token / CONN_TOKEN */
    char allow_agent[1024];       /* --allow-agent / ALLOW_AGENT: POSIX ERE on AGENT_ID */
    char auth_token[NW_CFG_TOKEN_MAX + 1]; /* --auth-token / AUTH_TOKEN */
    char auth_rule[1024];         /* --auth-rule / AUTH_RULE: ERE on the path; "" = all */
    /* Limits. */
    uint32_t max_headers;         /* --max-headers N: fields per request (431), default 200 = max */
    uint32_t max_url;             /* --max-url BYTES: request target (414), default 8192 */
    uint64_t idle_timeout_ms;     /* --idle-timeout SECS: idle keep-alive connection, default 75 */
    uint64_t head_timeout_ms;     /* --head-timeout SECS: whole request head (408), default 30 */
    uint64_t body_timeout_ms;     /* --body-timeout SECS: body without progress (408), default 30 */
    uint32_t max_streams;         /* --max-streams N: in-flight streams per tunnel, default 1000 */
    uint64_t queue_timeout_ms;    /* --queue-timeout SECS: wait for a slot (503), default 5 */
    uint32_t max_conns;           /* --max-conns N: open public connections, default 10000 */
    uint32_t max_tunnels;         /* --max-tunnels N: tunnels in total, default 256 */
    uint32_t max_agent_tunnels;   /* --max-agent-tunnels N: tunnels per AGENT_ID, default 16 */
    int balance;                  /* --balance least|hash-ip|round-robin, default least */
    uint64_t grace_ms;            /* --grace SECS: drain time on SIGTERM/SIGINT, default 30 */
    /* Many services on one server (issue 11). Empty strings: off. */
    char domain[NW_CFG_DOMAIN_MAX + 1]; /* --domain / DOMAIN: parent of dot-less routes,
                                           lowercase, no trailing dot */
    char tokens_file[1024];       /* --tokens / TOKENS_FILE: which token may claim which
                                     routes (serve/tokens.h); checked here at start */
    uint64_t route_hold_ms;       /* --route-hold SECS: route kept held, default 300 */
                                  /* (a named route whose last tunnel left) */
    nw_ops_cfg_t ops;             /* admin listener and logs */
} nw_serve_cfg_t;

enum { NW_BALANCE_LEAST = 0, NW_BALANCE_HASH_IP = 1, NW_BALANCE_ROUND_ROBIN = 2 };

/* agent. Each setting is an environment (or .env) variable and a flag; see
 * agent_opts. */
#define NW_REMOTE_URLS_MAX 16 /* URLs in REMOTE_URL */
typedef struct {
    nw_url_t u[NW_REMOTE_URLS_MAX];
    unsigned n;
} nw_urls_t;

typedef struct {
    char agent_id[129];        /* AGENT_ID / --id: [A-Za-z0-9._@:+-]{1,128}, required */
    nw_url_t remote;           /* REMOTE_URL's first URL (remotes.u[0]) */
    nw_urls_t remotes;         /* REMOTE_URL / --remote: comma-separated http(s)://host[:port], required */
    uint64_t resolve_interval_ms; /* RESOLVE_INTERVAL SECS: re-resolve REMOTE_URL, default 30, 0 off */
    uint32_t max_remotes;      /* MAX_REMOTES: addresses connected to at most, default 16 */
    nw_url_t local;            /* LOCAL_URL / --local: http(s)://host[:port][/path], required */
    uint64_t ping_interval_ms; /* PING_INTERVAL SECS, default 30 */
    uint64_t connect_timeout_ms; /* CONNECT_TIMEOUT SECS, default 10 */
    uint32_t pool_size;        /* POOL_SIZE: idle local connections kept, default 64 */
    uint32_t window;           /* WINDOW BYTES: per-stream receive window, default 262144 */
    uint32_t max_head;         /* MAX_HEAD BYTES: local response head, default 65536 */
    int log_level;             /* LOG_LEVEL: NW_LOG_*, default info */
    char ca_file[1024];        /* CA_FILE: CAs for REMOTE_URL ("" = system) */
    int insecure;              /* TLS_INSECURE / --insecure: skip REMOTE_URL verification */
    char local_ca_file[1024];  /* LOCAL_CA_FILE: CAs for LOCAL_URL */
    int local_insecure;        /* LOCAL_INSECURE: skip LOCAL_URL verification */
    char conn_token[NW_CFG_TOKEN_MAX + 1]; /* CONN_TOKEN, sent as Bearer */
    uint32_t max_conn;         /* MAX_CONN: tunnels (ids ID-1..N when > 1), default 1 */
    uint32_t max_local;        /* MAX_LOCAL_CONNS: local connections at once, default 256 */
    uint32_t local_queue;      /* LOCAL_QUEUE: requests waiting for one (503), default 1024 */
    uint64_t local_queue_timeout_ms; /* LOCAL_QUEUE_TIMEOUT SECS: longest wait, default 5 */
    uint32_t max_pipes;        /* MAX_LOCAL_PIPES: upgraded pipes at once (503), default 1024 */
    uint64_t grace_ms;         /* GRACE SECS: finish streams on SIGTERM, default 30 */
    int preserve_host;         /* PRESERVE_HOST: send the public Host to the service */
    int rewrite_location;      /* REWRITE_LOCATION: make local redirects public, default 1 */
    /* ROUTES: the items as given, trimmed, joined with ", " ("" = the
     * default route); sent in X-Natwrp-Routes. */
    char routes[NW_CFG_ROUTES_LEN];
    nw_creds_t basic;          /* AUTH_BASIC and AUTH_BASIC_FILE, as base64 */
    char basic_file[1024];     /* AUTH_BASIC_FILE: the file read, "" if none */
    char env_file[1024];       /* --env FILE or ./.env: the file actually read, "" if none */
    nw_ops_cfg_t ops;          /* admin listener and logs */
    int inspect;               /* INSPECT: capture requests for the dashboard, default 1 */
    int inspect_secrets;       /* INSPECT_SECRETS: show Authorization, Cookie, ... unmasked */
} nw_agent_cfg_t;

/* Parse "30", "0.5" seconds into milliseconds; rejects negatives and junk. */
int nw_parse_secs(const char *s, uint64_t *ms);
/* Parse a byte count "65536", "64k", "1m"; rejects junk and overflow. */
int nw_parse_bytes(const char *s, uint64_t *out);

/* Build the whole configuration from argv (argv[0] is the subcommand name)
 * and the process environment, and for the agent its .env file, in
 * increasing precedence: file < environment < flags. Returns 0; 1 when
 * --help or --version was printed (exit 0); NW_ECONFIG with a one-line
 * reason naming the setting in err (exit 2). */
int nw_cfg_serve(int argc, char **argv, nw_serve_cfg_t *cfg, char *err, size_t errlen);
int nw_cfg_agent(int argc, char **argv, nw_agent_cfg_t *cfg, char *err, size_t errlen);

#endif
