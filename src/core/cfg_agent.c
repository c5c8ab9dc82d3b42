/* cfg_agent.c: the agent's options: flag table, defaults, the .env file layer, usage text. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_int.h"
#include "env.h"
#include "log.h"
#include "routes.h"

#define POOL_MAX 1024ULL          /* largest agent pool size */
#define ENV_FILE_MAX (1u << 20)   /* largest .env or AUTH_BASIC_FILE file read */
/* ROUTES is checked for syntax only: serve resolves a dot-less name under
 * its own --domain, which the agent does not know, so the check expands it
 * under a reserved name (RFC 6761) that can never be a real parent. */
#define ROUTES_CHECK_DOMAIN "natwrp.invalid"

_Static_assert(NW_CFG_ROUTES_LEN >=
                   NW_ROUTES_MAX * (2 + NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 1 + 2),
               "NW_CFG_ROUTES_LEN too small for NW_ROUTES_MAX routes");

#define AGENT_FIELD(f) offsetof(nw_agent_cfg_t, f)
static const opt_t agent_opts[] = {
    {.flag = "--env", .kind = OPT_ENVFILE},
    {.flag = "--id", .env = "AGENT_ID", .kind = OPT_ID,
     .off = AGENT_FIELD(agent_id), .required = 1},
    {.flag = "--remote", .env = "REMOTE_URL", .kind = OPT_URLS,
     .off = AGENT_FIELD(remotes), .required = 1},
    {.flag = "--resolve-interval", .env = "RESOLVE_INTERVAL", .kind = OPT_SECS0,
     .off = AGENT_FIELD(resolve_interval_ms)},
    {.flag = "--max-remotes", .env = "MAX_REMOTES", .kind = OPT_COUNT1,
     .off = AGENT_FIELD(max_remotes), .max = 64},
    {.flag = "--local", .env = "LOCAL_URL", .kind = OPT_URL,
     .off = AGENT_FIELD(local), .required = 1},
    {.flag = "--ping-interval", .env = "PING_INTERVAL", .kind = OPT_SECS,
     .off = AGENT_FIELD(ping_interval_ms)},
    {.flag = "--connect-timeout", .env = "CONNECT_TIMEOUT", .kind = OPT_SECS,
     .off = AGENT_FIELD(connect_timeout_ms)},
    {.flag = "--pool-size", .env = "POOL_SIZE", .kind = OPT_COUNT,
     .off = AGENT_FIELD(pool_size), .max = POOL_MAX},
    {.flag = "--window", .env = "WINDOW", .kind = OPT_BYTES, .off = AGENT_FIELD(window)},
    {.flag = "--max-head", .env = "MAX_HEAD", .kind = OPT_BYTES, .off = AGENT_FIELD(max_head)},
    {.flag = "--log-level", .env = "LOG_LEVEL", .kind = OPT_LEVEL, .off = AGENT_FIELD(log_level)},
    {.flag = "--ca-file", .env = "CA_FILE", .kind = OPT_PATH, .off = AGENT_FIELD(ca_file)},
    {.flag = "--insecure", .env = "TLS_INSECURE", .kind = OPT_BOOL, .off = AGENT_FIELD(insecure)},
    {.flag = "--local-ca-file", .env = "LOCAL_CA_FILE", .kind = OPT_PATH,
     .off = AGENT_FIELD(local_ca_file)},
    {.flag = "--local-insecure", .env = "LOCAL_INSECURE", .kind = OPT_BOOL,
     .off = AGENT_FIELD(local_insecure)},
    {.flag = "--conn-token", .env = "CONN_TOKEN", .kind = OPT_TOKEN,
     .off = AGENT_FIELD(conn_token)},
    {.flag = "--max-conn", .env = "MAX_CONN", .kind = OPT_COUNT1,
     .off = AGENT_FIELD(max_conn), .max = 64},
    {.flag = "--max-local-conns", .env = "MAX_LOCAL_CONNS", .kind = OPT_COUNT1,
     .off = AGENT_FIELD(max_local), .max = 65536},
    {.flag = "--local-queue", .env = "LOCAL_QUEUE", .kind = OPT_COUNT,
     .off = AGENT_FIELD(local_queue), .max = 1000000},
    {.flag = "--local-queue-timeout", .env = "LOCAL_QUEUE_TIMEOUT", .kind = OPT_SECS,
     .off = AGENT_FIELD(local_queue_timeout_ms)},
    {.flag = "--max-local-pipes", .env = "MAX_LOCAL_PIPES", .kind = OPT_COUNT1,
     .off = AGENT_FIELD(max_pipes), .max = 1000000},
    {.flag = "--grace", .env = "GRACE", .kind = OPT_SECS, .off = AGENT_FIELD(grace_ms)},
    {.flag = "--preserve-host", .env = "PRESERVE_HOST", .kind = OPT_BOOL,
     .off = AGENT_FIELD(preserve_host)},
    {.flag = "--rewrite-location", .env = "REWRITE_LOCATION", .kind = OPT_BOOL,
     .off = AGENT_FIELD(rewrite_location)},
    {.flag = "--admin", .env = "ADMIN_LISTEN", .kind = OPT_ADDR, .off = AGENT_FIELD(ops.admin)},
    {.flag = "--admin-token", .env = "ADMIN_TOKEN", .kind = OPT_TOKEN,
     .off = AGENT_FIELD(ops.admin_token)},
    {.flag = "--access-log", .env = "ACCESS_LOG", .kind = OPT_PATH,
     .off = AGENT_FIELD(ops.access_log)},
    {.flag = "--log-format", .env = "LOG_FORMAT", .kind = OPT_LOGFMT,
     .off = AGENT_FIELD(ops.log_format)},
    {.flag = "--inspect", .env = "INSPECT", .kind = OPT_BOOL, .off = AGENT_FIELD(inspect)},
    {.flag = "--inspect-secrets", .env = "INSPECT_SECRETS", .kind = OPT_BOOL,
     .off = AGENT_FIELD(inspect_secrets)},
    {.flag = "--routes", .env = "ROUTES", .kind = OPT_ROUTES, .off = AGENT_FIELD(routes)},
    {.flag = "--auth-basic", .env = "AUTH_BASIC", .kind = OPT_BASIC, .off = AGENT_FIELD(basic)},
    {.flag = "--auth-basic-file", .env = "AUTH_BASIC_FILE", .kind = OPT_BASIC_FILE,
     .off = AGENT_FIELD(basic_file)},
};

_Static_assert(NW_ARRAY_LEN(agent_opts) <= MAX_OPTS, "raise MAX_OPTS");

static void agent_usage(void) {
    fputs("Usage: natwrp agent [options]\n"
          "\n"
          "Connect to a natwrp server and answer its requests from a local HTTP service.\n"
          "Each setting comes from the .env file, then the environment, then a flag; the\n"
          "later one wins. Other keys in the .env file are ignored.\n"
          "\n"
          "  --env FILE               read settings from FILE (default ./.env if it exists)\n"
          "  --id ID                  AGENT_ID: unique name of this agent, 1 to 128 of\n"
          "                           A-Z a-z 0-9 . _ @ : + -   (required)\n"
          "  --remote URL[,URL...]    REMOTE_URL: URL of the natwrp server, no path\n"
          "                           (required); a comma-separated list for several.\n"
          "                           http:// connects with ws://, https:// with wss://.\n"
          "                           MAX_CONN tunnels go to every address each host\n"
          "                           name resolves to (A and AAAA).\n"
          "  --resolve-interval SECS  RESOLVE_INTERVAL: re-resolve REMOTE_URL's names\n"
          "                           this often: new addresses get tunnels, gone ones\n"
          "                           are drained (default 30; 0 = never)\n"
          "  --max-remotes N          MAX_REMOTES: addresses connected to at most, 1..64;\n"
          "                           the others are named in a warning (default 16)\n"
          "  --local URL              LOCAL_URL: base URL of the local service (required).\n"
          "                           It may have a base path: with\n"
          "                           http://127.0.0.1:8080/app a request for /x goes\n"
          "                           to /app/x.\n"
          "  --ping-interval SECS     PING_INTERVAL: keepalive ping interval (default 30)\n"
          "  --connect-timeout SECS   CONNECT_TIMEOUT: connect timeout (default 10)\n"
          "  --pool-size N            POOL_SIZE: idle local connections kept, 0 to 1024\n"
          "                           (default 64)\n"
          "  --window BYTES           WINDOW: per-stream flow-control window, 1k to\n"
          "                           2147483647 (default 262144)\n"
          "  --max-head BYTES         MAX_HEAD: largest response head from the local\n"
          "                           service, at least 1k (default 65536)\n"
          "  --log-level LEVEL        LOG_LEVEL: error, warn, info or debug (default info)\n"
          "  --ca-file FILE           CA_FILE: CA bundle to verify an https:// REMOTE_URL\n"
          "                           (default the system bundle)\n"
          "  --insecure               TLS_INSECURE=1: do not verify the server's\n"
          "                           certificate (warned at every connect)\n"
          "  --local-ca-file FILE     LOCAL_CA_FILE: CA bundle for an https:// LOCAL_URL\n"
          "  --local-insecure         LOCAL_INSECURE=1: do not verify the local service\n"
          "  --conn-token TOKEN       CONN_TOKEN: sent to the server as\n"
          "                           \"Authorization: Bearer TOKEN\" when the tunnel opens\n"
          "  --max-conn N             MAX_CONN: tunnels to open, 1 to 64 (default 1); with\n"
          "                           more than one their ids are AGENT_ID-1 ... AGENT_ID-N\n"
          "  --max-local-conns N      MAX_LOCAL_CONNS: concurrent connections to the local\n"
          "                           service (default 256)\n"
          "  --local-queue N          LOCAL_QUEUE: requests that may wait for one; beyond\n"
          "                           that 503 (default 1024)\n"
          "  --local-queue-timeout SECS  LOCAL_QUEUE_TIMEOUT: longest wait there, then\n"
          "                           503 (default 5)\n"
          "  --max-local-pipes N      MAX_LOCAL_PIPES: upgraded connections (WebSockets)\n"
          "                           open at once; they take no request slot; one more\n"
          "                           upgrade gets 503 (default 1024)\n"
          "  --grace SECS             GRACE: on SIGTERM/SIGINT, finish in-flight requests\n"
          "                           for up to this long (default 30)\n"
          "  --preserve-host          PRESERVE_HOST=1: send the local service the public\n"
          "                           Host the client used (X-Forwarded-Host), not\n"
          "                           LOCAL_URL's host and port\n"
          "  --rewrite-location=0     REWRITE_LOCATION=0: pass Location, Content-Location\n"
          "                           and Refresh URLs, and the client's Destination and\n"
          "                           If URLs, unchanged; by default one that points at\n"
          "                           LOCAL_URL (or, with --preserve-host, at the Host\n"
          "                           sent) gets the public scheme and host, and a\n"
          "                           Destination or If URL on the public scheme and host\n"
          "                           gets LOCAL_URL's scheme, the Host sent and its base\n"
          "                           path (default 1)\n"
          "  --routes LIST            ROUTES: the routes this agent serves, comma-separated:\n"
          "                           HOST or HOST/PATH; HOST a DNS name, \"*.example.com\"\n"
          "                           for any name below it, or a name without a dot\n"
          "                           under serve's --domain; PATH matches whole\n"
          "                           segments; at most 64 (default: serve's default\n"
          "                           route)\n"
          "  --auth-basic USER:PASS   AUTH_BASIC: serve asks visitors of these routes for\n"
          "                           this Basic login (checked at serve; sent to it only\n"
          "                           in the tunnel handshake, never logged)\n"
          "  --auth-basic-file FILE   AUTH_BASIC_FILE: more logins, one user:password a\n"
          "                           line ('#' comments); with AUTH_BASIC, either passes;\n"
          "                           at most 64 in all\n"
          "  --admin ADDR             ADMIN_LISTEN: the admin listener (health, metrics,\n"
          "                           dashboard, request inspector), plain HTTP; use a\n"
          "                           loopback address (default off)\n"
          "  --admin-token TOKEN      ADMIN_TOKEN: every admin path but /livez needs it\n"
          "                           (Bearer, or as the Basic password)\n"
          "  --access-log PATH        ACCESS_LOG: one line per request (\"-\": stdout);\n"
          "                           SIGHUP reopens it\n"
          "  --log-format FMT         LOG_FORMAT: text (default) or json, for the event\n"
          "                           log and the access log\n"
          "  --inspect=0              INSPECT=0: do not capture requests for the\n"
          "                           dashboard's inspector (default 1)\n"
          "  --inspect-secrets        INSPECT_SECRETS=1: show Authorization, Cookie,\n"
          "                           Set-Cookie and X-Auth-Token in the inspector\n"
          "  -h, --help               show this help and exit\n"
          "  --version                print the version and exit\n",
          stdout);
    fputs("\n"
          "URLs are http(s)://host[:port][/path], without user info, query or fragment.\n"
          "SECS may have a fraction (0.5). BYTES may end in k, m or g (64k = 65536).\n"
          "Empty values count as unset.\n"
          "\n"
          "Example .env:\n"
          "  AGENT_ID=mac@home # A unique identifier of the proxy client\n"
          "  REMOTE_URL=http://localhost:8000 # The base URL of the proxy server\n"
          "  LOCAL_URL=http://localhost:11434 # The base URL of the local HTTP server\n",
          stdout);
}

/* Read a whole file, up to ENV_FILE_MAX. 0, a negative errno, or
 * NW_ETOOBIG. *data is NUL-terminated and owned by the caller. */
static int slurp(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *nb;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (!f)
        return -errno;
    for (;;) {
        if (n + 1 >= cap) {
            cap = cap ? cap * 2 : 4096;
            if (cap > ENV_FILE_MAX * 2u) {
                rc = NW_ETOOBIG;
                break;
            }
            nb = nw_realloc(buf, cap);
            if (!nb) {
                rc = NW_ENOMEM;
                break;
            }
            buf = nb;
        }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (ferror(f)) {
            rc = errno ? -errno : -EIO;
            break;
        }
        if (feof(f))
            break;
    }
    fclose(f);
    if (rc == 0 && n > ENV_FILE_MAX)
        rc = NW_ETOOBIG;
    if (rc) {
        nw_free(buf);
        return rc;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* ---- agent -------------------------------------------------------------- */

static void agent_defaults(nw_agent_cfg_t *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->ping_interval_ms = 30000;
    cfg->connect_timeout_ms = 10000;
    cfg->pool_size = 64;
    cfg->window = 262144;
    cfg->max_head = 65536;
    cfg->log_level = NW_LOG_INFO;
    cfg->max_conn = 1;
    cfg->resolve_interval_ms = 30000;
    cfg->max_remotes = 16;
    cfg->max_local = 256;
    cfg->local_queue = 1024;
    cfg->local_queue_timeout_ms = 5000;
    cfg->max_pipes = 1024;
    cfg->grace_ms = 30000;
    cfg->rewrite_location = 1;
    cfg->inspect = 1;
}

/* Keep a copy of each .env value that names a setting; ignore the rest. */
static int on_env_pair(const char *key, const char *val, void *ud) {
    layers_t *ly = ud;
    size_t i;

    for (i = 0; i < ly->nopts; i++) {
        if (ly->opts[i].env && strcmp(ly->opts[i].env, key) == 0) {
            char *copy = nw_strndup(val, strlen(val));
            if (!copy)
                return NW_ENOMEM;
            nw_free(ly->file_val[i]);
            ly->file_val[i] = copy;
            break;
        }
    }
    return 0;
}

/* Read --env FILE, or ./.env when it exists, into the file layer. */
static int load_env_file(layers_t *ly, nw_agent_cfg_t *cfg, char *err, size_t errlen) {
    int k = nw__cfg_find_kind(ly, OPT_ENVFILE);
    const char *given = ly->flag_val[k], *path = given ? given : ".env";
    char why[NW_CFG_ERRLEN], *text = NULL;
    size_t len = 0;
    int rc;

    rc = slurp(path, &text, &len);
    if (rc == -ENOENT && !given)
        return 0;
    if (rc)
        return nw__cfg_fail(err, errlen, "%s%s: %s", given ? "--env " : "", path,
                            rc == NW_ETOOBIG  ? "file too large"
                            : rc == NW_ENOMEM ? "out of memory"
                                              : strerror(-rc));
    rc = nw_env_parse(text, len, on_env_pair, ly, why, sizeof(why));
    nw_free(text);
    if (rc == NW_ENOMEM)
        return nw__cfg_fail(err, errlen, "%s: out of memory", path);
    if (rc)
        return nw__cfg_fail(err, errlen, "%s: %s", path, why);
    if (strlen(path) >= sizeof(cfg->env_file))
        return nw__cfg_fail(err, errlen, "--env: path too long");
    memcpy(cfg->env_file, path, strlen(path) + 1);
    return 0;
}

/* ROUTES: check the list (at most NW_ROUTES_MAX items, each a route) and
 * keep it as sent: items trimmed, joined with ", ", as given (serve
 * resolves dot-less names and case). */
static int agent_routes(const char *from, const char *v, nw_agent_cfg_t *cfg, char *err,
                        size_t errlen) {
    char why[NW_CFG_ERRLEN];
    nw_route_t *r;
    const char *p = v;
    size_t n = 1, k = 0;
    int rc;

    for (; *p; p++)
        n += *p == ',';
    if (n > NW_ROUTES_MAX)
        return nw__cfg_fail(err, errlen, "%s: at most %d routes (%zu given)", from,
                            NW_ROUTES_MAX, n);
    r = nw_calloc(NW_ROUTES_MAX, sizeof(*r));
    if (!r)
        return nw__cfg_fail(err, errlen, "%s: out of memory", from);
    rc = nw_routes_parse_list(v, ROUTES_CHECK_DOMAIN, r, NW_ROUTES_MAX, &n, why, sizeof(why));
    nw_free(r);
    if (rc)
        return nw__cfg_fail(err, errlen, "%s: %s", from, why);
    for (p = v;;) {
        const char *comma = strchr(p, ','), *e = comma ? comma : p + strlen(p), *b = p;
        while (is_blank((unsigned char)*b))
            b++;
        while (e > b && is_blank((unsigned char)e[-1]))
            e--;
        /* Fits: at most NW_ROUTES_MAX items, each at most a route's length. */
        if (k)
            memcpy(cfg->routes + k, ", ", 2), k += 2;
        memcpy(cfg->routes + k, b, (size_t)(e - b));
        k += (size_t)(e - b);
        if (!comma)
            break;
        p = comma + 1;
    }
    cfg->routes[k] = 0;
    return 0;
}

/* AUTH_BASIC and AUTH_BASIC_FILE (both may be given: either login
 * passes). No message quotes a credential. */
static int agent_basic(const layers_t *ly, nw_agent_cfg_t *cfg, char *err, size_t errlen) {
    int kb = nw__cfg_find_kind(ly, OPT_BASIC), kf = nw__cfg_find_kind(ly, OPT_BASIC_FILE);
    char why[NW_CFG_ERRLEN], *text = NULL;
    const char *path;
    size_t len = 0;
    int rc;

    if (ly->val[kb] &&
        nw_creds_add(&cfg->basic, ly->val[kb], strlen(ly->val[kb]), why, sizeof(why)) != 0)
        return nw__cfg_fail(err, errlen, "%s: %s", ly->from[kb], why);
    if (!ly->val[kf])
        return 0;
    path = ly->val[kf];
    if (strlen(path) >= sizeof(cfg->basic_file))
        return nw__cfg_fail(err, errlen, "%s: file name must be 1 to 1023 characters",
                            ly->from[kf]);
    rc = slurp(path, &text, &len);
    if (rc)
        return nw__cfg_fail(err, errlen, "%s: %s: %s", ly->from[kf], path,
                            rc == NW_ETOOBIG  ? "file too large"
                            : rc == NW_ENOMEM ? "out of memory"
                                              : strerror(-rc));
    rc = nw_creds_parse(&cfg->basic, text, len, why, sizeof(why)); /* NUL: a control byte */
    memset(text, 0, len); /* secrets */
    nw_free(text);
    if (rc)
        return nw__cfg_fail(err, errlen, "%s: %s: %s", ly->from[kf], path, why);
    memcpy(cfg->basic_file, path, strlen(path) + 1);
    return 0;
}

/* Every REMOTE_URL server once: the same scheme, host (in any case) and
 * port twice would get two sets of tunnels to one server. */
static int remotes_distinct(const layers_t *ly, const nw_agent_cfg_t *cfg, char *err,
                            size_t errlen) {
    unsigned u, v;
    size_t i;
    for (u = 0; u < cfg->remotes.n; u++)
        for (v = 0; v < u; v++) {
            const nw_url_t *a = &cfg->remotes.u[u], *b = &cfg->remotes.u[v];
            if (a->tls != b->tls || a->port != b->port || strcasecmp(a->host, b->host) != 0)
                continue;
            for (i = 0; i < ly->nopts && ly->opts[i].off != AGENT_FIELD(remotes); i++)
                ;
            return nw__cfg_fail(err, errlen, "%s: %s://%s%s%s:%u is listed twice",
                                i < ly->nopts ? ly->from[i] : "REMOTE_URL",
                                a->tls ? "https" : "http", strchr(a->host, ':') ? "[" : "",
                                a->host, strchr(a->host, ':') ? "]" : "", a->port);
        }
    return 0;
}

int nw_cfg_agent(int argc, char **argv, nw_agent_cfg_t *cfg, char *err, size_t errlen) {
    layers_t ly;
    unsigned u;
    int rc;

    agent_defaults(cfg);
    nw__cfg_layers_init(&ly, agent_opts, NW_ARRAY_LEN(agent_opts));
    rc = nw__cfg_parse_args(argc, argv, &ly, agent_usage, err, errlen);
    if (rc == 0)
        rc = load_env_file(&ly, cfg, err, errlen);
    if (rc == 0) {
        nw__cfg_layers_merge(&ly);
        rc = nw__cfg_layers_apply(&ly, cfg, err, errlen);
    }
    if (rc == 0) {
        int k = nw__cfg_find_kind(&ly, OPT_ROUTES);
        if (ly.val[k])
            rc = agent_routes(ly.from[k], ly.val[k], cfg, err, errlen);
    }
    if (rc == 0)
        rc = agent_basic(&ly, cfg, err, errlen);
    for (u = 0; rc == 0 && u < cfg->remotes.n; u++) {
        /* The tunnel is at the server's root: a prefix would send the
         * handshake, CONN_TOKEN and all, to whatever serves that prefix. */
        size_t i;
        if (!cfg->remotes.u[u].path[0])
            continue;
        for (i = 0; i < ly.nopts && ly.opts[i].off != AGENT_FIELD(remotes); i++)
            ;
        rc = nw__cfg_fail(err, errlen,
                          "%s: the server's URL must not have a path ('%s'): agents "
                          "always dial " NW_TUNNEL_PATH " at the server's root; give "
                          "http(s)://host[:port] only",
                          i < ly.nopts ? ly.from[i] : "REMOTE_URL", cfg->remotes.u[u].path);
    }
    if (rc == 0)
        rc = remotes_distinct(&ly, cfg, err, errlen);
    if (rc == 0)
        cfg->remote = cfg->remotes.u[0];
    nw__cfg_layers_free(&ly);
    return rc;
}

