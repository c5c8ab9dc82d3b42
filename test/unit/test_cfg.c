/* test_cfg.c: durations and sizes, and the serve/agent configuration
 * layering (file < environment < flags). URLs: test_url.c; .env: test_env.c.
 * Temporary files live in one mkdtemp directory removed at exit. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "log.h"
#include "unit.h"

/* ---- helpers ------------------------------------------------------------ */

static char tmp_root[64];
static char tmp_files[64][128];
static int ntmp_files;

static void tmp_cleanup(void) {
    int i;
    for (i = 0; i < ntmp_files; i++)
        unlink(tmp_files[i]);
    if (tmp_root[0])
        rmdir(tmp_root);
}

static const char *tmp_dir(void) {
    if (!tmp_root[0]) {
        snprintf(tmp_root, sizeof(tmp_root), "/tmp/nw_test_cfg.XXXXXX");
        if (!mkdtemp(tmp_root)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(tmp_cleanup);
    }
    return tmp_root;
}

/* Write text to a new file in the temp directory; returns its path. */
static const char *write_tmp(const char *text) {
    char *path;
    FILE *f;
    int fd;

    if (ntmp_files == (int)(sizeof(tmp_files) / sizeof(tmp_files[0]))) {
        fprintf(stderr, "write_tmp: more than %d files: raise tmp_files\n", ntmp_files);
        exit(1);
    }
    path = tmp_files[ntmp_files++];
    snprintf(path, sizeof(tmp_files[0]), "%s/env.XXXXXX", tmp_dir());
    fd = mkstemp(path);
    if (fd < 0 || !(f = fdopen(fd, "w"))) {
        perror("mkstemp");
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

static void clear_env(void) {
    static const char *names[] = {"PORT", "RESPONSE_TIMEOUT", "PING_INTERVAL", "WINDOW",
                                  "LOG_LEVEL", "MAX_HEAD", "AGENT_ID", "REMOTE_URL",
                                  "LOCAL_URL", "CONNECT_TIMEOUT", "POOL_SIZE", "ROUTES",
                                  "AUTH_BASIC", "AUTH_BASIC_FILE"};
    size_t i;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
}

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define HAS(s, sub) (strstr((s), (sub)) != NULL)

/* The example .env from agent --help (test_env.c parses it alone). */
static const char seed_env[] =
    "AGENT_ID=mac@home # A unique identifier of the proxy client\n"
    "REMOTE_URL=http://localhost:8000 # The base URL of the proxy server\n"
    "LOCAL_URL=http://localhost:11434 # The base URL of the local HTTP server\n";

/* ---- durations and sizes ------------------------------------------------ */

static long long secs(const char *s) {
    uint64_t ms = 12345;
    return nw_parse_secs(s, &ms) == 0 ? (long long)ms : -1;
}

static long long bytes(const char *s) {
    uint64_t n = 12345;
    return nw_parse_bytes(s, &n) == 0 ? (long long)n : -1;
}

UNIT_TEST(parse_secs) {
    CHECK_EQ(secs("30"), 30000);
    CHECK_EQ(secs("0"), 0);
    CHECK_EQ(secs("0.5"), 500);
    CHECK_EQ(secs("1.25"), 1250);
    CHECK_EQ(secs("1.0005"), 1000);
    CHECK_EQ(secs(".5"), 500);
    CHECK_EQ(secs("2."), 2000);
    CHECK_EQ(secs("1000000000"), 1000000000000LL);
    CHECK_EQ(secs("1000000000.001"), -1);
    CHECK_EQ(secs("1000000001"), -1);
    CHECK_EQ(secs("99999999999999999999999"), -1);
    CHECK_EQ(secs("-1"), -1);
    CHECK_EQ(secs(""), -1);
    CHECK_EQ(secs("."), -1);
    CHECK_EQ(secs("abc"), -1);
    CHECK_EQ(secs("1s"), -1);
    CHECK_EQ(secs(" 1"), -1);
    CHECK_EQ(secs("1 "), -1);
    CHECK_EQ(secs("1.2.3"), -1);
    CHECK_EQ(secs("+1"), -1);
    CHECK_EQ(secs(NULL), -1);
}

UNIT_TEST(parse_bytes) {
    uint64_t n = 0;

    CHECK_EQ(bytes("65536"), 65536);
    CHECK_EQ(bytes("0"), 0);
    CHECK_EQ(bytes("64k"), 65536);
    CHECK_EQ(bytes("64K"), 65536);
    CHECK_EQ(bytes("1m"), 1048576);
    CHECK_EQ(bytes("1M"), 1048576);
    CHECK_EQ(bytes("1g"), 1073741824);
    CHECK_EQ(bytes("2G"), 2147483648LL);
    CHECK_EQ(nw_parse_bytes("18446744073709551615", &n), 0);
    CHECK(n == UINT64_MAX);
    CHECK_EQ(bytes("18446744073709551616"), -1);
    CHECK_EQ(bytes("18014398509481984k"), -1);
    CHECK_EQ(bytes("17179869184g"), -1);
    CHECK_EQ(bytes(""), -1);
    CHECK_EQ(bytes("k"), -1);
    CHECK_EQ(bytes("-1"), -1);
    CHECK_EQ(bytes("1x"), -1);
    CHECK_EQ(bytes("64kb"), -1);
    CHECK_EQ(bytes("1.5m"), -1);
    CHECK_EQ(bytes(" 1"), -1);
    CHECK_EQ(bytes(NULL), -1);
}

/* ---- serve -------------------------------------------------------------- */

UNIT_TEST(serve_defaults) {
    char *argv[] = {"serve"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_serve(ARGC(argv), argv, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.nlisten, 1);
    CHECK_STR(c.listen[0].host, "");
    CHECK_EQ(c.listen[0].port, 8000);
    CHECK_EQ(c.response_timeout_ms, 60000);
    CHECK_EQ(c.ping_interval_ms, 30000);
    CHECK_EQ(c.max_head, 65536);
    CHECK_EQ(c.window, 262144);
    CHECK_EQ(c.log_level, NW_LOG_INFO);
}

UNIT_TEST(serve_flags) {
    char *argv[] = {"serve", "--listen", "127.0.0.1:0", "--listen=[::1]:9",
                    "--response-timeout", "1.5", "--ping-interval=2", "--max-head", "2k",
                    "--window", "1m", "--log-level", "DEBUG"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_serve(ARGC(argv), argv, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.nlisten, 2);
    CHECK_STR(c.listen[0].host, "127.0.0.1");
    CHECK_EQ(c.listen[0].port, 0);
    CHECK_STR(c.listen[1].host, "::1");
    CHECK_EQ(c.listen[1].port, 9);
    CHECK_EQ(c.response_timeout_ms, 1500);
    CHECK_EQ(c.ping_interval_ms, 2000);
    CHECK_EQ(c.max_head, 2048);
    CHECK_EQ(c.window, 1048576);
    CHECK_EQ(c.log_level, NW_LOG_DEBUG);
}

UNIT_TEST(serve_env) {
    char *plain[] = {"serve"};
    char *flags[] = {"serve", "--listen", ":7000", "--window=2m", "--ping-interval", "9"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    setenv("PORT", "9090", 1);
    setenv("RESPONSE_TIMEOUT", "5", 1);
    setenv("PING_INTERVAL", "0.25", 1);
    setenv("WINDOW", "512k", 1);
    setenv("LOG_LEVEL", "warn", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.nlisten, 1);
    CHECK_STR(c.listen[0].host, "");
    CHECK_EQ(c.listen[0].port, 9090);
    CHECK_EQ(c.response_timeout_ms, 5000);
    CHECK_EQ(c.ping_interval_ms, 250);
    CHECK_EQ(c.window, 524288);
    CHECK_EQ(c.log_level, NW_LOG_WARN);

    /* Flags win over the environment; --listen replaces PORT. */
    CHECK_EQ(nw_cfg_serve(ARGC(flags), flags, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.nlisten, 1);
    CHECK_EQ(c.listen[0].port, 7000);
    CHECK_EQ(c.window, 2097152);
    CHECK_EQ(c.ping_interval_ms, 9000);
    CHECK_EQ(c.response_timeout_ms, 5000);

    /* An empty variable counts as unset. */
    setenv("PORT", "", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.listen[0].port, 8000);

    setenv("PORT", "abc", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), NW_ECONFIG);
    CHECK(HAS(err, "PORT: invalid port 'abc'"));
    setenv("PORT", "65536", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), NW_ECONFIG);
    CHECK(HAS(err, "PORT"));
    CHECK_EQ(nw_cfg_serve(ARGC(flags), flags, &c, err, sizeof(err)), 0); /* --listen wins */

    unsetenv("PORT");
    setenv("PING_INTERVAL", "abc", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), NW_ECONFIG);
    CHECK(strncmp(err, "PING_INTERVAL: invalid duration 'abc'", 37) == 0);
    /* ...but a flag that overrides the bad value makes it harmless. */
    CHECK_EQ(nw_cfg_serve(ARGC(flags), flags, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.ping_interval_ms, 9000);
    clear_env();
}

static int serve_fails(int argc, char **argv, const char *why) {
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    if (nw_cfg_serve(argc, argv, &c, err, sizeof(err)) != NW_ECONFIG)
        return 0;
    if (!HAS(err, why) || strchr(err, '\n')) {
        fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err, why);
        return 0;
    }
    return 1;
}

UNIT_TEST(serve_bad) {
    char *a1[] = {"serve", "--foo"};
    char *a2[] = {"serve", "--foo=1"};
    char *a3[] = {"serve", "--listen"};
    char *a4[] = {"serve", "--listen", "x:99999"};
    char *a5[] = {"serve", "--max-head", "1000"};
    char *a6[] = {"serve", "--window", "3g"};
    char *a7[] = {"serve", "--window=lots"};
    char *a8[] = {"serve", "--log-level", "loud"};
    char *a9[] = {"serve", "extra"};
    char *a10[] = {"serve", "--ping-interval", "0"};
    char *a11[] = {"serve", "--response-timeout", "-1"};
    char *a12[] = {"serve", "--listen", "--window", "2k"};
    char *a13[] = {"serve", "--help=yes"};
    char *a14[] = {"serve", "-x"};
    char *a15[] = {"serve", "--id", "x"};
    char *many[] = {"serve", "--listen=:1", "--listen=:2", "--listen=:3", "--listen=:4",
                    "--listen=:5", "--listen=:6", "--listen=:7", "--listen=:8", "--listen=:9"};

    clear_env();
    CHECK(serve_fails(ARGC(a1), a1, "unknown flag --foo"));
    CHECK(serve_fails(ARGC(a2), a2, "unknown flag --foo"));
    CHECK(serve_fails(ARGC(a3), a3, "--listen: missing value"));
    CHECK(serve_fails(ARGC(a4), a4, "--listen: invalid port in 'x:99999'"));
    CHECK(serve_fails(ARGC(a5), a5, "--max-head: must be between 1024"));
    CHECK(serve_fails(ARGC(a6), a6, "--window: must be between 1024 and 2147483647"));
    CHECK(serve_fails(ARGC(a7), a7, "--window: invalid size 'lots'"));
    CHECK(serve_fails(ARGC(a8), a8, "--log-level: invalid log level 'loud'"));
    CHECK(serve_fails(ARGC(a9), a9, "unexpected argument 'extra'"));
    CHECK(serve_fails(ARGC(a10), a10, "--ping-interval: must be greater than 0"));
    CHECK(serve_fails(ARGC(a11), a11, "--response-timeout: invalid duration '-1'"));
    CHECK(serve_fails(ARGC(a12), a12, "--listen: missing value"));
    CHECK(serve_fails(ARGC(a13), a13, "--help takes no value"));
    CHECK(serve_fails(ARGC(a14), a14, "unknown flag -x"));
    CHECK(serve_fails(ARGC(a15), a15, "unknown flag --id"));
    CHECK(serve_fails(ARGC(many), many, "--listen: at most 8"));
    CHECK_EQ(serve_fails(ARGC(many) - 1, many, ""), 0); /* exactly 8 is fine */
}

/* --body-timeout / BODY_TIMEOUT (issue 9 item 13): default 30 s, flag over
 * environment, 0 refused. */
UNIT_TEST(serve_body_timeout) {
    char *plain[] = {"serve"};
    char *flag[] = {"serve", "--body-timeout", "1.5"};
    char *zero[] = {"serve", "--body-timeout=0"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    unsetenv("BODY_TIMEOUT");
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.body_timeout_ms, 30000);
    setenv("BODY_TIMEOUT", "2", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.body_timeout_ms, 2000);
    CHECK_EQ(nw_cfg_serve(ARGC(flag), flag, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.body_timeout_ms, 1500);
    unsetenv("BODY_TIMEOUT");
    CHECK(serve_fails(ARGC(zero), zero, "--body-timeout: must be greater than 0"));
}

UNIT_TEST(serve_help_version) {
    char *h1[] = {"serve", "--help"};
    char *h2[] = {"serve", "--bogus=1", "-h"};
    char *h3[] = {"serve", "--window", "bad", "-h"};
    char *v[] = {"serve", "--version"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_serve(ARGC(h1), h1, &c, err, sizeof(err)), 1);
    CHECK_EQ(nw_cfg_serve(ARGC(h3), h3, &c, err, sizeof(err)), 1);
    CHECK_EQ(nw_cfg_serve(ARGC(v), v, &c, err, sizeof(err)), 1);
    /* Flags are read in order: an unknown flag before -h is reported. */
    CHECK_EQ(nw_cfg_serve(ARGC(h2), h2, &c, err, sizeof(err)), NW_ECONFIG);
    fflush(stdout);
}

/* --domain, --tokens, --route-hold (issue 11). */
UNIT_TEST(serve_domain) {
    char *plain[] = {"serve"};
    char *flag[] = {"serve", "--domain", "Tunnel.EXAMPLE.com."};
    char *one[] = {"serve", "--domain=localhost"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "", long_ok[260], long_bad[260], lab63[80], lab64[80];
    char arg[300];
    char *a[] = {"serve", arg};
    static const char *const bad[][2] = {
        {"--domain=", "--domain: invalid domain '': empty name"},
        {"--domain=.", "--domain: invalid domain '.': empty name"},
        {"--domain=a..b", "--domain: invalid domain 'a..b': empty label"},
        {"--domain=.a.b", "empty label"},
        {"--domain=a.b..", "empty label"},
        {"--domain=*.example.com", "a name, not a pattern"},
        {"--domain=a_b.example.com", "only letters, digits, '-' and dots"},
        {"--domain=a b.com", "only letters, digits, '-' and dots"},
        {"--domain=-a.example.com", "a label starts or ends with '-'"},
        {"--domain=a-.example.com", "a label starts or ends with '-'"},
        {"--domain=exa\xc3\xa9mple.com", "only letters, digits"},
        {"--domain=a.example.com:8000", "only letters, digits"},
        {"--domain=a.example.com/x", "only letters, digits"},
    };
    size_t i;

    clear_env();
    unsetenv("DOMAIN");
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_STR(c.domain, "");
    CHECK_STR(c.tokens_file, "");
    CHECK_EQ(c.route_hold_ms, 300000);

    /* Lowercase, one trailing dot dropped; one label is a name too. */
    CHECK_EQ(nw_cfg_serve(ARGC(flag), flag, &c, err, sizeof(err)), 0);
    CHECK_STR(c.domain, "tunnel.example.com");
    CHECK_EQ(nw_cfg_serve(ARGC(one), one, &c, err, sizeof(err)), 0);
    CHECK_STR(c.domain, "localhost");
    setenv("DOMAIN", "X-1.Example.org", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_STR(c.domain, "x-1.example.org");
    CHECK_EQ(nw_cfg_serve(ARGC(flag), flag, &c, err, sizeof(err)), 0); /* the flag wins */
    CHECK_STR(c.domain, "tunnel.example.com");
    setenv("DOMAIN", "bad_name", 1);
    CHECK(serve_fails(ARGC(plain), plain, "DOMAIN: invalid domain 'bad_name'"));
    unsetenv("DOMAIN");

    for (i = 0; i < ARGC(bad); i++) {
        snprintf(arg, sizeof(arg), "%s", bad[i][0]);
        if (strcmp(bad[i][0], "--domain=") == 0) {
            /* An empty flag value is refused (an empty variable is unset). */
            CHECK(serve_fails(ARGC(a), a, bad[i][1]));
            continue;
        }
        if (!serve_fails(ARGC(a), a, bad[i][1])) {
            fprintf(stderr, "  case %s\n", bad[i][0]);
            CHECK(0);
        }
    }

    /* 200 bytes at most (routes under it need room in 253); 63 per label. */
    memset(long_ok, 'a', 200);
    for (i = 63; i < 200; i += 64)
        long_ok[i] = '.';
    long_ok[200] = 0;
    snprintf(arg, sizeof(arg), "--domain=%s.", long_ok); /* the dot does not count */
    CHECK_EQ(nw_cfg_serve(ARGC(a), a, &c, err, sizeof(err)), 0);
    CHECK_STR(c.domain, long_ok);
    memcpy(long_bad, long_ok, 200);
    memcpy(long_bad + 200, "a", 2);
    snprintf(arg, sizeof(arg), "--domain=%s", long_bad);
    CHECK(serve_fails(ARGC(a), a, "longer than 200 bytes"));
    memset(lab63, 'b', 63);
    memcpy(lab63 + 63, ".com", 5);
    snprintf(arg, sizeof(arg), "--domain=%s", lab63);
    CHECK_EQ(nw_cfg_serve(ARGC(a), a, &c, err, sizeof(err)), 0);
    memset(lab64, 'b', 64);
    memcpy(lab64 + 64, ".com", 5);
    snprintf(arg, sizeof(arg), "--domain=%s", lab64);
    CHECK(serve_fails(ARGC(a), a, "a label is longer than 63 bytes"));
}

UNIT_TEST(serve_tokens_file) {
    const char *good = write_tmp("# who may claim what\nalice *.alice.example.com\nops *\n");
    const char *bad = write_tmp("ok *\n\nS3cr3tT0k a.example.com/api\n");
    const char *dotless = write_tmp("carol ollama\n");
    char want[NW_CFG_ERRLEN];
    char *g[] = {"serve", "--tokens", (char *)good};
    char *b[] = {"serve", "--tokens", (char *)bad};
    char *plain[] = {"serve"};
    char *d0[] = {"serve", "--tokens", (char *)dotless};
    char *d1[] = {"serve", "--tokens", (char *)dotless, "--domain", "t.example.com"};
    char *miss[] = {"serve", "--tokens=/nonexistent/natwrp-tokens"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    unsetenv("TOKENS_FILE");
    unsetenv("DOMAIN");
    CHECK_EQ(nw_cfg_serve(ARGC(g), g, &c, err, sizeof(err)), 0);
    CHECK_STR(c.tokens_file, good);

    /* Named as set, with the file and line; never the token. */
    snprintf(want, sizeof(want), "--tokens: %s: line 3: pattern \"a.example.com/api\"", bad);
    CHECK(serve_fails(ARGC(b), b, want));
    CHECK_EQ(nw_cfg_serve(ARGC(b), b, &c, err, sizeof(err)), NW_ECONFIG);
    CHECK(!HAS(err, "S3cr3t"));
    setenv("TOKENS_FILE", bad, 1);
    snprintf(want, sizeof(want), "TOKENS_FILE: %s: line 3: ", bad);
    CHECK(serve_fails(ARGC(plain), plain, want));
    CHECK_EQ(nw_cfg_serve(ARGC(g), g, &c, err, sizeof(err)), 0); /* the flag wins */
    unsetenv("TOKENS_FILE");

    /* A dot-less pattern needs --domain, given in any layer. */
    CHECK(serve_fails(ARGC(d0), d0, "line 1: pattern \"ollama\": a name without a dot needs"));
    CHECK_EQ(nw_cfg_serve(ARGC(d1), d1, &c, err, sizeof(err)), 0);
    setenv("DOMAIN", "t.example.com", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(d0), d0, &c, err, sizeof(err)), 0);
    unsetenv("DOMAIN");

    CHECK(serve_fails(ARGC(miss), miss,
                      "--tokens: /nonexistent/natwrp-tokens: No such file or directory"));
}

UNIT_TEST(serve_route_hold) {
    char *flag[] = {"serve", "--route-hold", "2.5"};
    char *plain[] = {"serve"};
    char *zero[] = {"serve", "--route-hold=0"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    setenv("ROUTE_HOLD", "60", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.route_hold_ms, 60000);
    CHECK_EQ(nw_cfg_serve(ARGC(flag), flag, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.route_hold_ms, 2500);
    setenv("ROUTE_HOLD", "soon", 1);
    CHECK(serve_fails(ARGC(plain), plain, "ROUTE_HOLD: invalid duration 'soon'"));
    unsetenv("ROUTE_HOLD");
    CHECK(serve_fails(ARGC(zero), zero, "--route-hold: must be greater than 0"));
}

UNIT_TEST(serve_ops) {
    char *plain[] = {"serve"};
    char *on[] = {"serve", "--admin", "127.0.0.1:9100", "--admin-token", "adm1n",
                  "--access-log", "-", "--log-format", "JSON"};
    char *tls[] = {"serve", "--admin", "https://127.0.0.1:9100"};
    char *badfmt[] = {"serve", "--log-format", "xml"};
    char *badaddr[] = {"serve", "--admin", "nowhere"};
    nw_serve_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK(!c.ops.admin.set && !c.ops.admin_token[0] && !c.ops.access_log[0]);
    CHECK_EQ(c.ops.log_format, NW_LOGFMT_TEXT);
    CHECK_EQ(nw_cfg_serve(ARGC(on), on, &c, err, sizeof(err)), 0);
    CHECK(c.ops.admin.set && c.ops.admin.addr.port == 9100);
    CHECK_STR(c.ops.admin.addr.host, "127.0.0.1");
    CHECK_STR(c.ops.admin_token, "adm1n");
    CHECK_STR(c.ops.access_log, "-");
    CHECK_EQ(c.ops.log_format, NW_LOGFMT_JSON);
    setenv("ADMIN_LISTEN", "[::1]:0", 1);
    CHECK_EQ(nw_cfg_serve(ARGC(plain), plain, &c, err, sizeof(err)), 0);
    CHECK(c.ops.admin.set && c.ops.admin.addr.port == 0);
    unsetenv("ADMIN_LISTEN");
    CHECK(serve_fails(ARGC(tls), tls, "--admin: the admin listener speaks plain HTTP"));
    CHECK(serve_fails(ARGC(badfmt), badfmt, "--log-format: invalid log format 'xml'"));
    CHECK(serve_fails(ARGC(badaddr), badaddr, "--admin: "));
}

/* ---- agent -------------------------------------------------------------- */

UNIT_TEST(agent_precedence) {
    const char *path = write_tmp("# natwrp agent\n"
                                 "AGENT_ID=file@id\n"
                                 "REMOTE_URL=https://proxy.example.com/\n"
                                 "LOCAL_URL=http://127.0.0.1:11434/app\n"
                                 "PING_INTERVAL=5\n"
                                 "POOL_SIZE=3\n"
                                 "WINDOW=1m\n"
                                 "OTHER_KEY=ignored\n");
    char *a1[] = {"agent", "--env", (char *)path};
    char *a2[] = {"agent", "--env", (char *)path, "--id", "flag-id", "--pool-size=5"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_STR(c.env_file, path);
    CHECK_STR(c.agent_id, "file@id");
    CHECK_EQ(c.remote.tls, 1);
    CHECK_STR(c.remote.host, "proxy.example.com");
    CHECK_EQ(c.remote.port, 443);
    CHECK_STR(c.remote.path, ""); /* a lone trailing '/' is no path */
    CHECK_STR(c.local.host, "127.0.0.1");
    CHECK_EQ(c.local.port, 11434);
    CHECK_STR(c.local.path, "/app");
    CHECK_EQ(c.ping_interval_ms, 5000);
    CHECK_EQ(c.pool_size, 3);
    CHECK_EQ(c.window, 1048576);
    CHECK_EQ(c.connect_timeout_ms, 10000);

    /* The environment wins over the file. */
    setenv("AGENT_ID", "env-id", 1);
    setenv("POOL_SIZE", "4", 1);
    setenv("CONNECT_TIMEOUT", "2.5", 1);
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_STR(c.agent_id, "env-id");
    CHECK_EQ(c.pool_size, 4);
    CHECK_EQ(c.connect_timeout_ms, 2500);
    CHECK_EQ(c.ping_interval_ms, 5000);

    /* Flags win over both. */
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_STR(c.agent_id, "flag-id");
    CHECK_EQ(c.pool_size, 5);
    CHECK_EQ(c.connect_timeout_ms, 2500);
    clear_env();
}

UNIT_TEST(agent_defaults_and_flags) {
    const char *empty = write_tmp("");
    char *a1[] = {"agent", "--env", (char *)empty, "--id=a.b_c@d:e+f-g",
                  "--remote", "http://[::1]:8000", "--local=http://localhost:11434/"};
    char *a2[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--ping-interval", "0.5", "--connect-timeout", "3",
                  "--pool-size", "0", "--window", "64k", "--max-head", "1k",
                  "--log-level", "error"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_STR(c.agent_id, "a.b_c@d:e+f-g");
    CHECK_STR(c.remote.host, "::1");
    CHECK_EQ(c.remote.tls, 0);
    CHECK_STR(c.local.path, "");
    CHECK_EQ(c.ping_interval_ms, 30000);
    CHECK_EQ(c.connect_timeout_ms, 10000);
    CHECK_EQ(c.pool_size, 64);
    CHECK_EQ(c.window, 262144);
    CHECK_EQ(c.max_head, 65536);
    CHECK_EQ(c.log_level, NW_LOG_INFO);

    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.ping_interval_ms, 500);
    CHECK_EQ(c.connect_timeout_ms, 3000);
    CHECK_EQ(c.pool_size, 0);
    CHECK_EQ(c.window, 65536);
    CHECK_EQ(c.max_head, 1024);
    CHECK_EQ(c.log_level, NW_LOG_ERROR);
}

UNIT_TEST(agent_seed_env_file) {
    const char *path = write_tmp(seed_env);
    char *argv[] = {"agent", "--env", (char *)path};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(argv), argv, &c, err, sizeof(err)), 0);
    CHECK_STR(c.agent_id, "mac@home");
    CHECK_STR(c.remote.host, "localhost");
    CHECK_EQ(c.remote.port, 8000);
    CHECK_STR(c.local.host, "localhost");
    CHECK_EQ(c.local.port, 11434);
}

static int agent_fails(int argc, char **argv, const char *why) {
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    if (nw_cfg_agent(argc, argv, &c, err, sizeof(err)) != NW_ECONFIG) {
        fprintf(stderr, "  accepted\n");
        return 0;
    }
    if (!HAS(err, why) || strchr(err, '\n')) {
        fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err, why);
        return 0;
    }
    return 1;
}

/* Issue 9: upgraded pipes have their own bound; the local queue a timeout. */
UNIT_TEST(agent_pipes_and_queue_timeout) {
    const char *empty = write_tmp("");
    char *a1[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l"};
    char *a2[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--local-queue-timeout", "0.5",
                  "--max-local-pipes", "7"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.local_queue_timeout_ms, 5000);
    CHECK_EQ(c.max_pipes, 1024);
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.local_queue_timeout_ms, 500);
    CHECK_EQ(c.max_pipes, 7);
    setenv("LOCAL_QUEUE_TIMEOUT", "2", 1);
    setenv("MAX_LOCAL_PIPES", "3", 1);
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.local_queue_timeout_ms, 2000);
    CHECK_EQ(c.max_pipes, 3);
    setenv("MAX_LOCAL_PIPES", "0", 1);
    CHECK(agent_fails(ARGC(a1), a1, "MAX_LOCAL_PIPES"));
    unsetenv("MAX_LOCAL_PIPES");
    setenv("LOCAL_QUEUE_TIMEOUT", "-1", 1);
    CHECK(agent_fails(ARGC(a1), a1, "LOCAL_QUEUE_TIMEOUT"));
    unsetenv("LOCAL_QUEUE_TIMEOUT");
    clear_env();
}

/* PRESERVE_HOST off and REWRITE_LOCATION on by default; flags, the
 * environment and .env set them; a bad value names the setting. */
UNIT_TEST(agent_host_and_redirects) {
    const char *empty = write_tmp("");
    const char *envf = write_tmp("AGENT_ID=x\nREMOTE_URL=http://r\nLOCAL_URL=http://l\n"
                                 "PRESERVE_HOST=yes\nREWRITE_LOCATION=off\n");
    char *a1[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l"};
    char *a2[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--preserve-host", "--rewrite-location=0"};
    char *a3[] = {"agent", "--env", (char *)envf};
    char *a4[] = {"agent", "--env", (char *)envf, "--preserve-host=0", "--rewrite-location"};
    char *a5[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--preserve-host=2"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.preserve_host, 0);
    CHECK_EQ(c.rewrite_location, 1);
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.preserve_host, 1);
    CHECK_EQ(c.rewrite_location, 0);
    CHECK_EQ(nw_cfg_agent(ARGC(a3), a3, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.preserve_host, 1);
    CHECK_EQ(c.rewrite_location, 0);
    CHECK_EQ(nw_cfg_agent(ARGC(a4), a4, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.preserve_host, 0);
    CHECK_EQ(c.rewrite_location, 1);
    setenv("PRESERVE_HOST", "1", 1);
    setenv("REWRITE_LOCATION", "false", 1);
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.preserve_host, 1);
    CHECK_EQ(c.rewrite_location, 0);
    setenv("REWRITE_LOCATION", "maybe", 1);
    CHECK(agent_fails(ARGC(a1), a1, "REWRITE_LOCATION"));
    unsetenv("REWRITE_LOCATION");
    setenv("PRESERVE_HOST", "2", 1);
    CHECK(agent_fails(ARGC(a1), a1, "PRESERVE_HOST"));
    unsetenv("PRESERVE_HOST");
    CHECK(agent_fails(ARGC(a5), a5, "--preserve-host"));
    clear_env();
}

/* ROUTES is kept as sent (items trimmed, joined with ", ", as written);
 * AUTH_BASIC and AUTH_BASIC_FILE add up to one credential list as base64;
 * a bad route or login line exits with the setting (and file:line) named,
 * never the secret. */
UNIT_TEST(agent_routes_and_basic) {
    const char *empty = write_tmp("");
    const char *envf = write_tmp("AGENT_ID=x\nREMOTE_URL=http://r\nLOCAL_URL=http://l\n"
                                 "ROUTES=' ollama ,A.Example.com/api/'\n");
    const char *logins = write_tmp("# who\n\nbob:b-pass\r\nalice:a:pass\n");
    const char *bad = write_tmp("ok:Secret-1\nno-colon-Secret-2\n");
    char *a1[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l"};
    char *a2[] = {"agent", "--env", (char *)envf};
    char *a3[] = {"agent", "--env", (char *)envf, "--routes", "*.x.example.com/v1",
                  "--auth-basic", "alice:a:pass", "--auth-basic-file", (char *)logins};
    char *a4[] = {"agent", "--env", (char *)envf, "--auth-basic-file", (char *)bad};
    char *a5[] = {"agent", "--env", (char *)envf, "--routes", "a.example.com, a b"};
    char *a6[] = {"agent", "--env", (char *)envf, "--auth-basic", ":Secret-3"};
    char *a7[] = {"agent", "--env", (char *)envf, "--auth-basic-file", "/nonexistent/logins"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_STR(c.routes, "");
    CHECK_EQ(c.basic.n, 0);
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_STR(c.routes, "ollama, A.Example.com/api/");
    CHECK_EQ(nw_cfg_agent(ARGC(a3), a3, &c, err, sizeof(err)), 0);
    CHECK_STR(c.routes, "*.x.example.com/v1");
    CHECK_EQ(c.basic.n, 2); /* alice twice: once */
    CHECK_STR(c.basic.b64[0], "YWxpY2U6YTpwYXNz");
    CHECK_STR(c.basic.b64[1], "Ym9iOmItcGFzcw==");
    CHECK_STR(c.basic_file, logins);
    setenv("ROUTES", "b.example.com,\tc.example.com/x ", 1);
    setenv("AUTH_BASIC", "carol:c-pass", 1);
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_STR(c.routes, "b.example.com, c.example.com/x");
    CHECK_EQ(c.basic.n, 1);
    CHECK_STR(c.basic.b64[0], "Y2Fyb2w6Yy1wYXNz");
    setenv("ROUTES", "a.example.com,,b.example.com", 1);
    CHECK(agent_fails(ARGC(a2), a2, "ROUTES: empty route in the list"));
    setenv("ROUTES", "*", 1);
    CHECK(agent_fails(ARGC(a2), a2, "ROUTES: route \"*\""));
    unsetenv("ROUTES");
    unsetenv("AUTH_BASIC");
    CHECK(agent_fails(ARGC(a4), a4, "--auth-basic-file: "));
    CHECK(agent_fails(ARGC(a4), a4, ": line 2: expected user:password"));
    CHECK_EQ(nw_cfg_agent(ARGC(a4), a4, &c, err, sizeof(err)), NW_ECONFIG);
    CHECK(!HAS(err, "Secret"));
    CHECK(agent_fails(ARGC(a5), a5, "--routes: route \"a b\""));
    CHECK(agent_fails(ARGC(a6), a6, "--auth-basic: empty user name"));
    CHECK_EQ(nw_cfg_agent(ARGC(a6), a6, &c, err, sizeof(err)), NW_ECONFIG);
    CHECK(!HAS(err, "Secret"));
    CHECK(agent_fails(ARGC(a7), a7, "--auth-basic-file: /nonexistent/logins: No such file"));
    clear_env();
}

UNIT_TEST(agent_missing_required) {
    const char *empty = write_tmp("# nothing here\nAGENT_ID=\n");
    char *a1[] = {"agent", "--env", (char *)empty};
    char *a2[] = {"agent", "--env", (char *)empty, "--id", "x"};
    char *a3[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r"};

    clear_env();
    CHECK(agent_fails(ARGC(a1), a1, "AGENT_ID is not set (use AGENT_ID=... in .env, the "
                                    "environment, or --id)"));
    CHECK(agent_fails(ARGC(a2), a2, "REMOTE_URL is not set (use REMOTE_URL=... in .env, the "
                                    "environment, or --remote)"));
    CHECK(agent_fails(ARGC(a3), a3, "LOCAL_URL is not set (use LOCAL_URL=... in .env, the "
                                    "environment, or --local)"));
    setenv("LOCAL_URL", "", 1); /* empty counts as unset */
    CHECK(agent_fails(ARGC(a3), a3, "LOCAL_URL is not set"));
    clear_env();
}

UNIT_TEST(agent_bad_values) {
    const char *bad_pool = write_tmp("AGENT_ID=x\nREMOTE_URL=http://r\nLOCAL_URL=http://l\n"
                                     "POOL_SIZE=abc\n");
    const char *bad_quote = write_tmp("AGENT_ID=x\nREMOTE_URL='http://r\n");
    const char *bad_url = write_tmp("AGENT_ID=x\nREMOTE_URL=ftp://r\nLOCAL_URL=http://l\n");
    char *a1[] = {"agent", "--env", (char *)bad_pool};
    char *a2[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "2"};
    char *a3[] = {"agent", "--env", (char *)bad_quote};
    char *a4[] = {"agent", "--env", (char *)bad_url};
    char *a5[] = {"agent", "--env", (char *)bad_url, "--remote", "ftp://r"};
    char *a6[] = {"agent", "--env", "/nonexistent/natwrp.env"};
    char *a7[] = {"agent", "--env", (char *)bad_pool, "--id", "has space"};
    char *a8[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "1025"};
    char *a9[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "1", "--connect-timeout",
                  "0"};
    char *a10[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "1", "--local",
                   "http://u@l"};
    char *a11[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "1", "--max-head", "1g",
                   "--window", "abc"};
    char *a12[] = {"agent", "--env", (char *)bad_pool, "--listen", ":1"};
    char *a13[] = {"agent", "--env", (char *)tmp_dir()};
    char long_id[140];
    char *a14[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "1", "--id", long_id};
    char *a15[] = {"agent", "--env", (char *)bad_pool, "--pool-size", "1", "--remote",
                   "https://r/natwrp/"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    memset(long_id, 'a', 129);
    long_id[129] = 0;
    CHECK(agent_fails(ARGC(a1), a1, "POOL_SIZE: invalid number 'abc'"));
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0); /* overridden */
    CHECK_EQ(c.pool_size, 2);
    CHECK(agent_fails(ARGC(a3), a3, "line 2: unterminated quote"));
    CHECK(agent_fails(ARGC(a3), a3, bad_quote));
    CHECK(agent_fails(ARGC(a4), a4,
                      "REMOTE_URL: unsupported scheme 'ftp' (use http:// or https://)"));
    CHECK(agent_fails(ARGC(a5), a5, "--remote: unsupported scheme 'ftp'"));
    CHECK(agent_fails(ARGC(a6), a6,
                      "--env /nonexistent/natwrp.env: No such file or directory"));
    CHECK(agent_fails(ARGC(a7), a7, "--id: invalid character ' '"));
    CHECK(agent_fails(ARGC(a8), a8, "--pool-size: invalid number '1025' (use 0-1024)"));
    CHECK(agent_fails(ARGC(a9), a9, "--connect-timeout: must be greater than 0"));
    CHECK(agent_fails(ARGC(a10), a10, "--local: user info"));
    CHECK(agent_fails(ARGC(a11), a11, "--window: invalid size 'abc'"));
    CHECK(agent_fails(ARGC(a12), a12, "unknown flag --listen"));
    CHECK(agent_fails(ARGC(a13), a13, "--env "));
    CHECK(agent_fails(ARGC(a14), a14, "--id: must be 1 to 128 characters"));
    /* The tunnel is at the server's root: a path would be proxied. */
    CHECK(agent_fails(ARGC(a15), a15, "--remote: the server's URL must not have a path "
                                      "('/natwrp')"));
    setenv("REMOTE_URL", "http://r/x", 1);
    CHECK(agent_fails(ARGC(a2), a2, "REMOTE_URL: the server's URL must not have a path"));
    unsetenv("REMOTE_URL");
    long_id[128] = 0;
    CHECK_EQ(nw_cfg_agent(ARGC(a14), a14, &c, err, sizeof(err)), 0);
    CHECK_EQ(strlen(c.agent_id), 128);

    setenv("WINDOW", "1k", 1);
    setenv("MAX_HEAD", "100", 1);
    CHECK(agent_fails(ARGC(a2), a2, "MAX_HEAD: must be between 1024"));
    setenv("MAX_HEAD", "4k", 1);
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.window, 1024);
    CHECK_EQ(c.max_head, 4096);
    clear_env();
}

/* Without --env, ./.env is read when it exists and skipped when not. */
UNIT_TEST(agent_default_env_file) {
    char *argv[] = {"agent"};
    char cwd[4096], path[128];
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";
    FILE *f;
    int rc1, rc2;

    clear_env();
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    CHECK_EQ(chdir(tmp_dir()), 0);
    snprintf(path, sizeof(path), "%s/.env", tmp_dir());
    f = fopen(path, "w");
    if (f) {
        fputs(seed_env, f);
        fclose(f);
    }
    rc1 = nw_cfg_agent(ARGC(argv), argv, &c, err, sizeof(err));
    unlink(path);
    rc2 = NW_ECONFIG;
    if (rc1 == 0 && strcmp(c.env_file, ".env") == 0 && strcmp(c.agent_id, "mac@home") == 0)
        rc2 = nw_cfg_agent(ARGC(argv), argv, &c, err, sizeof(err));
    CHECK_EQ(chdir(cwd), 0);
    CHECK(f != NULL);
    CHECK_EQ(rc1, 0);
    CHECK_EQ(rc2, NW_ECONFIG);
    CHECK_STR(c.env_file, "");
    CHECK(HAS(err, "AGENT_ID is not set"));
}

UNIT_TEST(agent_help_version) {
    char *h[] = {"agent", "--help"};
    char *h2[] = {"agent", "--env", "/nonexistent", "-h"};
    char *v[] = {"agent", "--version"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(h), h, &c, err, sizeof(err)), 1);
    CHECK_EQ(nw_cfg_agent(ARGC(h2), h2, &c, err, sizeof(err)), 1);
    CHECK_EQ(nw_cfg_agent(ARGC(v), v, &c, err, sizeof(err)), 1);
    fflush(stdout);
}

/* ---- cfg.h tells the truth ----------------------------------------------- */

typedef struct {
    const char *name;
    uint64_t value; /* the default the code sets, in the field's unit */
} dflt_t;

/* Find field name's default in tab, scaled to what cfg.h's comment says
 * (seconds for a _ms field). -1 when the field is not in tab. */
static long long dflt_find(const dflt_t *tab, size_t n, const char *name, size_t len) {
    size_t i;
    for (i = 0; i < n; i++)
        if (strlen(tab[i].name) == len && memcmp(tab[i].name, name, len) == 0)
            return (long long)(len > 3 && memcmp(name + len - 3, "_ms", 3) == 0
                                   ? tab[i].value / 1000
                                   : tab[i].value);
    return -1;
}

/* Check each "default N" in the comments of cfg.h against the defaults the
 * code sets (cfg.h said 16/64/256 for agent limits that were 64/256/1024).
 * 0 or the line number of the first wrong or unknown one. */
static int check_header_defaults(const dflt_t *serve, size_t nserve, const dflt_t *agent,
                                 size_t nagent, char *bad, size_t badlen) {
    char path[256], line[256];
    const char *unit = strstr(__FILE__, "test/unit/test_cfg.c");
    FILE *f;
    int n = 0, in_agent = 0, checked = 0;

    snprintf(path, sizeof(path), "%.*ssrc/core/cfg.h", unit ? (int)(unit - __FILE__) : 0,
             __FILE__);
    f = fopen(path, "r");
    if (!f) {
        snprintf(bad, badlen, "cannot open %s", path);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        const char *d = strstr(line, "default "), *semi = strchr(line, ';'), *end, *name;
        long long want;
        n++;
        if (strstr(line, "} nw_serve_cfg_t;"))
            in_agent = 1;
        if (!d || !semi || semi > d || d[8] < '0' || d[8] > '9')
            continue;
        for (end = semi; end > line && end[-1] == ']';)
            while (end > line && *--end != '[')
                ;
        for (name = end; name > line && (name[-1] == '_' || isalnum((unsigned char)name[-1]));)
            name--;
        want = in_agent ? dflt_find(agent, nagent, name, (size_t)(end - name))
                        : dflt_find(serve, nserve, name, (size_t)(end - name));
        if (want < 0 || want != strtoll(d + 8, NULL, 10)) {
            snprintf(bad, badlen, "cfg.h line %d: %s", n, line);
            fclose(f);
            return n;
        }
        checked++;
    }
    fclose(f);
    if (checked < 20) {
        snprintf(bad, badlen, "only %d defaults found in %s", checked, path);
        return -1;
    }
    return 0;
}

#define D(f) {#f, c.f}
#define DA(f) {#f, a.f}

UNIT_TEST(header_defaults) {
    char *sargv[] = {"serve"};
    const char *empty = write_tmp("");
    char *aargv[] = {"agent", "--env", (char *)empty, "--id=x", "--remote=http://r",
                     "--local=http://l"};
    nw_serve_cfg_t c;
    nw_agent_cfg_t a;
    char err[NW_CFG_ERRLEN] = "", bad[512] = "";

    clear_env();
    CHECK_EQ(nw_cfg_serve(ARGC(sargv), sargv, &c, err, sizeof(err)), 0);
    CHECK_EQ(nw_cfg_agent(ARGC(aargv), aargv, &a, err, sizeof(err)), 0);
    {
        const dflt_t serve[] = {D(response_timeout_ms), D(ping_interval_ms), D(max_head),
                                D(window), D(max_headers), D(max_url), D(idle_timeout_ms),
                                D(head_timeout_ms), D(body_timeout_ms), D(max_streams),
                                D(queue_timeout_ms), D(max_conns), D(max_tunnels),
                                D(max_agent_tunnels), D(grace_ms), D(route_hold_ms)};
        const dflt_t agent[] = {DA(ping_interval_ms), DA(connect_timeout_ms), DA(pool_size),
                                DA(window), DA(max_head), DA(max_conn), DA(max_local),
                                DA(local_queue), DA(local_queue_timeout_ms), DA(max_pipes),
                                DA(grace_ms), DA(rewrite_location), DA(inspect),
                                DA(resolve_interval_ms), DA(max_remotes)};
        int rc = check_header_defaults(serve, ARGC(serve), agent, ARGC(agent), bad, sizeof(bad));
        if (rc)
            fprintf(stderr, "  %s\n", bad);
        CHECK_EQ(rc, 0);
    }
    /* The ones cfg.h had wrong, and the help text gives. */
    CHECK_EQ(a.pool_size, 64);
    CHECK_EQ(a.max_local, 256);
    CHECK_EQ(a.local_queue, 1024);
    CHECK_EQ(a.max_pipes, 1024);
}

/* Issue 13: REMOTE_URL lists URLs; RESOLVE_INTERVAL (0 = off), MAX_REMOTES. */
UNIT_TEST(agent_remote_list) {
    const char *empty = write_tmp("");
    char *a1[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote",
                  " http://a.test:8000 ,https://b.test, http://[::1]:9/", "--local", "http://l"};
    char *a2[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--resolve-interval", "0", "--max-remotes", "64"};
    char *b1[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://a,",
                  "--local", "http://l"};
    char *b2[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://a,ftp://b",
                  "--local", "http://l"};
    char *b3[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://a,http://b/p",
                  "--local", "http://l"};
    char *b4[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--max-remotes", "0"};
    char *b5[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote", "http://r",
                  "--local", "http://l", "--resolve-interval", "-1"};
    char *b6[] = {"agent", "--env", (char *)empty, "--id", "x", "--remote",
                  "http://a.test,https://a.test,http://A.test:80", "--local", "http://l"};
    nw_agent_cfg_t c;
    char err[NW_CFG_ERRLEN] = "";

    clear_env();
    CHECK_EQ(nw_cfg_agent(ARGC(a1), a1, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.remotes.n, 3);
    CHECK_STR(c.remotes.u[0].host, "a.test");
    CHECK_EQ(c.remotes.u[0].port, 8000);
    CHECK_STR(c.remotes.u[1].host, "b.test");
    CHECK_EQ(c.remotes.u[1].tls, 1);
    CHECK_EQ(c.remotes.u[1].port, 443);
    CHECK_STR(c.remotes.u[2].host, "::1");
    CHECK_STR(c.remote.host, "a.test"); /* the first, for what takes one */
    CHECK_EQ(c.resolve_interval_ms, 30000);
    CHECK_EQ(c.max_remotes, 16);
    CHECK_EQ(nw_cfg_agent(ARGC(a2), a2, &c, err, sizeof(err)), 0);
    CHECK_EQ(c.remotes.n, 1);
    CHECK_EQ(c.resolve_interval_ms, 0);
    CHECK_EQ(c.max_remotes, 64);
    CHECK(agent_fails(ARGC(b1), b1, "--remote"));
    CHECK(agent_fails(ARGC(b2), b2, "--remote"));
    CHECK(agent_fails(ARGC(b3), b3, "must not have a path"));
    CHECK(agent_fails(ARGC(b4), b4, "--max-remotes"));
    CHECK(agent_fails(ARGC(b5), b5, "--resolve-interval"));
    /* The same server twice: two sets of tunnels to it, never meant. */
    CHECK(agent_fails(ARGC(b6), b6, "--remote: http://A.test:80 is listed twice"));
}

UNIT_MAIN(UNIT_CASE(parse_secs), UNIT_CASE(parse_bytes), UNIT_CASE(serve_defaults),
          UNIT_CASE(serve_flags), UNIT_CASE(serve_env), UNIT_CASE(serve_bad),
          UNIT_CASE(serve_body_timeout), UNIT_CASE(serve_domain), UNIT_CASE(serve_tokens_file),
          UNIT_CASE(serve_route_hold), UNIT_CASE(serve_ops),
          UNIT_CASE(serve_help_version), UNIT_CASE(agent_precedence),
          UNIT_CASE(agent_defaults_and_flags), UNIT_CASE(agent_seed_env_file),
          UNIT_CASE(agent_pipes_and_queue_timeout), UNIT_CASE(agent_host_and_redirects),
          UNIT_CASE(agent_routes_and_basic), UNIT_CASE(agent_missing_required), UNIT_CASE(agent_bad_values),
          UNIT_CASE(agent_default_env_file), UNIT_CASE(agent_help_version),
          UNIT_CASE(agent_remote_list), UNIT_CASE(header_defaults))
