/* test_metrics.c: the metrics registry and its text exposition (format
 * 0.0.4): exact bytes for each type, escaping, float formatting, the
 * "_other" overflow series, removal, collect callbacks, bad names; the
 * process metrics; and the whole rendering through `promtool check
 * metrics` when promtool is installed (scripts/deps.sh --promtool). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "proc.h"
#include "unit.h"

static char rendered[1 << 20];

static const char *render(nw_metrics_t *m) {
    nw_sbuf_t b = {0};
    if (nw_metrics_render(m, &b) != 0 || b.len >= sizeof(rendered)) {
        nw_sbuf_free(&b);
        return "<error>";
    }
    memcpy(rendered, b.p, b.len);
    rendered[b.len] = '\0';
    nw_sbuf_free(&b);
    return rendered;
}

UNIT_TEST(counter_and_gauge) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"route", "code", NULL};
    const char *v1[] = {"a.example.com/api", "200"}, *v2[] = {"*", "502"};
    nw_metric_t *c = nw_metric_new(m, NW_METRIC_COUNTER, "natwrp_requests_total",
                                   "Requests answered.", lab, NULL, 0);
    nw_metric_t *g = nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_streams_active",
                                   "Streams in flight.", NULL, NULL, 0);
    nw_series_t *s;
    int i;
    CHECK(m && c && g);
    for (i = 0; i < 1000; i++)
        nw_series_add(nw_metric_series(c, v1), 1);
    nw_series_add(nw_metric_series(c, v2), 2);
    s = nw_metric_series(c, v1);
    CHECK(s == nw_metric_series(c, v1)); /* the same series each time */
    nw_series_add(s, -1);                /* a counter never goes down */
    nw_series_set(s, 5);                 /* nor is set */
    CHECK(nw_series_value(s) == 1000);
    nw_series_set(nw_metric_series(g, NULL), 3);
    nw_series_add(nw_metric_series(g, NULL), -1);
    CHECK_STR(render(m), "# HELP natwrp_requests_total Requests answered.\n"
                         "# TYPE natwrp_requests_total counter\n"
                         "natwrp_requests_total{route=\"a.example.com/api\",code=\"200\"} 1000\n"
                         "natwrp_requests_total{route=\"*\",code=\"502\"} 2\n"
                         "# HELP natwrp_streams_active Streams in flight.\n"
                         "# TYPE natwrp_streams_active gauge\n"
                         "natwrp_streams_active 2\n");
    nw_metrics_free(m);
}

UNIT_TEST(empty_family_has_help_and_type) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"reason", NULL};
    CHECK(nw_metric_new(m, NW_METRIC_COUNTER, "natwrp_errors_total", "Errors.", lab, NULL, 0));
    CHECK_STR(render(m), "# HELP natwrp_errors_total Errors.\n"
                         "# TYPE natwrp_errors_total counter\n");
    nw_metrics_free(m);
}

UNIT_TEST(histogram) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"route", NULL};
    static const double b[] = {0.005, 0.1, 1, 2.5};
    const char *v[] = {"r"};
    nw_metric_t *h = nw_metric_new(m, NW_METRIC_HISTOGRAM, "natwrp_request_duration_seconds",
                                   "Time to the response head.", lab, b, 4);
    nw_series_t *s;
    CHECK(h);
    s = nw_metric_series(h, v);
    nw_series_observe(s, 0.001);
    nw_series_observe(s, 0.005); /* on the bound: le is "less or equal" */
    nw_series_observe(s, 0.5);
    nw_series_observe(s, 7);
    nw_series_observe(s, NAN); /* ignored */
    CHECK_EQ(nw_series_count(s), 4);
    CHECK_STR(render(m), "# HELP natwrp_request_duration_seconds Time to the response head.\n"
                         "# TYPE natwrp_request_duration_seconds histogram\n"
                         "natwrp_request_duration_seconds_bucket{route=\"r\",le=\"0.005\"} 2\n"
                         "natwrp_request_duration_seconds_bucket{route=\"r\",le=\"0.1\"} 2\n"
                         "natwrp_request_duration_seconds_bucket{route=\"r\",le=\"1\"} 3\n"
                         "natwrp_request_duration_seconds_bucket{route=\"r\",le=\"2.5\"} 3\n"
                         "natwrp_request_duration_seconds_bucket{route=\"r\",le=\"+Inf\"} 4\n"
                         "natwrp_request_duration_seconds_sum{route=\"r\"} 7.506\n"
                         "natwrp_request_duration_seconds_count{route=\"r\"} 4\n");
    nw_metrics_free(m);
}

UNIT_TEST(histogram_without_labels) {
    nw_metrics_t *m = nw_metrics_new();
    static const double b[] = {1};
    nw_metric_t *h = nw_metric_new(m, NW_METRIC_HISTOGRAM, "x_seconds", "X.", NULL, b, 1);
    CHECK(h);
    nw_series_observe(nw_metric_series(h, NULL), 2);
    CHECK_STR(render(m), "# HELP x_seconds X.\n# TYPE x_seconds histogram\n"
                         "x_seconds_bucket{le=\"1\"} 0\nx_seconds_bucket{le=\"+Inf\"} 1\n"
                         "x_seconds_sum 2\nx_seconds_count 1\n");
    nw_metrics_free(m);
}

UNIT_TEST(escaping) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"route", NULL};
    const char *v[] = {"a\\b\"c\nd\te\xff\xc3\xa9"};
    nw_metric_t *g = nw_metric_new(m, NW_METRIC_GAUGE, "g", "Help with \\ and\nnewline \"q\".",
                                   lab, NULL, 0);
    CHECK(g);
    nw_series_set(nw_metric_series(g, v), 1);
    /* HELP escapes \ and newline only; label values also escape "; bytes
     * that are not UTF-8 become U+FFFD (promtool refuses them) */
    CHECK_STR(render(m), "# HELP g Help with \\\\ and\\nnewline \"q\".\n"
                         "# TYPE g gauge\n"
                         "g{route=\"a\\\\b\\\"c\\nd\te\xef\xbf\xbd\xc3\xa9\"} 1\n");
    nw_metrics_free(m);
}

UNIT_TEST(floats) {
    nw_metrics_t *m = nw_metrics_new();
    nw_metric_t *g[8];
    int i;
    char name[16];
    for (i = 0; i < 8; i++) {
        snprintf(name, sizeof(name), "g%d", i);
        g[i] = nw_metric_new(m, NW_METRIC_GAUGE, name, "h", NULL, NULL, 0);
        CHECK(g[i]);
    }
    nw_series_set(nw_metric_series(g[0], NULL), 1e15);   /* whole: no exponent */
    nw_series_set(nw_metric_series(g[1], NULL), -0.0);   /* no "-0" */
    nw_series_set(nw_metric_series(g[2], NULL), 0.1);    /* shortest that reads back */
    nw_series_set(nw_metric_series(g[3], NULL), INFINITY);
    nw_series_set(nw_metric_series(g[4], NULL), -INFINITY);
    nw_series_set(nw_metric_series(g[5], NULL), 1e300);  /* too big for an integer */
    nw_series_set(nw_metric_series(g[6], NULL), -42);
    nw_series_set(nw_metric_series(g[7], NULL), 0.1 + 0.2); /* needs all 17 digits */
    CHECK(strstr(render(m), "\ng0 1000000000000000\n"));
    CHECK(strstr(rendered, "\ng1 0\n"));
    CHECK(strstr(rendered, "\ng2 0.1\n"));
    CHECK(strstr(rendered, "\ng3 +Inf\n"));
    CHECK(strstr(rendered, "\ng4 -Inf\n"));
    CHECK(strstr(rendered, "\ng5 1e+300\n"));
    CHECK(strstr(rendered, "\ng6 -42\n"));
    CHECK(strstr(rendered, "\ng7 0.30000000000000004\n"));
    nw_metrics_free(m);
}

UNIT_TEST(bad_definitions) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const bad_label[] = {"__x", NULL};
    static const char *const le[] = {"le", NULL};
    static const char *const dup[] = {"a", "a", NULL};
    static const char *const colon[] = {"a:b", NULL};
    static const char *const six[] = {"a", "b", "c", "d", "e", "f", NULL};
    static const double b[] = {1, 2}, down[] = {2, 1};
    CHECK(!nw_metric_new(m, NW_METRIC_COUNTER, "natwrp_requests", "no _total", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_x_total", "gauge _total", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "1x", "h", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "a-b", "h", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "", "h", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "g", "h", bad_label, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "g", "h", dup, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "g", "h", colon, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "g", "h", six, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "g", "h", NULL, b, 2));
    CHECK(!nw_metric_new(m, NW_METRIC_HISTOGRAM, "h_seconds", "h", le, b, 2));
    CHECK(!nw_metric_new(m, NW_METRIC_HISTOGRAM, "h_seconds", "h", NULL, down, 2));
    CHECK(!nw_metric_new(m, NW_METRIC_HISTOGRAM, "h_seconds", "h", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_HISTOGRAM, "h_count", "h", NULL, b, 2));
    CHECK(nw_metric_new(m, NW_METRIC_GAUGE, "ok:name_1", "h", NULL, NULL, 0));
    CHECK(!nw_metric_new(m, NW_METRIC_GAUGE, "ok:name_1", "twice", NULL, NULL, 0));
    CHECK_STR(render(m), "# HELP ok:name_1 h\n# TYPE ok:name_1 gauge\n");
    nw_metrics_free(m);
}

UNIT_TEST(overflow_other) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"route", "code", NULL};
    nw_metric_t *c = nw_metric_new(m, NW_METRIC_COUNTER, "c_total", "h", lab, NULL, 0);
    char r[32];
    const char *v[2] = {r, "200"};
    const char *other[] = {"_other", "_other"};
    int i;
    CHECK(c);
    for (i = 0; i < NW_METRIC_MAX_SERIES + 100; i++) {
        snprintf(r, sizeof(r), "route%d", i);
        nw_series_add(nw_metric_series(c, v), 1);
    }
    /* the first NW_METRIC_MAX_SERIES kept their own; the rest one "_other" */
    snprintf(r, sizeof(r), "route%d", 0);
    CHECK(nw_series_value(nw_metric_series(c, v)) == 1);
    CHECK(nw_series_value(nw_metric_series(c, other)) == 100);
    snprintf(r, sizeof(r), "route%d", NW_METRIC_MAX_SERIES + 5);
    CHECK(nw_metric_series(c, v) == nw_metric_series(c, other));
    CHECK(strstr(render(m), "\nc_total{route=\"_other\",code=\"_other\"} 100\n"));
    /* existing series still count after the cap */
    snprintf(r, sizeof(r), "route%d", 7);
    nw_series_add(nw_metric_series(c, v), 1);
    CHECK(nw_series_value(nw_metric_series(c, v)) == 2);
    nw_metrics_free(m);
}

UNIT_TEST(remove_series) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"route", "group", NULL};
    const char *a[] = {"a", "g"}, *b[] = {"b", "g"}, *c[] = {"c", "g"};
    nw_metric_t *g = nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_tunnels", "h", lab, NULL, 0);
    CHECK(g);
    nw_series_set(nw_metric_series(g, a), 1);
    nw_series_set(nw_metric_series(g, b), 2);
    nw_series_set(nw_metric_series(g, c), 3);
    nw_metric_remove(g, b);
    nw_metric_remove(g, b); /* gone already: nothing */
    CHECK_STR(render(m), "# HELP natwrp_tunnels h\n# TYPE natwrp_tunnels gauge\n"
                         "natwrp_tunnels{route=\"a\",group=\"g\"} 1\n"
                         "natwrp_tunnels{route=\"c\",group=\"g\"} 3\n");
    nw_metric_remove(g, c); /* the tail */
    nw_series_set(nw_metric_series(g, b), 4); /* made again, at the end */
    CHECK_STR(render(m), "# HELP natwrp_tunnels h\n# TYPE natwrp_tunnels gauge\n"
                         "natwrp_tunnels{route=\"a\",group=\"g\"} 1\n"
                         "natwrp_tunnels{route=\"b\",group=\"g\"} 4\n");
    nw_metrics_free(m);
}

static int collected;
static void collect_a(nw_metrics_t *m, void *ud) {
    (void)m;
    nw_series_set(ud, 10 + collected++);
}

UNIT_TEST(collect_callbacks) {
    nw_metrics_t *m = nw_metrics_new();
    nw_metric_t *g = nw_metric_new(m, NW_METRIC_GAUGE, "g", "h", NULL, NULL, 0);
    nw_series_t *s = nw_metric_series(g, NULL);
    collected = 0;
    nw_metrics_on_collect(m, collect_a, s);
    nw_metrics_on_collect(m, collect_a, s); /* the same one twice counts once */
    CHECK(strstr(render(m), "\ng 10\n"));
    CHECK(strstr(render(m), "\ng 11\n"));
    CHECK_EQ(collected, 2);
    CHECK(nw_proc_metrics(m) == 0); /* a second callback beside the first */
    CHECK(strstr(render(m), "\ng 12\n"));
    CHECK(strstr(rendered, "\nprocess_open_fds "));
    nw_metrics_free(m);
}

UNIT_TEST(process_metrics) {
    nw_proc_stat_t st;
    nw_metrics_t *m = nw_metrics_new();
    const char *r;
    CHECK_EQ(nw_proc_read(&st), 0);
    CHECK(st.rss_bytes > 1e5 && st.vsize_bytes >= st.rss_bytes);
    CHECK(st.open_fds >= 3 && st.max_fds >= st.open_fds);
    CHECK(st.start_time > 1.5e9 && st.cpu_seconds >= 0);
    CHECK(nw_proc_metrics(m) == 0 && nw_build_info_metric(m) == 0);
    r = render(m);
    CHECK(strstr(r, "# TYPE process_cpu_seconds_total counter\n"));
    CHECK(strstr(r, "# TYPE process_start_time_seconds gauge\n"));
    CHECK(strstr(r, "\nprocess_resident_memory_bytes "));
    CHECK(strstr(r, "\nprocess_virtual_memory_bytes "));
    CHECK(strstr(r, "\nprocess_max_fds "));
    CHECK(strstr(r, "\nnatwrp_build_info{version=\"" NW_VERSION "\",libuv=\""));
    CHECK(strstr(r, "\",mbedtls=\""));
    nw_metrics_free(m);
}

UNIT_TEST(out_of_memory) {
    unsigned long i;
    int failed = 0;
    /* fail each allocation in turn: NULL or an error, never a crash or leak */
    for (i = 1; i < 40; i++) {
        static const char *const lab[] = {"route", NULL};
        static const double b[] = {1, 2};
        const char *v[] = {"x"};
        nw_metrics_t *m;
        nw_metric_t *h;
        nw_sbuf_t out = {0};
        nw__alloc_fail_in = i;
        m = nw_metrics_new();
        h = m ? nw_metric_new(m, NW_METRIC_HISTOGRAM, "h_seconds", "h", lab, b, 2) : NULL;
        if (h)
            nw_series_observe(nw_metric_series(h, v), 1);
        if (!m || !h || nw_metrics_render(m, &out) != 0)
            failed++;
        nw__alloc_fail_in = 0;
        nw_sbuf_free(&out);
        nw_metrics_free(m);
    }
    CHECK(failed > 0);
}

/* A registry with every kind of series, awkward label values included,
 * piped into `promtool check metrics`: no output, exit 0. */
UNIT_TEST(promtool_accepts) {
    nw_metrics_t *m = nw_metrics_new();
    static const char *const lab[] = {"route", "code", NULL};
    static const char *const rl[] = {"route", NULL};
    static const double b[] = {0.001, 0.01, 0.1, 1, 10};
    const char *v1[] = {"a.example.com/api", "200"}, *v2[] = {"we\"ird\\ \n\xff", "502"};
    const char *r[] = {"*"};
    nw_metric_t *c, *h, *g;
    char cmd[256], out[4096];
    FILE *p;
    size_t n;
    int rc;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("     (promtool not installed: scripts/deps.sh --promtool; skipped)\n");
        nw_metrics_free(m);
        return;
    }
    c = nw_metric_new(m, NW_METRIC_COUNTER, "natwrp_requests_total", "Requests\\answered.\nx",
                      lab, NULL, 0);
    h = nw_metric_new(m, NW_METRIC_HISTOGRAM, "natwrp_request_duration_seconds", "Duration.",
                      rl, b, 5);
    g = nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_streams_active", "Streams.", NULL, NULL, 0);
    CHECK(c && h && g && nw_proc_metrics(m) == 0 && nw_build_info_metric(m) == 0);
    nw_series_add(nw_metric_series(c, v1), 3);
    nw_series_add(nw_metric_series(c, v2), 0.5);
    nw_series_observe(nw_metric_series(h, r), 0.0042);
    nw_series_observe(nw_metric_series(h, r), 99);
    nw_series_set(nw_metric_series(g, NULL), 1e300);
    snprintf(cmd, sizeof(cmd), "promtool check metrics >/tmp/nw_promtool.%d 2>&1", (int)getpid());
    p = popen(cmd, "w");
    CHECK(p);
    render(m);
    fwrite(rendered, 1, strlen(rendered), p);
    rc = pclose(p);
    snprintf(cmd, sizeof(cmd), "/tmp/nw_promtool.%d", (int)getpid());
    p = fopen(cmd, "r");
    n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
    out[n] = '\0';
    if (p)
        fclose(p);
    unlink(cmd);
    if (rc != 0 || n)
        fprintf(stderr, "promtool (exit %d) said: %s\n---\n%s", rc, out, rendered);
    CHECK_EQ(rc, 0);
    CHECK_EQ(n, 0);
    nw_metrics_free(m);
}

UNIT_MAIN(UNIT_CASE(counter_and_gauge), UNIT_CASE(empty_family_has_help_and_type),
          UNIT_CASE(histogram), UNIT_CASE(histogram_without_labels), UNIT_CASE(escaping),
          UNIT_CASE(floats), UNIT_CASE(bad_definitions), UNIT_CASE(overflow_other),
          UNIT_CASE(remove_series), UNIT_CASE(collect_callbacks), UNIT_CASE(process_metrics),
          UNIT_CASE(out_of_memory), UNIT_CASE(promtool_accepts))
