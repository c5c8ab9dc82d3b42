/* cfg_serve.c: serve's options: flag table, defaults, listen, TLS and
 * tokens-file checks, usage text. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_int.h"
#include "log.h"
/* The tokens file is checked here, at start, so that a malformed one stops
 * serve with exit 2 like any other bad setting; tokens.c is pure (no
 * libuv), so core may call it as cfg_agent.c calls routes.c. serve loads
 * it again for use (and on SIGHUP). */
#include "tokens.h"

#define SERVE_FIELD(f) offsetof(nw_serve_cfg_t, f)
static const opt_t serve_opts[] = {
    {.flag = "--listen", .kind = OPT_LISTEN},
    {.flag = "--response-timeout", .env = "RESPONSE_TIMEOUT", .kind = OPT_SECS,
     .off = SERVE_FIELD(response_timeout_ms)},
    {.flag = "--ping-interval", .env = "PING_INTERVAL", .kind = OPT_SECS,
     .off = SERVE_FIELD(ping_interval_ms)},
    {.flag = "--max-head", .kind = OPT_BYTES, .off = SERVE_FIELD(max_head)},
    {.flag = "--window", .env = "WINDOW", .kind = OPT_BYTES, .off = SERVE_FIELD(window)},
    {.flag = "--log-level", .env = "LOG_LEVEL", .kind = OPT_LEVEL, .off = SERVE_FIELD(log_level)},
    {.flag = "--tls-cert", .env = "TLS_CERT", .kind = OPT_PATH, .off = SERVE_FIELD(tls_cert)},
    {.flag = "--tls-key", .env = "TLS_KEY", .kind = OPT_PATH, .off = SERVE_FIELD(tls_key)},
    {.flag = "--trust-proxy", .env = "TRUST_PROXY", .kind = OPT_BOOL,
     .off = SERVE_FIELD(trust_proxy)},
    {.flag = "--conn-token", .env = "CONN_TOKEN", .kind = OPT_TOKEN,
     .off = SERVE_FIELD(conn_token)},
    {.flag = "--allow-agent", .env = "ALLOW_AGENT", .kind = OPT_REGEX,
     .off = SERVE_FIELD(allow_agent)},
    {.flag = "--auth-token", .env = "AUTH_TOKEN", .kind = OPT_TOKEN,
     .off = SERVE_FIELD(auth_token)},
    {.flag = "--auth-rule", .env = "AUTH_RULE", .kind = OPT_REGEX, .off = SERVE_FIELD(auth_rule)},
    {.flag = "--max-headers", .env = "MAX_HEADERS", .kind = OPT_COUNT1,
     .off = SERVE_FIELD(max_headers), .max = 200},
    {.flag = "--max-url", .env = "MAX_URL", .kind = OPT_BYTES, .off = SERVE_FIELD(max_url)},
    {.flag = "--idle-timeout", .env = "IDLE_TIMEOUT", .kind = OPT_SECS,
     .off = SERVE_FIELD(idle_timeout_ms)},
    {.flag = "--head-timeout", .env = "HEAD_TIMEOUT", .kind = OPT_SECS,
     .off = SERVE_FIELD(head_timeout_ms)},
    {.flag = "--body-timeout", .env = "BODY_TIMEOUT", .kind = OPT_SECS,
     .off = SERVE_FIELD(body_timeout_ms)},
    {.flag = "--max-streams", .env = "MAX_STREAMS", .kind = OPT_COUNT1,
     .off = SERVE_FIELD(max_streams), .max = 1000000},
    {.flag = "--queue-timeout", .env = "QUEUE_TIMEOUT", .kind = OPT_SECS,
     .off = SERVE_FIELD(queue_timeout_ms)},
    {.flag = "--max-conns", .env = "MAX_CONNS", .kind = OPT_COUNT1,
     .off = SERVE_FIELD(max_conns), .max = 1000000},
    {.flag = "--max-tunnels", .env = "MAX_TUNNELS", .kind = OPT_COUNT1,
     .off = SERVE_FIELD(max_tunnels), .max = 1024},
    {.flag = "--max-agent-tunnels", .env = "MAX_AGENT_TUNNELS", .kind = OPT_COUNT1,
     .off = SERVE_FIELD(max_agent_tunnels), .max = 100000},
    {.flag = "--balance", .env = "BALANCE", .kind = OPT_BALANCE, .off = SERVE_FIELD(balance)},
    {.flag = "--grace", .env = "GRACE", .kind = OPT_SECS, .off = SERVE_FIELD(grace_ms)},
    /* After conn_token: the tokens file is checked with it and the domain. */
    {.flag = "--domain", .env = "DOMAIN", .kind = OPT_DOMAIN, .off = SERVE_FIELD(domain)},
    {.flag = "--tokens", .env = "TOKENS_FILE", .kind = OPT_PATH, .off = SERVE_FIELD(tokens_file)},
    {.flag = "--route-hold", .env = "ROUTE_HOLD", .kind = OPT_SECS,
     .off = SERVE_FIELD(route_hold_ms)},
    {.flag = "--admin", .env = "ADMIN_LISTEN", .kind = OPT_ADDR, .off = SERVE_FIELD(ops.admin)},
    {.flag = "--admin-token", .env = "ADMIN_TOKEN", .kind = OPT_TOKEN,
     .off = SERVE_FIELD(ops.admin_token)},
    {.flag = "--access-log", .env = "ACCESS_LOG", .kind = OPT_PATH,
     .off = SERVE_FIELD(ops.access_log)},
    {.flag = "--log-format", .env = "LOG_FORMAT", .kind = OPT_LOGFMT,
     .off = SERVE_FIELD(ops.log_format)},
};

_Static_assert(NW_ARRAY_LEN(serve_opts) <= MAX_OPTS, "raise MAX_OPTS");

/* Long: one help text, printed as written (split only where it must be). */
static void serve_usage(void) {
    fputs("Usage: natwrp serve [options]\n"
          "\n"
          "Accept agents and forward every HTTP request to one of them. Agents connect\n"
          "with a WebSocket to the path " NW_TUNNEL_PATH "; that path is reserved and\n"
          "never forwarded.\n"
          "\n"
          "Options (a flag overrides its environment variable):\n"
          "  --listen ADDR            address to listen on; repeat for up to 8 addresses.\n"
          "                           \":8000\" or \"8000\" (every interface), \"0.0.0.0:8000\",\n"
          "                           \"127.0.0.1:8000\", \"[::1]:8000\", \"localhost:8000\".\n"
          "                           Port 0 picks a free port.\n"
          "                           (default \":8000\", or \":$PORT\" when PORT is set)\n"
          "  --response-timeout SECS  wait this long for the agent's response head\n"
          "                           (default 60; env RESPONSE_TIMEOUT)\n"
          "  --ping-interval SECS     tunnel keepalive ping interval\n"
          "                           (default 30; env PING_INTERVAL)\n"
          "  --max-head BYTES         largest request head accepted, at least 1k\n"
          "                           (default 65536)\n"
          "  --window BYTES           per-stream flow-control window, 1k to 2147483647\n"
          "                           (default 262144; env WINDOW)\n"
          "  --log-level LEVEL        error, warn, info or debug\n"
          "                           (default info; env LOG_LEVEL)\n"
          "  --tls-cert FILE          PEM certificate chain (leaf first); with --tls-key,\n"
          "                           bare --listen addresses serve HTTPS and WSS, and\n"
          "                           http://ADDR stays plain (env TLS_CERT). SIGHUP\n"
          "                           reloads the pair; a bad new pair is refused.\n"
          "  --tls-key FILE           PEM private key (env TLS_KEY)\n"
          "  --trust-proxy            keep incoming X-Forwarded-For (appending the peer),\n"
          "                           X-Forwarded-Proto and -Host, Forwarded, X-Real-IP:\n"
          "                           only behind a proxy you run (env TRUST_PROXY=1).\n"
          "                           Without it the client address replaces\n"
          "                           X-Forwarded-For; Forwarded and X-Real-IP are dropped.\n"
          "\n"
          "Who may connect and pass:\n"
          "  --conn-token TOKEN       agents must send \"Authorization: Bearer TOKEN\" when\n"
          "                           opening a tunnel, else 401 (env CONN_TOKEN)\n"
          "  --allow-agent REGEX      only AGENT_IDs matching this POSIX extended regex may\n"
          "                           open tunnels, else 403 (env ALLOW_AGENT)\n"
          "  --auth-token TOKEN       requests must carry it in X-Auth-Token or Authorization\n"
          "                           (Basic with it as password, any user; \"Bearer \"\n"
          "                           optional), removed before forwarding, else 401\n"
          "                           offering Basic (a browser prompts) (env AUTH_TOKEN)\n"
          "  --auth-rule REGEX        with --auth-token: only paths matching this POSIX\n"
          "                           extended regex need the token; others pass freely.\n"
          "                           Tried, in any case, on the path as sent and\n"
          "                           normalised (decoded, slashes merged, dot segments\n"
          "                           resolved or kept)\n"
          "                           (default: every path; env AUTH_RULE)\n"
          "\n"
          "Many services on one server (agents' ROUTES):\n"
          "  --domain NAME            parent name for agents' dot-less routes: \"ollama\"\n"
          "                           is ollama.NAME (point a wildcard DNS record *.NAME\n"
          "                           at serve). Without it such routes are refused\n"
          "                           (env DOMAIN)\n"
          "  --tokens FILE            lines \"TOKEN PATTERN...\": an agent presenting TOKEN\n"
          "                           (Bearer) may claim only routes a pattern grants:\n"
          "                           \"*\" anything (the default route too),\n"
          "                           \"*.alice.example.com\" any name below it,\n"
          "                           \"alice.example.com\" that host, any path; a\n"
          "                           dot-less pattern is under --domain. \"#\" starts a\n"
          "                           comment. CONN_TOKEN counts as a line \"CONN_TOKEN *\".\n"
          "                           A malformed file stops serve (exit 2); SIGHUP\n"
          "                           re-reads it (env TOKENS_FILE)\n"
          "  --route-hold SECS        a named route whose last tunnel left is held this\n"
          "                           long (its requests wait --queue-timeout, then 503),\n"
          "                           then its host answers 404 again\n"
          "                           (default 300; env ROUTE_HOLD)\n"
          "\n"
          "Operations:\n"
          "  --admin ADDR             the admin listener (health, metrics, dashboard),\n"
          "                           plain HTTP; use a loopback address\n"
          "                           (default off; env ADMIN_LISTEN)\n"
          "  --admin-token TOKEN      every admin path but /livez needs it (Bearer, or as\n"
          "                           the Basic password) (env ADMIN_TOKEN)\n"
          "  --access-log PATH        one line per request (\"-\": stdout); SIGHUP reopens\n"
          "                           it (env ACCESS_LOG)\n"
          "  --log-format FMT         text (default) or json, for the event log and the\n"
          "                           access log (env LOG_FORMAT)\n"
          "\n"
          "Limits:\n"
          "  --max-headers N          header fields per request, at most 200, else 431\n"
          "                           (default 200)\n"
          "  --max-url BYTES          request target length, else 414 (default 8192)\n"
          "  --head-timeout SECS      time to receive a whole request head, else 408\n"
          "                           (default 30)\n"
          "  --body-timeout SECS      a request body that makes no progress this long is\n"
          "                           reset; 408 and close. A response the client takes\n"
          "                           nothing of this long is cut too (default 30)\n"
          "  --idle-timeout SECS      idle keep-alive connections close after (default 75)\n"
          "  --max-streams N          in-flight requests per tunnel (default 1000)\n"
          "  --queue-timeout SECS     a request waits this long for a free stream slot on\n"
          "                           any tunnel, then 503 (default 5)\n"
          "  --max-conns N            open public connections; more are refused with 503\n"
          "                           and closed (default 10000)\n"
          "  --max-tunnels N          tunnels in total, else 503 (default 256)\n"
          "  --max-agent-tunnels N    tunnels per AGENT_ID, else 429 (default 16)\n"
          "  --balance MODE           least (fewest in-flight streams, default), hash-ip\n"
          "                           (sticky by client address) or round-robin\n"
          "  --grace SECS             on SIGTERM/SIGINT: stop accepting, send GOAWAY to\n"
          "                           every agent, let requests finish this long (default 30)\n"
          "  -h, --help               show this help and exit\n"
          "  --version                print the version and exit\n",
          stdout);
    fputs("\n"
          "Environment: PORT, RESPONSE_TIMEOUT, PING_INTERVAL, WINDOW, LOG_LEVEL, TLS_CERT,\n"
          "TLS_KEY, TRUST_PROXY, CONN_TOKEN, ALLOW_AGENT, AUTH_TOKEN, AUTH_RULE, DOMAIN,\n"
          "TOKENS_FILE, ROUTE_HOLD, and each limit by its flag name in capitals\n"
          "(MAX_HEADERS, GRACE, ...). Empty values count as unset.\n"
          "SECS may have a fraction (0.5). BYTES may end in k, m or g (64k = 65536).\n",
          stdout);
}

/* ---- serve -------------------------------------------------------------- */

static void serve_defaults(nw_serve_cfg_t *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->nlisten = 1;
    cfg->listen[0].port = 8000;
    cfg->response_timeout_ms = 60000;
    cfg->ping_interval_ms = 30000;
    cfg->max_head = 65536;
    cfg->window = 262144;
    cfg->log_level = NW_LOG_INFO;
    cfg->max_headers = 200;
    cfg->max_url = 8192;
    cfg->idle_timeout_ms = 75000;
    cfg->head_timeout_ms = 30000;
    cfg->body_timeout_ms = 30000;
    cfg->max_streams = 1000;
    cfg->queue_timeout_ms = 5000;
    cfg->max_conns = 10000;
    cfg->max_tunnels = 256;
    cfg->max_agent_tunnels = 16;
    cfg->balance = NW_BALANCE_LEAST;
    cfg->grace_ms = 30000;
    cfg->route_hold_ms = 300000;
}

/* A listener binds an address: resolving a name at start would block and
 * could bind something else tomorrow, so only literals (and localhost). */
static int listen_host_ok(const char *host) {
    unsigned char a[16];
    return !host[0] || strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, a) == 1 ||
           inet_pton(AF_INET6, host, a) == 1;
}

/* --listen flags replace the default; without them PORT does. */
static int serve_listen(const layers_t *ly, nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    char why[NW_CFG_ERRLEN];
    const char *port = getenv("PORT");
    uint64_t v;
    int i;

    for (i = 0; i < ly->nlisten; i++) {
        if (nw_listen_parse(ly->listen[i], &cfg->listen[i], why, sizeof(why)))
            return nw__cfg_fail(err, errlen, "--listen: %s", why);
        if (!listen_host_ok(cfg->listen[i].host))
            return nw__cfg_fail(err, errlen,
                                "--listen: '%.*s' is not an IP address (serve binds addresses, "
                                "not names; use localhost, an IPv4 or [IPv6] address, or :PORT)",
                                QLEN, cfg->listen[i].host);
    }
    if (ly->nlisten > 0) {
        cfg->nlisten = ly->nlisten;
    } else if (port && port[0]) {
        if (nw__cfg_uint(port, strlen(port), 65535, &v))
            return nw__cfg_fail(err, errlen, "PORT: invalid port '%.*s' (use 0-65535)", QLEN, port);
        cfg->listen[0].port = (uint16_t)v;
    }
    return 0;
}

/* With a certificate, bare listeners serve TLS and http:// ones plain;
 * without one, https:// listeners are an error. */
static int serve_tls(nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    int i, have = cfg->tls_cert[0] != 0;
    if (have != (cfg->tls_key[0] != 0))
        return nw__cfg_fail(err, errlen, "%s",
                            have ? "--tls-cert needs --tls-key" : "--tls-key needs --tls-cert");
    for (i = 0; i < cfg->nlisten; i++) {
        nw_listen_t *l = &cfg->listen[i];
        if (l->scheme == NW_LISTEN_TLS && !have)
            return nw__cfg_fail(err, errlen, "--listen: https:// needs --tls-cert and --tls-key");
        l->tls = have && l->scheme != NW_LISTEN_PLAIN;
    }
    return 0;
}

/* A malformed tokens file (or one that cannot be read) stops the start:
 * "TOKENS_FILE: FILE: line N: reason", named as it was set. The message
 * never holds a token (nw_tokens_load). */
static int serve_tokens(const layers_t *ly, const nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    char why[NW_CFG_ERRLEN + 1024];
    const char *from = "TOKENS_FILE";
    nw_tokens_t *t = NULL;
    size_t i;

    if (!cfg->tokens_file[0])
        return 0;
    for (i = 0; i < ly->nopts; i++)
        if (ly->opts[i].off == SERVE_FIELD(tokens_file) && ly->opts[i].kind == OPT_PATH &&
            ly->from[i])
            from = ly->from[i];
    if (nw_tokens_load(cfg->tokens_file, cfg->domain, cfg->conn_token, &t, why, sizeof(why)))
        return nw__cfg_fail(err, errlen, "%s: %s", from, why);
    nw_tokens_free(t);
    return 0;
}

int nw_cfg_serve(int argc, char **argv, nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    layers_t ly;
    int rc;

    serve_defaults(cfg);
    nw__cfg_layers_init(&ly, serve_opts, NW_ARRAY_LEN(serve_opts));
    rc = nw__cfg_parse_args(argc, argv, &ly, serve_usage, err, errlen);
    if (rc)
        return rc;
    nw__cfg_layers_merge(&ly);
    rc = nw__cfg_layers_apply(&ly, cfg, err, errlen);
    if (rc == 0)
        rc = serve_listen(&ly, cfg, err, errlen);
    if (rc == 0)
        rc = serve_tls(cfg, err, errlen);
    return rc ? rc : serve_tokens(&ly, cfg, err, errlen);
}

