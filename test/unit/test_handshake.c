/* test_handshake.c: the tunnel upgrade's shared parts (src/tunnel/handshake.c):
 * X-Natwrp-Window bounds and default, the subprotocol offered / selected,
 * and the AGENT_ID syntax. */
#include <stdint.h>
#include <string.h>

#include "handshake.h"
#include "unit.h"

static nw_hfields_t hf;

/* A head with one field (name NULL: none). */
static void head1(const char *name, const char *value) {
    nw_hf_init(&hf, 65536);
    nw_hf_first(&hf, "/", 1);
    if (name) {
        nw_hf_name(&hf, name, strlen(name));
        nw_hf_value(&hf, value, strlen(value));
    }
}

static int window_of(const char *value, uint32_t *w) {
    int rc;
    head1(value ? "x-NATWRP-window" : NULL, value);
    rc = nw_hs_window(&hf, w);
    nw_hf_free(&hf);
    return rc;
}

UNIT_TEST(window_bounds) {
    uint32_t w = 7;
    CHECK_EQ(window_of(NULL, &w), 0);
    CHECK_EQ(w, NW_HS_WINDOW_DEFAULT);
    CHECK_EQ(window_of("1024", &w), 0);
    CHECK_EQ(w, 1024);
    CHECK_EQ(window_of("2147483647", &w), 0);
    CHECK_EQ(w, 2147483647u);
    w = 7;
    CHECK_EQ(window_of("1023", &w), -1);
    CHECK_EQ(window_of("2147483648", &w), -1);
    CHECK_EQ(window_of("", &w), -1);
    CHECK_EQ(window_of("12k", &w), -1);
    CHECK_EQ(window_of("-1", &w), -1);
    CHECK_EQ(w, 7); /* untouched on a refusal */
}

static int offered(const char *value) {
    int rc;
    head1("Sec-WebSocket-Protocol", value);
    rc = nw_hs_subproto_offered(&hf);
    nw_hf_free(&hf);
    return rc;
}

static int selected(const char *value) {
    int rc;
    head1(value ? "Sec-WebSocket-Protocol" : NULL, value);
    rc = nw_hs_subproto_selected(&hf);
    nw_hf_free(&hf);
    return rc;
}

UNIT_TEST(subprotocol) {
    CHECK(offered(NW_HS_SUBPROTO));
    CHECK(offered("chat, " NW_HS_SUBPROTO));
    CHECK(!offered("natwrp.2"));
    CHECK(!offered("natwrp"));
    CHECK(selected(NW_HS_SUBPROTO));
    CHECK(!selected("chat, " NW_HS_SUBPROTO));
    CHECK(!selected("natwrp.2"));
    CHECK(!selected(NULL));
}

UNIT_TEST(agent_id_syntax) {
    char id[200];
    CHECK(nw_hs_agent_id_ok("a", 1, NW_HS_AGENT_ID_MAX));
    CHECK(nw_hs_agent_id_ok("web-1.example_2@x:y+z", 21, NW_HS_AGENT_ID_MAX));
    CHECK(!nw_hs_agent_id_ok("", 0, NW_HS_AGENT_ID_MAX));
    CHECK(!nw_hs_agent_id_ok("a b", 3, NW_HS_AGENT_ID_MAX));
    CHECK(!nw_hs_agent_id_ok("a/b", 3, NW_HS_AGENT_ID_MAX));
    CHECK(!nw_hs_agent_id_ok("a\r\n", 3, NW_HS_AGENT_ID_MAX));
    memset(id, 'a', sizeof(id));
    CHECK(nw_hs_agent_id_ok(id, 128, NW_HS_AGENT_ID_MAX));
    CHECK(!nw_hs_agent_id_ok(id, 129, NW_HS_AGENT_ID_MAX));
    CHECK(nw_hs_agent_id_ok(id, 139, NW_HS_TUNNEL_NAME_MAX));
    CHECK(!nw_hs_agent_id_ok(id, 140, NW_HS_TUNNEL_NAME_MAX));
}

UNIT_TEST(instance_syntax) {
    char v[80];
    CHECK(nw_hs_instance_ok("0a1b-2c3d", 9));
    CHECK(!nw_hs_instance_ok("", 0));
    CHECK(!nw_hs_instance_ok("0a1b2c3d", 8));  /* no process-address split */
    CHECK(!nw_hs_instance_ok("0a-1b-2c", 8));  /* two */
    CHECK(!nw_hs_instance_ok("-0a1b", 5));
    CHECK(!nw_hs_instance_ok("0a1b-", 5));
    CHECK(!nw_hs_instance_ok("0a 1b-2c", 8));
    memset(v, 'a', sizeof(v));
    v[10] = '-';
    CHECK(nw_hs_instance_ok(v, NW_HS_INSTANCE_MAX));
    CHECK(!nw_hs_instance_ok(v, NW_HS_INSTANCE_MAX + 1));
}

/* One process through two addresses coexists; a restart or the same slot
 * again replaces; without the field on either side, replaces. */
UNIT_TEST(instance_coexist) {
    CHECK(nw_hs_coexist("p1-r1", "p1-r2"));
    CHECK(!nw_hs_coexist("p1-r1", "p1-r1"));
    CHECK(!nw_hs_coexist("p1-r1", "p2-r2"));
    CHECK(!nw_hs_coexist("p1-r1", "p11-r2"));
    CHECK(!nw_hs_coexist("", "p1-r2"));
    CHECK(!nw_hs_coexist("p1-r1", ""));
    CHECK(!nw_hs_coexist("", ""));
}

UNIT_MAIN(UNIT_CASE(window_bounds), UNIT_CASE(subprotocol), UNIT_CASE(agent_id_syntax),
          UNIT_CASE(instance_syntax), UNIT_CASE(instance_coexist))
