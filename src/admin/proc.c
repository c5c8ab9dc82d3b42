/* proc.c: the process_* metrics of the Prometheus client libraries (their
 * names, types and units), read from /proc at each scrape, and
 * natwrp_build_info. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "proc.h"
#include "version.h"

typedef struct {
    nw_series_t *cpu, *start, *rss, *vsize, *fds, *maxfds;
} proc_series_t;

/* Read a small /proc file whole into buf (NUL-terminated). */
static int slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "re");
    size_t n;
    if (!f)
        return -1;
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n ? 0 : -1;
}

/* The boot time in seconds since the epoch (/proc/stat btime). */
static double boot_time(void) {
    static double bt = -1;
    char buf[8192], *p;
    if (bt >= 0)
        return bt;
    if (slurp("/proc/stat", buf, sizeof(buf)) != 0)
        return 0;
    p = strstr(buf, "\nbtime ");
    if (!p)
        return 0;
    bt = strtod(p + 7, NULL);
    return bt;
}

int nw_proc_read(nw_proc_stat_t *st) {
    char buf[2048], *p, *end;
    unsigned long long v[24];
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    struct rlimit rl;
    DIR *d;
    struct dirent *e;
    int i;
    memset(st, 0, sizeof(*st));
    if (tck <= 0)
        tck = 100;
    if (page <= 0)
        page = 4096;
    if (slurp("/proc/self/stat", buf, sizeof(buf)) != 0)
        return -1;
    /* "pid (comm) state ppid ...": comm may hold spaces and ')' itself. */
    p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    /* Field 3 (state) is a letter: skip it; v[k] is field k + 4. */
    while (*p && *p != ' ')
        p++;
    for (i = 0; i < 21; i++) {
        v[i] = strtoull(p, &end, 10);
        if (end == p)
            return -1;
        p = end;
    }
    /* utime 14, stime 15, starttime 22, vsize 23, rss 24 (pages). */
    st->cpu_seconds = (double)(v[14 - 4] + v[15 - 4]) / (double)tck;
    st->start_time = boot_time() + (double)v[22 - 4] / (double)tck;
    st->vsize_bytes = (double)v[23 - 4];
    st->rss_bytes = (double)v[24 - 4] * (double)page;
    d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        st->open_fds = (double)(n > 0 ? n - 1 : 0); /* not the one reading it */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        st->max_fds = rl.rlim_cur == RLIM_INFINITY ? 0 : (double)rl.rlim_cur;
    return 0;
}

static void on_collect(nw_metrics_t *m, void *ud) {
    proc_series_t *ps = ud;
    nw_proc_stat_t st;
    (void)m;
    if (nw_proc_read(&st) != 0)
        return;
    /* A counter only moves forward: add what it gained. */
    if (st.cpu_seconds > nw_series_value(ps->cpu))
        nw_series_add(ps->cpu, st.cpu_seconds - nw_series_value(ps->cpu));
    nw_series_set(ps->start, st.start_time);
    nw_series_set(ps->rss, st.rss_bytes);
    nw_series_set(ps->vsize, st.vsize_bytes);
    nw_series_set(ps->fds, st.open_fds);
    nw_series_set(ps->maxfds, st.max_fds);
}

int nw_proc_metrics(nw_metrics_t *m) {
    proc_series_t *ps;
    nw_metric_t *f[6];
    size_t i;
    ps = nw_metrics_attach(m, sizeof(*ps));
    if (!ps)
        return NW_ENOMEM;
    f[0] = nw_metric_new(m, NW_METRIC_COUNTER, "process_cpu_seconds_total",
                         "Total user and system CPU time spent in seconds.", NULL, NULL, 0);
    f[1] = nw_metric_new(m, NW_METRIC_GAUGE, "process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.", NULL, NULL,
                         0);
    f[2] = nw_metric_new(m, NW_METRIC_GAUGE, "process_resident_memory_bytes",
                         "Resident memory size in bytes.", NULL, NULL, 0);
    f[3] = nw_metric_new(m, NW_METRIC_GAUGE, "process_virtual_memory_bytes",
                         "Virtual memory size in bytes.", NULL, NULL, 0);
    f[4] = nw_metric_new(m, NW_METRIC_GAUGE, "process_open_fds",
                         "Number of open file descriptors.", NULL, NULL, 0);
    f[5] = nw_metric_new(m, NW_METRIC_GAUGE, "process_max_fds",
                         "Maximum number of open file descriptors.", NULL, NULL, 0);
    for (i = 0; i < 6; i++)
        if (!f[i])
            return NW_ENOMEM;
    ps->cpu = nw_metric_series(f[0], NULL);
    ps->start = nw_metric_series(f[1], NULL);
    ps->rss = nw_metric_series(f[2], NULL);
    ps->vsize = nw_metric_series(f[3], NULL);
    ps->fds = nw_metric_series(f[4], NULL);
    ps->maxfds = nw_metric_series(f[5], NULL);
    if (!ps->cpu || !ps->start || !ps->rss || !ps->vsize || !ps->fds || !ps->maxfds)
        return NW_ENOMEM;
    nw_metrics_on_collect(m, on_collect, ps);
    return 0;
}

int nw_build_info_metric(nw_metrics_t *m) {
    static const char *const labels[] = {"version", "libuv", "llhttp", "wslay", "mbedtls", NULL};
    const char *values[5];
    nw_metric_t *f;
    nw_series_t *s;
    values[0] = NW_VERSION;
    values[1] = nw_libuv_version();
    values[2] = nw_llhttp_version();
    values[3] = nw_wslay_version();
    values[4] = nw_mbedtls_version();
    f = nw_metric_new(m, NW_METRIC_GAUGE, "natwrp_build_info",
                      "natwrp's version and the versions of the libraries it runs with; "
                      "always 1.",
                      labels, NULL, 0);
    if (!f)
        return NW_ENOMEM;
    s = nw_metric_series(f, values);
    if (!s)
        return NW_ENOMEM;
    nw_series_set(s, 1);
    return 0;
}
