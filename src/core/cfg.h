/* cfg.h: flags, environment and .env files for both roles (URLs: url.h; .env: env.h).
 * Every limit lives in a config struct, validated once, then read-only. */
#ifndef NW_CFG_H
#define NW_CFG_H

#include "env.h"
#include "nw.h"
#include "url.h"

#define NW_TUNNEL_PATH "/_natwrp/tunnel"
#define NW_CFG_MAX_LISTEN 8
#define NW_CFG_ERRLEN 256
#define NW_CFG_TOKEN_MAX 256 /* CONN_TOKEN, AUTH_TOKEN: 1-256 visible ASCII characters */

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
    /* Who may open a tunnel, who may pass (issue 4). Empty strings: off. */
    char conn_token[NW_CFG_TOKEN_MAX + 1]; /* --conn-token / CONN_TOKEN */
    char allow_agent[1024];       /* --allow-agent / ALLOW_AGENT: POSIX ERE on AGENT_ID */
    char auth_token[NW_CFG_TOKEN_MAX + 1]; /* --auth-token / AUTH_TOKEN */
    char auth_rule[1024];         /* --auth-rule / AUTH_RULE: ERE on the path; "" = all */
    /* Limits. */
    uint32_t max_headers;         /* --max-headers N: header fields per request (431), 200 */
    uint32_t max_url;             /* --max-url BYTES: request target (414), 8192 */
    uint64_t idle_timeout_ms;     /* --idle-timeout SECS: idle keep-alive connection, 75 */
    uint64_t head_timeout_ms;     /* --head-timeout SECS: whole request head (408), 30 */
    uint64_t body_timeout_ms;     /* --body-timeout SECS: request body without progress (408), 30 */
    uint32_t max_streams;         /* --max-streams N: in-flight streams per tunnel, 1000 */
    uint64_t queue_timeout_ms;    /* --queue-timeout SECS: wait for a free slot (then 503), 5 */
    uint32_t max_conns;           /* --max-conns N: open public connections, 10000 */
    uint32_t max_tunnels;         /* --max-tunnels N: tunnels in total, 256 */
    uint32_t max_agent_tunnels;   /* --max-agent-tunnels N: tunnels per AGENT_ID, 16 */
    int balance;                  /* --balance least|hash-ip|round-robin (NW_BALANCE_*) */
    uint64_t grace_ms;            /* --grace SECS: drain time on SIGTERM/SIGINT, 30 */
} nw_serve_cfg_t;

enum { NW_BALANCE_LEAST = 0, NW_BALANCE_HASH_IP = 1, NW_BALANCE_ROUND_ROBIN = 2 };

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
    char conn_token[NW_CFG_TOKEN_MAX + 1]; /* CONN_TOKEN / --conn-token, sent as Bearer */
    uint32_t max_conn;         /* MAX_CONN / --max-conn: tunnels (ids ID-1..N when > 1), 1 */
    uint32_t max_local;        /* MAX_LOCAL_CONNS: concurrent local connections, 64 */
    uint32_t local_queue;      /* LOCAL_QUEUE: requests waiting for one (then 503), 256 */
    uint64_t local_queue_timeout_ms; /* LOCAL_QUEUE_TIMEOUT SECS: longest wait (then 503), 5 */
    uint32_t max_pipes;        /* MAX_LOCAL_PIPES: upgraded pipes open at once (then 503), 1024 */
    uint64_t grace_ms;         /* GRACE / --grace SECS: finish streams on SIGTERM, 30 */
    char env_file[1024];       /* file actually read, "" if none */
} nw_agent_cfg_t;

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
