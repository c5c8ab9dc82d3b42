/* proc.h: the standard process_* metrics (as the Prometheus client
 * libraries define them, read from /proc on Linux) and natwrp_build_info. */
#ifndef NW_PROC_H
#define NW_PROC_H

#include "metrics.h"

/* Register process_cpu_seconds_total, process_start_time_seconds,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds and process_max_fds in m; they are read again at each
 * render (a collect callback of its own). Call once per registry. 0 or
 * NW_ENOMEM. */
int nw_proc_metrics(nw_metrics_t *m);

/* natwrp_build_info{version,libuv,llhttp,wslay,mbedtls} 1. 0 or NW_ENOMEM. */
int nw_build_info_metric(nw_metrics_t *m);

/* The values, for tests and /api/status: 0, or -1 when /proc cannot be
 * read. */
typedef struct {
    double cpu_seconds, start_time, rss_bytes, vsize_bytes, open_fds, max_fds;
} nw_proc_stat_t;
int nw_proc_read(nw_proc_stat_t *st);

#endif
