/* test_env.c: the .env parser (src/core/env.c). */
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "unit.h"

#define HAS(s, sub) (strstr((s), (sub)) != NULL)

/* ---- .env parser -------------------------------------------------------- */

typedef struct {
    int n;
    int stop_after; /* return 7 after this many pairs; 0 never */
    char key[16][32];
    char val[16][128];
} pairs_t;

static int collect(const char *key, const char *val, void *ud) {
    pairs_t *p = ud;

    if (p->n < 16) {
        snprintf(p->key[p->n], sizeof(p->key[0]), "%s", key);
        snprintf(p->val[p->n], sizeof(p->val[0]), "%s", val);
    }
    p->n++;
    return p->stop_after && p->n >= p->stop_after ? 7 : 0;
}

static int env_run(const char *text, pairs_t *p, char *err, size_t errlen) {
    memset(p, 0, sizeof(*p));
    err[0] = 0;
    return nw_env_parse(text, strlen(text), collect, p, err, errlen);
}

UNIT_TEST(env_basic) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run("A=1\nB_2=two\n_c=3", &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 3);
    CHECK_STR(p.key[0], "A");
    CHECK_STR(p.val[0], "1");
    CHECK_STR(p.key[1], "B_2");
    CHECK_STR(p.val[1], "two");
    CHECK_STR(p.key[2], "_c");
    CHECK_STR(p.val[2], "3");

    CHECK_EQ(env_run("", &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 0);

    /* A later duplicate is delivered after the earlier one. */
    CHECK_EQ(env_run("A=1\nA=2\n", &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 2);
    CHECK_STR(p.val[1], "2");

    /* Empty values. */
    CHECK_EQ(env_run("A=\nB=  \nC=''\nD=\"\"", &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 4);
    CHECK_STR(p.val[0], "");
    CHECK_STR(p.val[1], "");
    CHECK_STR(p.val[2], "");
    CHECK_STR(p.val[3], "");

    /* len bounds the text: no NUL terminator needed. */
    memset(&p, 0, sizeof(p));
    CHECK_EQ(nw_env_parse("A=1B=2", 3, collect, &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 1);
    CHECK_STR(p.val[0], "1");
}

UNIT_TEST(env_comments_blank_export) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run("\n# comment\n   \n\t# indented = comment\nA=1\n\n", &p, err, sizeof(err)),
             0);
    CHECK_EQ(p.n, 1);
    CHECK_STR(p.val[0], "1");

    CHECK_EQ(env_run("export A=1\nexport\tB = 2\n  export   C=3\nexport=4", &p, err, sizeof(err)),
             0);
    CHECK_EQ(p.n, 4);
    CHECK_STR(p.key[0], "A");
    CHECK_STR(p.key[1], "B");
    CHECK_STR(p.val[1], "2");
    CHECK_STR(p.key[2], "C");
    CHECK_STR(p.key[3], "export");
    CHECK_STR(p.val[3], "4");
}

UNIT_TEST(env_unquoted) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run("A = hello world  \n"
                     "B=val # comment\n"
                     "C=val\t# tab comment\n"
                     "D=a#b\n"
                     "E=http://h/p#frag\n"
                     "F=#x\n"
                     "G= # only a comment\n"
                     "H=a=b=c\n"
                     "I=it's \"x\"\n",
                     &p, err, sizeof(err)),
             0);
    CHECK_EQ(p.n, 9);
    CHECK_STR(p.val[0], "hello world");
    CHECK_STR(p.val[1], "val");
    CHECK_STR(p.val[2], "val");
    CHECK_STR(p.val[3], "a#b");
    CHECK_STR(p.val[4], "http://h/p#frag");
    CHECK_STR(p.val[5], "#x");
    CHECK_STR(p.val[6], "");
    CHECK_STR(p.val[7], "a=b=c");
    CHECK_STR(p.val[8], "it's \"x\"");
}

UNIT_TEST(env_quoted) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run("A='x # y \\n $Z'\n"
                     "B=\"a\\nb\\tc\\\"d\\\\e\"\n"
                     "C=\"kept \\q\" # comment\n"
                     "D='  padded  '   # c\n"
                     "E=\"#not a comment\"\n"
                     "F='dq \" inside'\n"
                     "G=\"x\"#c\n",
                     &p, err, sizeof(err)),
             0);
    CHECK_EQ(p.n, 7);
    CHECK_STR(p.val[0], "x # y \\n $Z");
    CHECK_STR(p.val[1], "a\nb\tc\"d\\e");
    CHECK_STR(p.val[2], "kept \\q");
    CHECK_STR(p.val[3], "  padded  ");
    CHECK_STR(p.val[4], "#not a comment");
    CHECK_STR(p.val[5], "dq \" inside");
    CHECK_STR(p.val[6], "x");
}

UNIT_TEST(env_crlf) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run("# c\r\nA=1\r\nB='2'\r\nC=\"3\" # x\r\n\r\nD=4 # y\r\n", &p, err,
                     sizeof(err)),
             0);
    CHECK_EQ(p.n, 4);
    CHECK_STR(p.val[0], "1");
    CHECK_STR(p.val[1], "2");
    CHECK_STR(p.val[2], "3");
    CHECK_STR(p.val[3], "4");

    CHECK_EQ(env_run("\xEF\xBB\xBF" "A=bom\n", &p, err, sizeof(err)), 0);
    CHECK_STR(p.key[0], "A");

    /* A lone CR line, and a last line without a newline but with a CR. */
    CHECK_EQ(env_run("\r\nA=1\r", &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 1);
    CHECK_STR(p.val[0], "1");
}

UNIT_TEST(env_errors) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run("A=1\nB='x\n", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 2: unterminated quote");
    CHECK_EQ(env_run("A=\"x\\\"\n", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 1: unterminated quote");
    CHECK_EQ(env_run("A=\"multi\nline\"\n", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 1: unterminated quote");
    CHECK_EQ(env_run("A=1\r\n\r\nnot a pair\r\n", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 3: expected KEY=VALUE");
    CHECK_EQ(p.n, 1);
    CHECK_EQ(env_run("export A\n", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 1: expected KEY=VALUE");
    CHECK_EQ(env_run("1A=x", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK(HAS(err, "line 1: invalid key '1A'"));
    CHECK_EQ(env_run("A B=x", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK(HAS(err, "invalid key"));
    CHECK_EQ(env_run("=x", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK(HAS(err, "invalid key"));
    CHECK_EQ(env_run("\n\nA=\"x\" y", &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 3: unexpected text after closing quote");

    memset(&p, 0, sizeof(p));
    CHECK_EQ(nw_env_parse("A=1\nB=\0\n", 7, collect, &p, err, sizeof(err)), NW_ECONFIG);
    CHECK(HAS(err, "line 2"));
}

UNIT_TEST(env_callback_abort) {
    pairs_t p;
    char err[NW_CFG_ERRLEN] = "";

    memset(&p, 0, sizeof(p));
    p.stop_after = 2;
    CHECK_EQ(nw_env_parse("A=1\nB=2\nC=3\n", 12, collect, &p, err, sizeof(err)), 7);
    CHECK_EQ(p.n, 2);
}

static const char seed_env[] =
    "AGENT_ID=mac@home # A unique identifier of the proxy client\n"
    "REMOTE_URL=http://localhost:8000 # The base URL of the proxy server\n"
    "LOCAL_URL=http://localhost:11434 # The base URL of the local HTTP server\n";

UNIT_TEST(env_seed_example) {
    pairs_t p;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(env_run(seed_env, &p, err, sizeof(err)), 0);
    CHECK_EQ(p.n, 3);
    CHECK_STR(p.key[0], "AGENT_ID");
    CHECK_STR(p.val[0], "mac@home");
    CHECK_STR(p.key[1], "REMOTE_URL");
    CHECK_STR(p.val[1], "http://localhost:8000");
    CHECK_STR(p.key[2], "LOCAL_URL");
    CHECK_STR(p.val[2], "http://localhost:11434");
}

UNIT_MAIN(UNIT_CASE(env_basic), UNIT_CASE(env_comments_blank_export),
          UNIT_CASE(env_unquoted), UNIT_CASE(env_quoted), UNIT_CASE(env_crlf),
          UNIT_CASE(env_errors), UNIT_CASE(env_callback_abort), UNIT_CASE(env_seed_example))
