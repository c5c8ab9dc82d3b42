/* test_admin.c: the pure parts of the admin listener (admin.c included to
 * reach its statics): ADMIN_TOKEN checks (Bearer, Basic with the token as
 * the password, base64, constant-time compare) and the path table (exact,
 * prefix, longest prefix, replacement, methods). The listener itself is
 * tested end to end in test/integ/test_f0_admin.py. */
/* admin.o is in the library this test links too: its public names get a
 * prefix here, so the copy included below does not clash with it. */
#define nw_admin_start t_nw_admin_start
#define nw_admin_handle t_nw_admin_handle
#define nw_admin_handle_methods t_nw_admin_handle_methods
#define nw_admin_set_ready t_nw_admin_set_ready
#define nw_admin_respond t_nw_admin_respond
#define nw_admin_port t_nw_admin_port
#define nw_admin_stop t_nw_admin_stop
#define nw_admin_metrics t_nw_admin_metrics
#include "../../src/admin/admin.c"

#include "unit.h"

/* A head with one field (or none when name is NULL). */
static void head_with(nw_hfields_t *h, const char *name, const char *value) {
    nw_hf_init(h, 4096);
    nw_hf_first(h, "/metrics", 8);
    if (name) {
        nw_hf_name(h, name, strlen(name));
        nw_hf_value(h, value, strlen(value));
    }
}

static int auth(const char *token, const char *name, const char *value) {
    nw_admin_t a;
    nw_hfields_t h;
    int ok;
    memset(&a, 0, sizeof(a));
    a.token_len = strlen(token);
    memcpy(a.token, token, a.token_len + 1);
    head_with(&h, name, value);
    ok = authorized(&a, &h);
    nw_hf_free(&h);
    return ok;
}

UNIT_TEST(bearer) {
    CHECK(auth("tok", "Authorization", "Bearer tok"));
    CHECK(auth("tok", "authorization", "bEaReR tok"));     /* scheme in any case */
    CHECK(auth("tok", "Authorization", "  Bearer   tok  ")); /* OWS around, spaces between */
    CHECK(!auth("tok", "Authorization", "Bearer TOK"));    /* the token is exact */
    CHECK(!auth("tok", "Authorization", "Bearer tokx"));
    CHECK(!auth("tok", "Authorization", "Bearer to"));
    CHECK(!auth("tok", "Authorization", "Bearer "));
    CHECK(!auth("tok", "Authorization", "Bearer"));
    CHECK(!auth("tok", "Authorization", "tok"));           /* bare: not a scheme */
    CHECK(!auth("tok", "Authorization", "Token tok"));
    CHECK(!auth("tok", "X-Auth-Token", "tok"));            /* only Authorization */
    CHECK(!auth("tok", NULL, NULL));
}

UNIT_TEST(basic) {
    /* "admin:tok", ":tok", "x:tok" without padding, "u:a:tok" (the
     * password is all after the first ':') */
    CHECK(auth("tok", "Authorization", "Basic YWRtaW46dG9r"));
    CHECK(auth("tok", "Authorization", "basic OnRvaw=="));
    CHECK(auth("tok", "Authorization", "BASIC eDp0b2s"));
    CHECK(!auth("tok", "Authorization", "Basic dTphOnRvaw==")); /* password "a:tok" */
    CHECK(auth("a:tok", "Authorization", "Basic dTphOnRvaw=="));
    CHECK(!auth("tok", "Authorization", "Basic dG9rOng="));     /* "tok:x": token as user */
    CHECK(!auth("tok", "Authorization", "Basic dG9r"));         /* "tok": no ':' */
    CHECK(!auth("tok", "Authorization", "Basic YWRtaW46dG9r!"));
    CHECK(!auth("tok", "Authorization", "Basic YWRtaW46dG9rIA==")); /* "admin:tok " */
    CHECK(!auth("tok", "Authorization", "Basic ="));
    CHECK(!auth("tok", "Authorization", "Basic"));
}

UNIT_TEST(base64) {
    char out[16];
    CHECK_EQ(b64_decode("", 0, out, sizeof(out)), 0);
    CHECK_EQ(b64_decode("YQ==", 4, out, sizeof(out)), 1);
    CHECK(out[0] == 'a');
    CHECK_EQ(b64_decode("YQ", 2, out, sizeof(out)), 1);
    CHECK_EQ(b64_decode("YWI=", 4, out, sizeof(out)), 2);
    CHECK_EQ(b64_decode("YWJj", 4, out, sizeof(out)), 3);
    CHECK(memcmp(out, "abc", 3) == 0);
    CHECK_EQ(b64_decode("Y", 1, out, sizeof(out)), -1);       /* one char short of a byte */
    CHECK_EQ(b64_decode("YQ=", 3, out, sizeof(out)), -1);     /* padding must fill the quad */
    CHECK_EQ(b64_decode("Y===", 4, out, sizeof(out)), -1);
    CHECK_EQ(b64_decode("YW-j", 4, out, sizeof(out)), -1);    /* base64url is not base64 */
    CHECK_EQ(b64_decode("YWJjYWJj", 8, out, 5), -1);          /* more than cap */
}

UNIT_TEST(constant_time_eq) {
    CHECK(ct_eq("abc", 3, "abc", 3));
    CHECK(!ct_eq("abd", 3, "abc", 3));
    CHECK(!ct_eq("ab", 2, "abc", 3));
    CHECK(!ct_eq("abcd", 4, "abc", 3));
    CHECK(!ct_eq("", 0, "abc", 3));
    CHECK(ct_eq("", 0, "", 0));
    CHECK(!ct_eq("a", 1, "", 0));
}

static void page_a(nw_admin_req_t *req, void *ud) { (void)req; (void)ud; }
static void page_b(nw_admin_req_t *req, void *ud) { (void)req; (void)ud; }

UNIT_TEST(path_table) {
    nw_admin_t *a = nw_calloc(1, sizeof(*a));
    const page_t *p;
    int x = 1, y = 2;
    CHECK(a);
    CHECK_EQ(nw_admin_handle(a, "/", page_a, &x), 0);
    CHECK_EQ(nw_admin_handle(a, "/metrics", page_a, &x), 0);
    CHECK_EQ(nw_admin_handle(a, "/api/requests/", page_a, &x), 0);
    CHECK_EQ(nw_admin_handle(a, "/api/", page_b, &y), 0);
    CHECK_EQ(nw_admin_handle_methods(a, "/api/requests/", NW_ADMIN_GET | NW_ADMIN_POST, page_b,
                                     &y), 0); /* replaces, with its methods */
    CHECK_EQ(a->npages, 4);
    p = find_page(a, "/");
    CHECK(p && p->fn == page_a && !p->prefix);  /* "/" is exact, not every path */
    CHECK(find_page(a, "/metrics") && !find_page(a, "/metrics/"));
    CHECK(!find_page(a, "/metricsx"));
    p = find_page(a, "/api/requests/17/replay");
    CHECK(p && p->fn == page_b && p->ud == &y && p->methods == (NW_ADMIN_GET | NW_ADMIN_POST));
    CHECK(p == find_page(a, "/api/requests/"));  /* the prefix itself */
    p = find_page(a, "/api/status");             /* the longest prefix wins */
    CHECK(p && strcmp(p->path, "/api/") == 0 && p->methods == NW_ADMIN_GET);
    CHECK(!find_page(a, "/api"));
    CHECK(!find_page(a, "/nope"));
    CHECK_EQ(method_bit("GET"), NW_ADMIN_GET);
    CHECK_EQ(method_bit("HEAD"), NW_ADMIN_GET);
    CHECK_EQ(method_bit("POST"), NW_ADMIN_POST);
    CHECK_EQ(method_bit("DELETE"), 0);
    a->stopping = 1;
    admin_maybe_free(a);
}

UNIT_MAIN(UNIT_CASE(bearer), UNIT_CASE(basic), UNIT_CASE(base64), UNIT_CASE(constant_time_eq),
          UNIT_CASE(path_table))
