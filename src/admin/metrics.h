/* metrics.h: a metrics registry and its Prometheus text exposition
 * (format 0.0.4), pure: no libuv. Families have a name, help, a type and
 * up to NW_METRIC_MAX_LABELS label names; a series is one family's set of
 * label values. Both roles register their families at start and update
 * series where things happen; /metrics renders the registry. */
#ifndef NW_METRICS_H
#define NW_METRICS_H

#include <stddef.h>

#include "buf.h"

#define NW_METRIC_MAX_LABELS 5 /* natwrp_build_info has 5 */
/* Series per family; past it, new label values are counted in one series
 * whose label values are all "_other" (a client cannot grow memory by
 * inventing routes or status codes). */
#define NW_METRIC_MAX_SERIES 4096

enum { NW_METRIC_COUNTER, NW_METRIC_GAUGE, NW_METRIC_HISTOGRAM };

typedef struct nw_metrics nw_metrics_t;
typedef struct nw_metric nw_metric_t; /* a family */
typedef struct nw_series nw_series_t; /* one label-value set of a family */

nw_metrics_t *nw_metrics_new(void);
void nw_metrics_free(nw_metrics_t *m);

/* A family. name follows the naming guide (natwrp_ prefix, _total for
 * counters, base units _seconds/_bytes); labels is NULL-terminated (NULL:
 * none); buckets (upper bounds, ascending, +Inf implied) only for a
 * histogram. NULL on a bad name or out of memory. */
nw_metric_t *nw_metric_new(nw_metrics_t *m, int type, const char *name, const char *help,
                           const char *const *labels, const double *buckets, size_t nbuckets);

/* The series for these label values (one per label name; any bytes, they
 * are escaped when rendered), created at its first use. Never NULL for a
 * family with room or an "_other" series; NULL only when out of memory. */
nw_series_t *nw_metric_series(nw_metric_t *f, const char *const *values);

void nw_series_add(nw_series_t *s, double v);     /* counter (v >= 0) or gauge */
void nw_series_set(nw_series_t *s, double v);     /* gauge */
void nw_series_observe(nw_series_t *s, double v); /* histogram: one observation */

/* The value of a counter or gauge; a histogram's sum (tests, /api/status). */
double nw_series_value(const nw_series_t *s);
/* A histogram's observation count (0 for the others). */
unsigned long long nw_series_count(const nw_series_t *s);

/* Drop a series (a tunnel or route that went away: its gauges). */
void nw_metric_remove(nw_metric_t *f, const char *const *values);

/* Called first by nw_metrics_render: set gauges computed at scrape time
 * (streams in flight, memory, ...). Several may be added (proc.c adds
 * one, the role its own); they run in the order they were added. */
typedef void (*nw_metrics_collect_fn)(nw_metrics_t *m, void *ud);
void nw_metrics_on_collect(nw_metrics_t *m, nw_metrics_collect_fn fn, void *ud);

/* size bytes of zeroed memory that lives as long as m (freed by
 * nw_metrics_free): state for a collect callback. NULL when out of memory. */
void *nw_metrics_attach(nw_metrics_t *m, size_t size);

/* The text exposition of every family, in registration order, each with
 * its # HELP and # TYPE lines. 0 or NW_ENOMEM. */
int nw_metrics_render(nw_metrics_t *m, nw_sbuf_t *out);

#endif
