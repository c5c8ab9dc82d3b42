/* test_tokens.c: serve's --tokens file (src/serve/tokens.c, issue 11):
 * good files (comments, blank lines, CRLF, tabs, lines of one token
 * merged), every error (its line number given, the token never shown),
 * lookup (present, absent, a prefix, longer, empty), what each pattern
 * grants (through nw_route_pat_grants), dot-less patterns under --domain,
 * CONN_TOKEN as a line "CONN_TOKEN *", nw_tokens_load's messages, and every
 * allocation failing in turn. Texts are parsed from exact-size heap copies
 * so that ASan catches a read past their end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nw.h"
#include "routes.h"
#include "tokens.h"
#include "unit.h"

#define DOM "tunnel.example.com"
#define SECRET "S3cr3t-Tok3n"

static char err[512];

/* Parse text (n bytes) from an exact-size heap copy. */
static int parse_n(const char *text, size_t n, const char *domain, const char *conn,
                   nw_tokens_t **t) {
    char *p = malloc(n ? n : 1);
    int rc;
    memcpy(p, text, n);
    err[0] = 0;
    rc = nw_tokens_parse(p, n, domain, conn, t, err, sizeof(err));
    free(p);
    return rc;
}

static int parse(const char *text, const char *domain, const char *conn, nw_tokens_t **t) {
    return parse_n(text, strlen(text), domain, conn, t);
}

static int find(const nw_tokens_t *t, const char *tok) {
    size_t n = strlen(tok);
    char *p = malloc(n ? n : 1);
    int i;
    memcpy(p, tok, n);
    i = nw_tokens_find(t, p, n);
    free(p);
    return i;
}

static nw_route_t rt(const char *s, const char *domain) {
    nw_route_t r;
    if (strcmp(s, "default") == 0)
        nw_route_default(&r);
    else if (nw_route_parse(s, strlen(s), domain, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "  bad test route %s: %s\n", s, err);
        abort();
    }
    return r;
}

/* Token tok grants route s (or "default"). */
static int grants(const nw_tokens_t *t, const char *tok, const char *s) {
    nw_route_t r = rt(s, DOM);
    return nw_tokens_grants(t, find(t, tok), &r);
}

UNIT_TEST(parse_good_file) {
    static const char text[] =
        "# who may claim what\n"
        "\n"
        "   \t \n"
        "alice-tok *.alice.example.com alice.example.com\r\n"
        "\tbob-tok\t\tbob.example.com  # bob's one host\n"
        "  # an indented comment\n"
        "admin *\n"
        "alice-tok extra.example.com\n" /* the same token again: merged */
        "carol ollama *.team";          /* dot-less under --domain; no final newline */
    nw_tokens_t *t = NULL;

    CHECK_EQ(parse(text, DOM, NULL, &t), 0);
    CHECK(t != NULL);
    CHECK_EQ(nw_tokens_count(t), 4);
    CHECK(find(t, "alice-tok") >= 0);
    CHECK(find(t, "bob-tok") >= 0);
    CHECK(find(t, "admin") >= 0);
    CHECK(find(t, "carol") >= 0);
    CHECK(find(t, "alice-tok") != find(t, "bob-tok"));
    /* Entries in file order (first line of each token). */
    CHECK_EQ(find(t, "alice-tok"), 0);
    CHECK_EQ(find(t, "bob-tok"), 1);
    CHECK_EQ(find(t, "admin"), 2);
    CHECK_EQ(find(t, "carol"), 3);
    /* A comment is not a pattern, nor a token. */
    CHECK_EQ(find(t, "#"), -1);
    CHECK_EQ(find(t, "bob's"), -1);
    /* Both alice lines count. */
    CHECK(grants(t, "alice-tok", "a.alice.example.com"));
    CHECK(grants(t, "alice-tok", "alice.example.com/api"));
    CHECK(grants(t, "alice-tok", "extra.example.com"));
    CHECK(!grants(t, "alice-tok", "bob.example.com"));
    CHECK(grants(t, "bob-tok", "bob.example.com/x"));
    CHECK(!grants(t, "bob-tok", "extra.example.com"));
    CHECK(grants(t, "carol", "ollama"));
    CHECK(grants(t, "carol", "ollama.tunnel.example.com"));
    CHECK(grants(t, "carol", "x.team.tunnel.example.com"));
    CHECK(!grants(t, "carol", "x.team")); /* a name with a dot is a full name */
    CHECK(!grants(t, "carol", "team"));
    CHECK(!grants(t, "carol", "other"));
    CHECK(grants(t, "admin", "default"));
    nw_tokens_free(t);

    /* Only comments and blanks: a valid file with no token. */
    CHECK_EQ(parse("# nobody yet\n\n", NULL, NULL, &t), 0);
    CHECK_EQ(nw_tokens_count(t), 0);
    CHECK_EQ(find(t, "x"), -1);
    nw_tokens_free(t);
    CHECK_EQ(parse_n("", 0, NULL, NULL, &t), 0);
    CHECK_EQ(nw_tokens_count(t), 0);
    nw_tokens_free(t);

    /* Every visible ASCII byte may be in a token; 512 bytes is the most. */
    {
        char big[600];
        memset(big, 'k', 512);
        memcpy(big + 512, " *\n", 4);
        CHECK_EQ(parse("!\"$%&'()+,-./:;<=>?@[\\]^_`{|}~# *\n", NULL, NULL, &t), 0);
        CHECK(find(t, "!\"$%&'()+,-./:;<=>?@[\\]^_`{|}~#") == 0);
        nw_tokens_free(t);
        CHECK_EQ(parse(big, NULL, NULL, &t), 0);
        big[512] = 0;
        CHECK_EQ(find(t, big), 0);
        nw_tokens_free(t);
    }
}

typedef struct {
    const char *text;
    const char *domain;
    const char *want; /* the whole message starts with this */
} ecase_t;

UNIT_TEST(parse_errors) {
    static const ecase_t cases[] = {
        {SECRET "\n", NULL, "line 1: a token needs at least one pattern"},
        {"# c\n\n" SECRET "   # nothing granted\n", NULL, "line 3: a token needs at least one"},
        {"ok *\n" SECRET " a.example.com/api\n", NULL, "line 2: pattern \"a.example.com/api\""},
        {SECRET " ollama\n", NULL, "line 1: pattern \"ollama\": a name without a dot needs"},
        {SECRET " *.\n", DOM, "line 1: pattern \"*.\": empty host"},
        {SECRET " a.example.com#x\n", NULL, "line 1: pattern \"a.example.com#x\""},
        {SECRET " a..example.com\n", NULL, "line 1: pattern \"a..example.com\": empty label"},
        {SECRET " x.*.example.com\n", NULL, "line 1: pattern \"x.*.example.com\": '*' may"},
        {SECRET "\x01" "x *\n", NULL, "line 1: a token may hold only visible ASCII"},
        {SECRET "\x7f *\n", NULL, "line 1: a token may hold only visible ASCII"},
        {SECRET "\xc3\xa9 *\n", NULL, "line 1: a token may hold only visible ASCII"},
        {SECRET "\v*\n", NULL, "line 1: a token may hold only visible ASCII"},
        {"a *\n" SECRET " *\r\r\n", NULL, "line 2: pattern \"*?\""},
        {"a *\nb *\n\n\n" SECRET " \x80.example.com\n", NULL, "line 5: pattern"},
    };
    size_t i;
    nw_tokens_t *t;

    for (i = 0; i < NW_ARRAY_LEN(cases); i++) {
        int rc;
        t = (nw_tokens_t *)&t; /* must come back NULL */
        rc = parse(cases[i].text, cases[i].domain, NULL, &t);
        if (rc != NW_ECONFIG || t != NULL || strncmp(err, cases[i].want, strlen(cases[i].want)) ||
            strstr(err, "S3cr3t") || strchr(err, '\n')) {
            fprintf(stderr, "  case %zu: rc %d err \"%s\"\n", i, rc, err);
            CHECK(0);
        }
    }

    /* A NUL byte anywhere in a line. */
    {
        static const char nul[] = "a *\nb * \0 c\n";
        CHECK_EQ(parse_n(nul, sizeof(nul) - 1, NULL, NULL, &t), NW_ECONFIG);
        CHECK_STR(err, "line 2: NUL byte");
        CHECK(t == NULL);
    }
    /* 513 bytes is too long, and not shown. */
    {
        char big[600];
        memset(big, 'k', 513);
        memcpy(big + 513, " *\n", 4);
        CHECK_EQ(parse(big, NULL, NULL, &t), NW_ECONFIG);
        CHECK_STR(err, "line 1: token longer than 512 bytes");
    }
    /* 100000 lines at most (blank ones count), 1 MiB at most. */
    {
        size_t n = 100001;
        char *lines = malloc(n + 1);
        memset(lines, '\n', n);
        lines[n] = 0;
        CHECK_EQ(parse_n(lines, n - 1, NULL, NULL, &t), 0);
        nw_tokens_free(t);
        CHECK_EQ(parse_n(lines, n, NULL, NULL, &t), NW_ECONFIG);
        CHECK_STR(err, "line 100001: more than 100000 lines");
        free(lines);
    }
    {
        size_t n = 1024 * 1024 + 1;
        char *big = malloc(n);
        memset(big, ' ', n);
        CHECK_EQ(parse_n(big, n - 1, NULL, NULL, &t), 0);
        nw_tokens_free(t);
        CHECK_EQ(parse_n(big, n, NULL, NULL, &t), NW_ECONFIG);
        CHECK_STR(err, "larger than 1 MiB");
        free(big);
    }
}

UNIT_TEST(find_exact_only) {
    nw_tokens_t *t = NULL;
    CHECK_EQ(parse("abcdef *\nabc a.example.com\nXYZ b.example.com\n", NULL, NULL, &t), 0);
    CHECK_EQ(find(t, "abcdef"), 0);
    CHECK_EQ(find(t, "abc"), 1);
    CHECK_EQ(find(t, "XYZ"), 2);
    CHECK_EQ(find(t, "abcd"), -1);    /* a prefix of a token */
    CHECK_EQ(find(t, "ab"), -1);      /* a prefix of both */
    CHECK_EQ(find(t, "abcdefg"), -1); /* longer than a token */
    CHECK_EQ(find(t, "abcx"), -1);
    CHECK_EQ(find(t, "xyz"), -1);     /* tokens are case-sensitive */
    CHECK_EQ(find(t, "abc "), -1);
    CHECK_EQ(find(t, ""), -1);
    CHECK_EQ(nw_tokens_find(t, NULL, 0), -1);
    CHECK_EQ(nw_tokens_find(NULL, "abc", 3), -1);
    /* A counted token: bytes after len do not count. */
    CHECK_EQ(nw_tokens_find(t, "abcdef", 3), 1);
    CHECK_EQ(nw_tokens_find(t, "abc\0", 4), -1);
    /* Out-of-range entries grant nothing. */
    {
        nw_route_t r;
        nw_route_default(&r);
        CHECK(nw_tokens_grants(t, 0, &r));
        CHECK(!nw_tokens_grants(t, -1, &r));
        CHECK(!nw_tokens_grants(t, 3, &r));
        CHECK(!nw_tokens_grants(NULL, 0, &r));
    }
    nw_tokens_free(t);
    nw_tokens_free(NULL);
    CHECK_EQ(nw_tokens_count(NULL), 0);
}

/* What each kind of pattern grants: nw_route_pat_grants decides, so this
 * pins down its meaning for a tokens line. */
UNIT_TEST(pattern_grants) {
    nw_tokens_t *t = NULL;
    CHECK_EQ(parse("any *\n"
                   "wild *.alice.example.com\n"
                   "exact alice.example.com\n"
                   "short ollama *.team\n",
                   DOM, NULL, &t),
             0);
    /* "*": everything, the default route included. */
    CHECK(grants(t, "any", "default"));
    CHECK(grants(t, "any", "a.example.com"));
    CHECK(grants(t, "any", "*.example.com"));
    CHECK(grants(t, "any", "a.example.com/api/v1"));
    CHECK(grants(t, "any", "ollama"));

    /* "*.alice.example.com": any name below, exact or wildcard, any path;
     * not alice.example.com itself (a separate pattern grants that), not
     * a wider wildcard, not a name that merely ends in "alice.example.com". */
    CHECK(grants(t, "wild", "b.alice.example.com"));
    CHECK(grants(t, "wild", "b.alice.example.com/api"));
    CHECK(grants(t, "wild", "x.y.alice.example.com"));
    CHECK(grants(t, "wild", "*.alice.example.com"));
    CHECK(grants(t, "wild", "*.alice.example.com/p"));
    CHECK(grants(t, "wild", "*.b.alice.example.com"));
    CHECK(grants(t, "wild", "B.Alice.Example.COM"));
    CHECK(!grants(t, "wild", "alice.example.com"));
    CHECK(!grants(t, "wild", "alice.example.com/api"));
    CHECK(!grants(t, "wild", "balice.example.com"));
    CHECK(!grants(t, "wild", "*.example.com"));
    CHECK(!grants(t, "wild", "example.com"));
    CHECK(!grants(t, "wild", "default"));

    /* "alice.example.com": that host with any path, nothing else. */
    CHECK(grants(t, "exact", "alice.example.com"));
    CHECK(grants(t, "exact", "ALICE.example.com/api"));
    CHECK(!grants(t, "exact", "b.alice.example.com"));
    CHECK(!grants(t, "exact", "*.alice.example.com"));
    CHECK(!grants(t, "exact", "alice.example.org"));
    CHECK(!grants(t, "exact", "default"));

    /* Dot-less patterns are names under --domain, like dot-less routes. */
    CHECK(grants(t, "short", "ollama"));
    CHECK(grants(t, "short", "ollama.tunnel.example.com/api"));
    CHECK(grants(t, "short", "a.team.tunnel.example.com"));
    CHECK(!grants(t, "short", "a.team"));
    CHECK(grants(t, "short", "*.team"));
    CHECK(!grants(t, "short", "team"));
    CHECK(!grants(t, "short", "ollama.example.com"));
    CHECK(!grants(t, "short", "default"));
    nw_tokens_free(t);
}

UNIT_TEST(conn_token_is_any) {
    nw_tokens_t *t = NULL;
    /* Alone, with an empty file. */
    CHECK_EQ(parse_n("", 0, NULL, "conn-tok", &t), 0);
    CHECK_EQ(nw_tokens_count(t), 1);
    CHECK(grants(t, "conn-tok", "default"));
    CHECK(grants(t, "conn-tok", "a.example.com/x"));
    nw_tokens_free(t);

    /* Beside other lines; "" and NULL add nothing. */
    CHECK_EQ(parse("a a.example.com\n", NULL, "conn-tok", &t), 0);
    CHECK_EQ(nw_tokens_count(t), 2);
    CHECK_EQ(find(t, "conn-tok"), 0); /* counts as a line before the file's */
    CHECK(grants(t, "conn-tok", "b.example.com"));
    CHECK(!grants(t, "a", "b.example.com"));
    nw_tokens_free(t);
    CHECK_EQ(parse("a a.example.com\n", NULL, "", &t), 0);
    CHECK_EQ(nw_tokens_count(t), 1);
    nw_tokens_free(t);

    /* The same token in the file: one entry, granting everything. */
    CHECK_EQ(parse("x *.x.example.com\nconn-tok a.example.com\n", NULL, "conn-tok", &t), 0);
    CHECK_EQ(nw_tokens_count(t), 2);
    CHECK(grants(t, "conn-tok", "default"));
    CHECK(grants(t, "conn-tok", "z.example.com"));
    CHECK(grants(t, "x", "y.x.example.com"));
    nw_tokens_free(t);

    /* A token no file line could hold is refused, unquoted. */
    CHECK_EQ(parse("a *\n", NULL, "bad tok", &t), NW_ECONFIG);
    CHECK_STR(err, "CONN_TOKEN: not a valid token");
    CHECK(t == NULL);
}

static char tmpdir[64];

static const char *write_file(const char *name, const char *text, size_t n) {
    static char path[128];
    FILE *f;
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/nw_test_tokens.XXXXXX");
        if (!mkdtemp(tmpdir))
            abort();
    }
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    if (!(f = fopen(path, "wb")))
        abort();
    fwrite(text, 1, n, f);
    fclose(f);
    return path;
}

static const char *write_str(const char *name, const char *text) {
    return write_file(name, text, strlen(text));
}

UNIT_TEST(load_file) {
    char want[256], big_name[128], good_name[128];
    nw_tokens_t *t = (nw_tokens_t *)&t;
    const char *p = write_str("good", "# tokens\nt1 *.a.example.com\nt2 *\n");
    snprintf(good_name, sizeof(good_name), "%s", p);

    CHECK_EQ(nw_tokens_load(good_name, NULL, NULL, &t, err, sizeof(err)), 0);
    CHECK_EQ(nw_tokens_count(t), 2);
    CHECK_EQ(find(t, "t2"), 1);
    nw_tokens_free(t);

    p = write_str("bad", "t1 *\n\n" SECRET " a.example.com/x\n");
    snprintf(want, sizeof(want), "%s: line 3: pattern \"a.example.com/x\"", p);
    CHECK_EQ(nw_tokens_load(p, NULL, NULL, &t, err, sizeof(err)), NW_ECONFIG);
    CHECK(t == NULL);
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(!strstr(err, "S3cr3t"));

    snprintf(want, sizeof(want), "%s/missing: No such file or directory", tmpdir);
    snprintf(big_name, sizeof(big_name), "%s/missing", tmpdir);
    CHECK_EQ(nw_tokens_load(big_name, NULL, NULL, &t, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, want);

    snprintf(want, sizeof(want), "%s: Is a directory", tmpdir);
    CHECK_EQ(nw_tokens_load(tmpdir, NULL, NULL, &t, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, want);

    {
        size_t n = 1024 * 1024 + 1;
        char *big = malloc(n);
        memset(big, '\n', n);
        p = write_file("big", big, n - 1); /* exactly 1 MiB: fine */
        snprintf(big_name, sizeof(big_name), "%s", p);
        CHECK_EQ(nw_tokens_load(big_name, NULL, NULL, &t, err, sizeof(err)), NW_ECONFIG);
        CHECK_STR(strstr(err, ": line "), ": line 100001: more than 100000 lines");
        memset(big, ' ', n);
        p = write_file("big", big, n - 1);
        CHECK_EQ(nw_tokens_load(big_name, NULL, NULL, &t, err, sizeof(err)), 0);
        nw_tokens_free(t);
        p = write_file("big", big, n);
        snprintf(want, sizeof(want), "%s: larger than 1 MiB", big_name);
        CHECK_EQ(nw_tokens_load(big_name, NULL, NULL, &t, err, sizeof(err)), NW_ECONFIG);
        CHECK_STR(err, want);
        free(big);
        unlink(big_name);
    }
    unlink(good_name);
    snprintf(big_name, sizeof(big_name), "%s/bad", tmpdir);
    unlink(big_name);
    rmdir(tmpdir);
}

/* Each allocation of a parse (merging included) fails in turn: the parse
 * returns NW_ENOMEM with *out NULL and LeakSanitizer finds nothing. */
UNIT_TEST(alloc_failures) {
    static const char text[] = "a *.a.example.com a.example.com b.example.com c.example.com "
                               "d.example.com\nb *\na x.example.com\nc c.example.com\n";
    unsigned long n;
    int ok = 0;
    for (n = 1; n < 200 && !ok; n++) {
        nw_tokens_t *t = (nw_tokens_t *)&t;
        int rc;
        nw__alloc_fail_in = n;
        rc = parse(text, NULL, "conn", &t);
        if (nw__alloc_fail_in != 0) { /* nothing failed: the whole parse ran */
            nw__alloc_fail_in = 0;
            CHECK_EQ(rc, 0);
            CHECK_EQ(nw_tokens_count(t), 4);
            CHECK(grants(t, "a", "x.example.com"));
            nw_tokens_free(t);
            ok = 1;
        } else {
            CHECK_EQ(rc, NW_ENOMEM);
            CHECK(t == NULL);
            CHECK_STR(err, "out of memory");
        }
    }
    CHECK(ok);
}

UNIT_MAIN(UNIT_CASE(parse_good_file), UNIT_CASE(parse_errors), UNIT_CASE(find_exact_only),
          UNIT_CASE(pattern_grants), UNIT_CASE(conn_token_is_any), UNIT_CASE(load_file),
          UNIT_CASE(alloc_failures))
