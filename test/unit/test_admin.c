/* test_admin.c: the pure parts of the admin listener (admin.c included to
 * reach its statics): ADMIN_TOKEN checks (Bearer, Basic with the token as
 * the password (decoded by net/basic.c), constant-time compare) and the path table (exact,
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

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/time.h>

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
    ok = nw_admin_authorized(a.token, a.token_len, &h);
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

UNIT_TEST(constant_time_eq) {
    CHECK(nw_admin_ct_eq("abc", 3, "abc", 3));
    CHECK(!nw_admin_ct_eq("abd", 3, "abc", 3));
    CHECK(!nw_admin_ct_eq("ab", 2, "abc", 3));
    CHECK(!nw_admin_ct_eq("abcd", 4, "abc", 3));
    CHECK(!nw_admin_ct_eq("", 0, "abc", 3));
    CHECK(nw_admin_ct_eq("", 0, "", 0));
    CHECK(!nw_admin_ct_eq("a", 1, "", 0));
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

/* ---- a real listener on a loop, a blocking client in a thread ------------ */

#define NEVER_REQ "GET /never HTTP/1.1\r\nHost: x\r\n\r\n"

typedef struct {
    uv_loop_t loop;
    nw_admin_t *a;
    int port;
    uv_timer_t later;          /* answers /later after a turn of the loop */
    nw_admin_req_t *held;      /* /later's or /never's request */
    int aborted, answered;
    char got[8][512];          /* what the client read, per exchange */
    int ngot;
    int client_done;
    uv_async_t done;
} rig_t;

static void on_later(uv_timer_t *h) {
    rig_t *r = h->data;
    if (r->held) {
        nw_admin_respond(r->held, 200, "application/json", "{\"late\":true}", 13);
        r->held = NULL;
        r->answered++;
    }
}

static void on_abort_req(nw_admin_req_t *req) {
    rig_t *r = req->data;
    r->held = NULL;
    r->aborted++;
}

static void page_later(nw_admin_req_t *req, void *ud) {
    rig_t *r = ud;
    req->data = r;
    req->on_abort = on_abort_req;
    r->held = req;
    uv_timer_start(&r->later, on_later, 1, 0);
}

static void page_never(nw_admin_req_t *req, void *ud) {
    rig_t *r = ud;
    req->data = r;
    req->on_abort = on_abort_req;
    r->held = req;
}

static void page_echo(nw_admin_req_t *req, void *ud) {
    char out[256];
    int n = snprintf(out, sizeof(out), "%s %s ?%s %zu", req->method, req->path, req->query,
                     req->body_len);
    (void)ud;
    nw_admin_respond(req, 200, NULL, out, (size_t)n);
}

/* One exchange: send req, read until the response of n bytes (by
 * Content-Length) is whole or the server closes. */
static void xchg(rig_t *r, int fd, const char *req) {
    char *buf = r->got[r->ngot++];
    size_t len = 0;
    send(fd, req, strlen(req), MSG_NOSIGNAL);
    for (;;) {
        ssize_t k = recv(fd, buf + len, 511 - len, 0);
        char *end, *cl;
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        cl = strstr(buf, "Content-Length: ");
        if (end && cl && len >= (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10) &&
            strncmp(req, "HEAD", 4) != 0)
            break;
        if (end && strncmp(req, "HEAD", 4) == 0)
            break;
    }
    buf[len] = '\0';
}

static void client(void *arg) {
    rig_t *r = arg;
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)r->port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        xchg(r, fd, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
        xchg(r, fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
        xchg(r, fd, "POST /echo/x?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        xchg(r, fd, "HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n");
        send(fd, NEVER_REQ, sizeof(NEVER_REQ) - 1, MSG_NOSIGNAL);
    }
    close(fd); /* /never's client leaves without an answer */
    r->client_done = 1;
    uv_async_send(&r->done);
}

static void on_done(uv_async_t *h) {
    (void)h; /* the loop runs on until /never is aborted (conn.c's probe) */
}

static void on_check_abort(uv_timer_t *h) {
    rig_t *r = h->data;
    if (!r->client_done || !r->aborted)
        return;
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    uv_close((uv_handle_t *)&r->later, NULL);
    uv_close((uv_handle_t *)&r->done, NULL);
    nw_admin_stop(r->a);
}

UNIT_TEST(listener_roundtrip) {
    static rig_t r;
    nw_ops_cfg_t cfg;
    uv_thread_t th;
    uv_timer_t poll;
    memset(&r, 0, sizeof(r));
    memset(&cfg, 0, sizeof(cfg));
    cfg.admin.set = 1;
    snprintf(cfg.admin.addr.host, sizeof(cfg.admin.addr.host), "127.0.0.1");
    cfg.admin.addr.port = 0;
    CHECK_EQ(uv_loop_init(&r.loop), 0);
    CHECK_EQ(nw_admin_start(&r.loop, &cfg, &r.a), 0);
    r.port = nw_admin_port(r.a);
    CHECK(r.port > 0);
    CHECK_EQ(nw_admin_handle(r.a, "/later", page_later, &r), 0);
    CHECK_EQ(nw_admin_handle(r.a, "/never", page_never, &r), 0);
    CHECK_EQ(nw_admin_handle_methods(r.a, "/echo/", NW_ADMIN_GET | NW_ADMIN_POST, page_echo, &r),
             0);
    CHECK_EQ(nw_admin_handle(r.a, "/echo", page_echo, &r), 0);
    uv_timer_init(&r.loop, &r.later);
    r.later.data = &r;
    uv_async_init(&r.loop, &r.done, on_done);
    uv_timer_init(&r.loop, &poll);
    poll.data = &r;
    uv_timer_start(&poll, on_check_abort, 10, 10);
    CHECK_EQ(uv_thread_create(&th, client, &r), 0);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_thread_join(&th);
    CHECK_EQ(uv_loop_close(&r.loop), 0); /* every handle closed, a freed (ASan) */
    CHECK_EQ(r.ngot, 4);
    CHECK(strncmp(r.got[0], "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(r.got[0], "\r\n\r\nok\n"));
    CHECK(strstr(r.got[1], "Content-Type: application/json\r\n"));
    CHECK(strstr(r.got[1], "\r\n\r\n{\"late\":true}"));
    CHECK(strstr(r.got[2], "\r\n\r\nPOST /echo/x ?a=1 3"));
    CHECK(strstr(r.got[3], "Content-Length: 13\r\n")); /* "GET /echo ? 0", as GET would say */
    CHECK(!strstr(r.got[3], "GET /echo"));              /* but no body */
    CHECK_EQ(r.answered, 1);
    CHECK_EQ(r.aborted, 1);
}

/* nw_admin_stop with a request still with its handler: on_abort runs. */
static void stop_soon(uv_timer_t *h) {
    rig_t *r = h->data;
    if (!r->held)
        return; /* the request has not arrived yet */
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    nw_admin_stop(r->a);
}

static void client_never(void *arg) {
    rig_t *r = arg;
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    char b[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)r->port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        send(fd, NEVER_REQ, sizeof(NEVER_REQ) - 1, MSG_NOSIGNAL);
        r->ngot = (int)recv(fd, b, sizeof(b), 0); /* 0: closed by the stop */
    }
    close(fd);
}

UNIT_TEST(stop_aborts_held_request) {
    static rig_t r;
    nw_ops_cfg_t cfg;
    uv_thread_t th;
    uv_timer_t t;
    memset(&r, 0, sizeof(r));
    memset(&cfg, 0, sizeof(cfg));
    cfg.admin.set = 1;
    snprintf(cfg.admin.addr.host, sizeof(cfg.admin.addr.host), "127.0.0.1");
    r.ngot = -2;
    CHECK_EQ(uv_loop_init(&r.loop), 0);
    CHECK_EQ(nw_admin_start(&r.loop, &cfg, &r.a), 0);
    r.port = nw_admin_port(r.a);
    CHECK_EQ(nw_admin_handle(r.a, "/never", page_never, &r), 0);
    uv_timer_init(&r.loop, &t);
    t.data = &r;
    uv_timer_start(&t, stop_soon, 5, 5);
    CHECK_EQ(uv_thread_create(&th, client_never, &r), 0);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_thread_join(&th);
    CHECK_EQ(uv_loop_close(&r.loop), 0);
    CHECK_EQ(r.aborted, 1);
    CHECK_EQ(r.ngot, 0);
}

/* An address that cannot be bound: an error, nothing left open. */
UNIT_TEST(start_fails_cleanly) {
    uv_loop_t loop;
    nw_ops_cfg_t cfg;
    nw_admin_t *a = NULL, *b = (nw_admin_t *)1;
    memset(&cfg, 0, sizeof(cfg));
    cfg.admin.set = 1;
    snprintf(cfg.admin.addr.host, sizeof(cfg.admin.addr.host), "127.0.0.1");
    CHECK_EQ(uv_loop_init(&loop), 0);
    CHECK_EQ(nw_admin_start(&loop, &cfg, &a), 0);
    cfg.admin.addr.port = (unsigned)nw_admin_port(a);
    CHECK(nw_admin_start(&loop, &cfg, &b) == UV_EADDRINUSE);
    CHECK(b == NULL);
    snprintf(cfg.admin.addr.host, sizeof(cfg.admin.addr.host), "192.0.2.1"); /* not ours */
    CHECK(nw_admin_start(&loop, &cfg, &b) == UV_EADDRNOTAVAIL);
    nw_admin_stop(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

UNIT_MAIN(UNIT_CASE(bearer), UNIT_CASE(basic), UNIT_CASE(constant_time_eq),
          UNIT_CASE(path_table), UNIT_CASE(listener_roundtrip),
          UNIT_CASE(stop_aborts_held_request), UNIT_CASE(start_fails_cleanly))
