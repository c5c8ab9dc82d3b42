/* test_ops.c: serve's accounting (src/serve/ops.c) against a registry,
 * with no loop and no admin listener: each response head counts once, by
 * route and code; serve's own errors by reason; the tunnel handshake is
 * not a request; body bytes by route and tunnel; the reasons of 400s and
 * resets; natwrp_tunnels follows the route table at each scrape. */
#include <string.h>

#include "metrics.h"
#include "serve_int.h"
#include "unit.h"

typedef struct {
    serve_t srv;
    nw_serve_cfg_t cfg;
    nw_metrics_t *m;
    nw_sbuf_t out;
} fix_t;

static int fix_init(fix_t *f) {
    memset(f, 0, sizeof(*f));
    f->srv.cfg = &f->cfg;
    f->m = nw_metrics_new();
    f->srv.routes = nw_routes_new();
    return f->m && f->srv.routes && srv_ops_init(&f->srv, f->m, NULL) == 0 ? 0 : -1;
}

static void fix_free(fix_t *f) {
    srv_ops_free(&f->srv);
    nw_metrics_free(f->m);
    nw_routes_free(f->srv.routes);
    nw_sbuf_free(&f->out);
}

/* The exposition, NUL-terminated. */
static const char *render(fix_t *f) {
    nw_sbuf_free(&f->out);
    if (nw_metrics_render(f->m, &f->out) != 0 || nw_sbuf_append(&f->out, "", 1) != 0)
        return "";
    return f->out.p;
}

/* The line of series (name and labels as rendered), its value in *v. */
static int has(fix_t *f, const char *series, const char *value) {
    char line[512];
    snprintf(line, sizeof(line), "\n%s %s\n", series, value);
    return strstr(render(f), line) != NULL;
}

UNIT_TEST(test_head_counts_once_by_route_and_code) {
    fix_t f;
    pconn_t pc;
    nw_route_t r;
    char err[128];
    CHECK(fix_init(&f) == 0);
    CHECK(nw_route_parse("a.example.com/api", 17, NULL, &r, err, sizeof(err)) == 0);
    memset(&pc, 0, sizeof(pc));
    pc.srv = &f.srv;
    srv_ops_begin(&pc, 1);
    srv_ops_route(&pc, &r);
    srv_ops_head(&pc, 200, 0);
    srv_ops_head(&pc, 502, 1); /* a second head for the same request: not counted */
    srv_ops_begin(&pc, 0);     /* answered; the next request */
    srv_ops_begin(&pc, 1);
    srv_ops_route(&pc, &r);
    srv_ops_head(&pc, 200, 0);
    CHECK(has(&f, "natwrp_requests_total{route=\"a.example.com/api\",code=\"200\"}", "2"));
    CHECK(!strstr(render(&f), "code=\"502\""));
    CHECK(has(&f, "natwrp_request_duration_seconds_count{route=\"a.example.com/api\"}", "2"));
    fix_free(&f);
}

UNIT_TEST(test_own_errors_and_no_route) {
    fix_t f;
    pconn_t pc;
    CHECK(fix_init(&f) == 0);
    memset(&pc, 0, sizeof(pc));
    pc.srv = &f.srv;
    srv_ops_begin(&pc, 1);
    srv_ops_head(&pc, 404, 1);
    srv_ops_begin(&pc, 0);
    srv_ops_queue_timeout(&pc); /* before its 503 */
    srv_ops_head(&pc, 503, 1);
    srv_ops_begin(&pc, 0);
    pc.err_reason = srv_ops_why_reason("bare LF in the request head");
    srv_ops_head(&pc, 400, 1);
    srv_ops_begin(&pc, 0);
    srv_ops_head(&pc, 404, 0); /* the service's own 404: not serve's error */
    CHECK(has(&f, "natwrp_requests_total{route=\"-\",code=\"404\"}", "2"));
    CHECK(has(&f, "natwrp_errors_total{reason=\"no_route\"}", "1"));
    CHECK(has(&f, "natwrp_errors_total{reason=\"queue_timeout\"}", "1"));
    CHECK(has(&f, "natwrp_errors_total{reason=\"smuggling\"}", "1"));
    CHECK(has(&f, "natwrp_queue_timeouts_total", "1"));
    /* A duration with no start (a head refused before parsing) is 0. */
    CHECK(has(&f, "natwrp_request_duration_seconds_bucket{route=\"-\",le=\"0.01\"}", "4"));
    fix_free(&f);
}

UNIT_TEST(test_handshake_is_not_a_request) {
    fix_t f;
    pconn_t pc;
    CHECK(fix_init(&f) == 0);
    memset(&pc, 0, sizeof(pc));
    pc.srv = &f.srv;
    srv_ops_begin(&pc, 1);
    pc.tunnel = 1;
    srv_ops_head(&pc, 401, 1);
    srv_ops_refused(&f.srv, "token");
    srv_ops_tunnel(&f.srv, "open");
    CHECK(!strstr(render(&f), "natwrp_requests_total{"));
    CHECK(has(&f, "natwrp_tunnel_refusals_total{reason=\"token\"}", "1"));
    CHECK(has(&f, "natwrp_tunnel_events_total{event=\"open\"}", "1"));
    fix_free(&f);
}

UNIT_TEST(test_reasons) {
    CHECK_STR(srv_ops_why_reason("unsupported Transfer-Encoding (only a single 'chunked')"),
              "smuggling");
    CHECK_STR(srv_ops_why_reason("Content-Length can't be present with Transfer-Encoding"),
              "smuggling");
    CHECK_STR(srv_ops_why_reason("obsolete line folding (obs-fold)"), "smuggling");
    CHECK_STR(srv_ops_why_reason("HTTP/1.1 request without Host"), "bad_request");
    CHECK_STR(srv_ops_why_reason(NULL), "bad_request");
    CHECK_STR(srv_ops_rst_reason(NW_RST_CONNECT), "local_unreachable");
    CHECK_STR(srv_ops_rst_reason(NW_RST_TIMEOUT), "timeout");
    CHECK_STR(srv_ops_rst_reason(NW_RST_UNSENT), "tunnel_lost");
    CHECK_STR(srv_ops_rst_reason(NW_RST_PROTOCOL), "agent_error");
}

UNIT_TEST(test_tunnels_gauge_follows_the_table) {
    fix_t f;
    nw_route_t r;
    nw_tun_t t1, t2;
    srv_tun_t s1, s2;
    char err[128];
    CHECK(fix_init(&f) == 0);
    memset(&t1, 0, sizeof(t1));
    memset(&t2, 0, sizeof(t2));
    memset(&s1, 0, sizeof(s1));
    memset(&s2, 0, sizeof(s2));
    s1.tun = &t1, s2.tun = &t2;
    snprintf(t1.group, sizeof(t1.group), "alice");
    snprintf(t2.group, sizeof(t2.group), "alice");
    CHECK(nw_route_parse("a.example.com", 13, NULL, &r, err, sizeof(err)) == 0);
    CHECK(nw_routes_add(f.srv.routes, &r, &s1) == 0);
    CHECK(nw_routes_add(f.srv.routes, &r, &s2) == 0);
    CHECK(has(&f, "natwrp_tunnels{route=\"a.example.com\",group=\"alice\"}", "2"));
    nw_routes_remove(f.srv.routes, &r, &s1);
    snprintf(t2.group, sizeof(t2.group), "bob");
    CHECK(has(&f, "natwrp_tunnels{route=\"a.example.com\",group=\"bob\"}", "1"));
    CHECK(!strstr(render(&f), "group=\"alice\"")); /* gone with its tunnels */
    nw_routes_remove(f.srv.routes, &r, &s2);
    CHECK(!strstr(render(&f), "natwrp_tunnels{"));
    fix_free(&f);
}

UNIT_MAIN(UNIT_CASE(test_head_counts_once_by_route_and_code),
          UNIT_CASE(test_own_errors_and_no_route), UNIT_CASE(test_handshake_is_not_a_request),
          UNIT_CASE(test_reasons), UNIT_CASE(test_tunnels_gauge_follows_the_table))
