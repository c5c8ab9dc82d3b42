/* test_accesslog.c: the access-log line (src/core/accesslog.c): the
 * combined format with natwrp's four fields, JSON, escaping and caps. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"
#include "unit.h"

#define S(x) (x), (sizeof(x) - 1)

/* 2026-11-26T06:30:00.004Z */
#define T0 1795674600

static nw_alog_rec_t rec(void) {
    nw_alog_rec_t r = {0};
    r.time_sec = T0;
    r.time_ms = 4;
    r.client = "127.0.0.1";
    r.method = "GET";
    r.method_len = 3;
    r.target = "/x";
    r.target_len = 2;
    r.proto = "HTTP/1.1";
    r.status = 200;
    r.bytes_out = 512;
    r.user_agent = "curl/7.88.1";
    r.user_agent_len = 11;
    r.duration = 0.0042;
    r.upstream_status = 200;
    r.route = "a.example.com/api";
    r.tunnel = 3;
    return r;
}

UNIT_TEST(text_example) {
    char out[NW_ALOG_LINE_MAX];
    nw_alog_rec_t r = rec();
    size_t n = nw_alog_format(&r, 0, out, sizeof(out));
    CHECK_STR(out, "127.0.0.1 - - [26/Nov/2026:06:30:00 +0000] \"GET /x HTTP/1.1\" 200 512 \"-\" "
                   "\"curl/7.88.1\" 0.004 200 a.example.com/api 3\n");
    CHECK_EQ(n, strlen(out));
}

UNIT_TEST(text_absent_fields) {
    char out[NW_ALOG_LINE_MAX];
    nw_alog_rec_t r = {0};
    r.time_sec = T0;
    r.status = 400;
    nw_alog_format(&r, 0, out, sizeof(out));
    CHECK_STR(out, "- - - [26/Nov/2026:06:30:00 +0000] \"-\" 400 0 \"-\" \"-\" 0.000 - - -\n");
}

UNIT_TEST(text_escaping) {
    char out[NW_ALOG_LINE_MAX];
    nw_alog_rec_t r = rec();
    /* A User-Agent that tries to close the quote and start a new line. */
    r.user_agent = "x\" 200 1 \"-\" \"y\\\n\x01\xff";
    r.user_agent_len = strlen(r.user_agent);
    r.referer = "\x7f";
    r.referer_len = 1;
    r.target = "/a\"b";
    r.target_len = 4;
    r.route = "h/p q";
    nw_alog_format(&r, 0, out, sizeof(out));
    CHECK(strstr(out, "\"GET /a\\x22b HTTP/1.1\"") != NULL);
    CHECK(strstr(out, "\"\\x7F\" \"x\\x22 200 1 \\x22-\\x22 \\x22y\\x5C\\x0A\\x01\\xFF\"") != NULL);
    CHECK(strstr(out, " h/p\\x20q 3\n") != NULL);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1); /* one line */
}

UNIT_TEST(escape_primitives) {
    char out[64];
    size_t n;
    n = nw_alog_escape(S("a\"\\\t"), out, sizeof(out));
    out[n] = 0;
    CHECK_STR(out, "a\\x22\\x5C\\x09");
    /* Never half an escape: 3 bytes of room take "a" only. */
    n = nw_alog_escape(S("a\""), out, 3);
    CHECK_EQ(n, 1);
    n = nw_alog_json_escape(S("a\"\\\n\x7f"), out, sizeof(out));
    out[n] = 0;
    CHECK_STR(out, "a\\\"\\\\\\u000A\\u007F");
    /* Valid UTF-8 passes, an invalid byte is \u00XX. */
    n = nw_alog_json_escape(S("\xc3\xa9\xff\xe2\x82"), out, sizeof(out));
    out[n] = 0;
    CHECK_STR(out, "\xc3\xa9\\u00FF\\u00E2\\u0082");
    /* An overlong form and a surrogate are not UTF-8. */
    n = nw_alog_json_escape(S("\xc0\xaf\xed\xa0\x80"), out, sizeof(out));
    out[n] = 0;
    CHECK_STR(out, "\\u00C0\\u00AF\\u00ED\\u00A0\\u0080");
}

UNIT_TEST(json_example) {
    char out[NW_ALOG_LINE_MAX];
    nw_alog_rec_t r = rec();
    nw_alog_format(&r, 1, out, sizeof(out));
    CHECK_STR(out, "{\"time\":\"2026-11-26T06:30:00.004Z\",\"client\":\"127.0.0.1\","
                   "\"method\":\"GET\",\"target\":\"/x\",\"proto\":\"HTTP/1.1\",\"status\":200,"
                   "\"bytes_out\":512,\"bytes_in\":0,\"referer\":null,"
                   "\"user_agent\":\"curl/7.88.1\",\"duration_seconds\":0.004,"
                   "\"upstream_status\":200,\"route\":\"a.example.com/api\",\"tunnel\":3}\n");
}

UNIT_TEST(json_absent) {
    char out[NW_ALOG_LINE_MAX];
    nw_alog_rec_t r = {0};
    r.time_sec = T0;
    r.status = 404;
    r.route = "";
    nw_alog_format(&r, 1, out, sizeof(out));
    CHECK(strstr(out, "\"client\":null,\"method\":null,\"target\":null,\"proto\":null,"
                      "\"status\":404,") != NULL);
    CHECK(strstr(out, "\"upstream_status\":null,\"route\":null,\"tunnel\":null}\n") != NULL);
}

/* Fields are capped: a huge target and User-Agent still make one line
 * within NW_ALOG_LINE_MAX, ending in its tail fields. */
UNIT_TEST(caps) {
    static char big[100000], out[NW_ALOG_LINE_MAX];
    nw_alog_rec_t r = rec();
    size_t n;
    memset(big, '"', sizeof(big));
    r.target = big;
    r.target_len = sizeof(big);
    r.user_agent = big;
    r.user_agent_len = sizeof(big);
    r.referer = big;
    r.referer_len = sizeof(big);
    n = nw_alog_format(&r, 0, out, sizeof(out));
    CHECK(n < sizeof(out));
    CHECK(strstr(out, " 0.004 200 a.example.com/api 3\n") != NULL);
    n = nw_alog_format(&r, 1, out, sizeof(out));
    CHECK(n < sizeof(out));
    CHECK(strstr(out, "\"tunnel\":3}\n") != NULL);
    /* A tiny buffer still gets a terminated line. */
    n = nw_alog_format(&r, 0, out, 8);
    CHECK_EQ(n, 7);
    CHECK_EQ(out[6], '\n');
    CHECK_EQ(out[7], 0);
}

/* ---- the writer and the event log, with stdout and stderr redirected ---- */

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static size_t drain(int fd, size_t *bytes) {
    char b[65536];
    ssize_t n;
    size_t lines = 0, i;
    while ((n = read(fd, b, sizeof(b))) > 0) {
        for (i = 0; i < (size_t)n; i++)
            lines += b[i] == '\n';
        *bytes += (size_t)n;
    }
    return lines;
}

/* Lines wait for the loop turn; when the output blocks (a full pipe) and
 * the 64 KiB buffer is full, lines are dropped, counted, and reported in
 * one warning at the next flush: every line is either written or counted. */
UNIT_TEST(writer_buffers_and_drops) {
    static char big[8000], errtext[65536];
    uv_loop_t loop;
    char err[256];
    int p[2], saved_out, saved_err, rc, i, queued_before_turn;
    size_t lines = 0, bytes = 0, dropped = 0, warnings = 0;
    FILE *cap = tmpfile();
    const char *d;
    nw_alog_rec_t r = rec();

    memset(big, 'a', sizeof(big));
    r.target = big;
    r.target_len = sizeof(big);
    CHECK(cap != NULL);
    CHECK_EQ(pipe2(p, O_NONBLOCK), 0);
    fflush(stdout);
    saved_out = dup(1);
    saved_err = dup(2);
    dup2(p[1], 1);
    dup2(fileno(cap), 2);
    uv_loop_init(&loop);
    rc = nw_alog_open(&loop, "-", 0, err, sizeof(err));
    nw_alog_write(&r);
    lines += drain(p[0], &bytes);
    queued_before_turn = bytes == 0; /* nothing written until the loop turns */
    for (i = 1; i < 64; i++)
        nw_alog_write(&r); /* the pipe (64 KiB) fills, then the buffer */
    for (i = 0; i < 4; i++) { /* read, let the loop flush, read again */
        lines += drain(p[0], &bytes);
        uv_run(&loop, UV_RUN_NOWAIT);
        nw_alog_write(&r);
    }
    for (i = 0; i < 8; i++) { /* what the buffer still holds */
        uv_run(&loop, UV_RUN_NOWAIT);
        lines += drain(p[0], &bytes);
    }
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    nw_alog_close();
    lines += drain(p[0], &bytes);

    nw_log_json = 1;
    nw_log(NW_LOG_WARN, "say \"hi\"\n\\ \x01");
    nw_log_json = 0;
    nw_log(NW_LOG_INFO, "plain %d", 7);

    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    close(p[0]);
    close(p[1]);
    rewind(cap);
    errtext[fread(errtext, 1, sizeof(errtext) - 1, cap)] = 0;
    fclose(cap);

    CHECK_EQ(rc, 0);
    CHECK(queued_before_turn);
    for (d = errtext; (d = strstr(d, "access log: ")) != NULL; d++) {
        unsigned long long k;
        if (sscanf(d, "access log: %llu line(s) dropped", &k) == 1)
            dropped += k, warnings++;
    }
    CHECK(dropped > 0);
    CHECK(warnings <= 5); /* one per loop turn with drops, never one per line */
    CHECK_EQ(lines + dropped, 68);
    CHECK(strstr(errtext, "\"level\":\"warn\",\"msg\":\"say \\\"hi\\\"\\u000a\\\\ "
                          "\\u0001\"}\n") != NULL);
    CHECK(strstr(errtext, "Z info  plain 7\n") != NULL); /* text: as before */
}

UNIT_MAIN(UNIT_CASE(text_example), UNIT_CASE(text_absent_fields), UNIT_CASE(text_escaping),
          UNIT_CASE(escape_primitives), UNIT_CASE(json_example), UNIT_CASE(json_absent),
          UNIT_CASE(caps), UNIT_CASE(writer_buffers_and_drops))
