/* test_basic.c: Basic credentials (src/serve/basic.c, RFC 7617): the
 * scheme in any case, the password after the first ':', and every
 * malformed value refused without reading past it. */
#include <string.h>

#include "basic.h"
#include "unit.h"

static char out[4096];
static const char *pw;
static size_t pwlen;

static int parse(const char *v) {
    size_t n = strlen(v);
    pw = NULL, pwlen = 0;
    return nw_basic_parse(v, n, out, NW_BASIC_CAP(n), &pw, &pwlen);
}

static int pass_is(const char *want) {
    return pwlen == strlen(want) && memcmp(pw, want, pwlen) == 0;
}

UNIT_TEST(valid) {
    CHECK_EQ(parse("Basic dXNlcjpTM2NyZXQ="), NW_BASIC_OK); /* user:S3cret */
    CHECK(pass_is("S3cret"));
    CHECK_EQ(parse("basic   dXNlcjpTM2NyZXQ=  "), NW_BASIC_OK);
    CHECK(pass_is("S3cret"));
    CHECK_EQ(parse("BASIC dXNlcjpTM2NyZXQ"), NW_BASIC_OK); /* padding left off */
    CHECK(pass_is("S3cret"));
    CHECK_EQ(parse("Basic OlMzY3JldA=="), NW_BASIC_OK); /* ":S3cret": empty user-id */
    CHECK(pass_is("S3cret"));
    CHECK_EQ(parse("Basic dTphOmI="), NW_BASIC_OK); /* "u:a:b": the password has ':' */
    CHECK(pass_is("a:b"));
    CHECK_EQ(parse("Basic dTo="), NW_BASIC_OK); /* "u:": empty password */
    CHECK_EQ(pwlen, 0);
    CHECK_EQ(parse("Basic w6k6w6k="), NW_BASIC_OK); /* UTF-8 "é:é" */
    CHECK(pass_is("\xc3\xa9"));
}

UNIT_TEST(not_basic) {
    CHECK_EQ(parse("Bearer dXNlcjpTM2NyZXQ="), NW_BASIC_NOT);
    CHECK_EQ(parse("S3cret"), NW_BASIC_NOT);
    CHECK_EQ(parse("Basicx dXNlcjpTM2NyZXQ="), NW_BASIC_NOT);
    CHECK_EQ(parse("Basi"), NW_BASIC_NOT);
    CHECK_EQ(parse(""), NW_BASIC_NOT);
}

UNIT_TEST(malformed) {
    static const char *const bad[] = {
        "Basic", "Basic ", "Basic    ", /* nothing */
        "Basic dXNlcg==",               /* "user": no ':' */
        "Basic dXNlcjpTM2NyZXQ*",       /* not the alphabet */
        "Basic dXNl cjpTM2NyZXQ=",      /* a space inside */
        "Basic dXNlcjpTM2NyZXQ==",      /* padding past the quantum */
        "Basic =dXNlcjpTM2NyZXQ",       /* padding first */
        "Basic dXNlcjp=TM2NyZXQ",       /* padding inside */
        "Basic dXNlcjpTM2NyZX",         /* 4n+1 characters... */
        "Basic d",                      /* ...ever */
        "Basic dXNlcjpTM2NyZXR=",       /* non-zero bits left over */
        "Basic dTpTAHg=",               /* "u:S\0x": a NUL (RFC 7617 2: no CTL) */
        "Basic AHU6eA==",               /* "\0u:x" */
        "Basic dTp4DQ==",               /* "u:x\r" */
        "Basic Og==",                   /* ":" alone still parses below; not here */
        NULL};
    size_t i;
    for (i = 0; bad[i + 1]; i++)
        if (parse(bad[i]) != NW_BASIC_BAD) {
            fprintf(stderr, "  accepted %s\n", bad[i]);
            CHECK(0);
        }
    CHECK_EQ(parse("Basic Og=="), NW_BASIC_OK); /* ":": empty user-id and password */
    CHECK_EQ(pwlen, 0);
}

UNIT_TEST(bounds) {
    /* A huge value: decoded within its cap, and a smaller cap refuses it. */
    static char v[3000];
    size_t i;
    memcpy(v, "Basic ", 6);
    for (i = 6; i < 6 + 2000; i++)
        v[i] = "QUFB"[(i - 6) % 4]; /* "A" * 1500: no ':' */
    v[i] = 0;
    CHECK_EQ(parse(v), NW_BASIC_BAD);
    memcpy(v + 6, "dTp4", 4); /* "u:x" then 'A's: a long password */
    CHECK_EQ(parse(v), NW_BASIC_OK);
    CHECK_EQ(pwlen, 1500 - 2);
    CHECK_EQ(nw_basic_parse(v, strlen(v), out, 100, &pw, &pwlen), NW_BASIC_BAD);
    /* Exactly the cap a value needs is enough; the parser reads only n bytes. */
    CHECK_EQ(nw_basic_parse("Basic dTp4XXXX", 10, out, 3, &pw, &pwlen), NW_BASIC_OK);
    CHECK(pwlen == 1 && pw[0] == 'x');
    CHECK_EQ(nw_basic_parse("Basic dTp4", 10, out, 2, &pw, &pwlen), NW_BASIC_BAD);
}

UNIT_MAIN(UNIT_CASE(valid), UNIT_CASE(not_basic), UNIT_CASE(malformed), UNIT_CASE(bounds))
