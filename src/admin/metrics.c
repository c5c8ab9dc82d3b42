/* metrics.c: the metrics registry and the Prometheus text exposition,
 * format 0.0.4 (pure, no libuv). A family keeps its series in a hash
 * table keyed by the label values (joined with NUL bytes); rendering walks
 * them in creation order. Past NW_METRIC_MAX_SERIES a family puts new
 * label values into one series whose values are all "_other". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "json.h"
#include "metrics.h"

#define NW_METRIC_NAME_MAX 128

struct nw_series {
    nw_series_t *next;      /* creation order */
    nw_series_t *hnext;     /* hash chain */
    nw_metric_t *f;
    char *key;              /* label values joined by NUL, keylen bytes */
    size_t keylen;
    uint64_t hash;
    double v;               /* counter, gauge; histogram: sum */
    uint64_t count;         /* histogram */
    uint64_t *buckets;      /* histogram: per bucket (not cumulative) */
};

struct nw_metric {
    nw_metric_t *next;
    nw_metrics_t *m;
    int type;
    char *name, *help;
    char *labels[NW_METRIC_MAX_LABELS];
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    nw_series_t *head, *tail;
    nw_series_t **tab;      /* hash table, tabsize slots */
    size_t tabsize, nseries;
    nw_series_t *other;     /* the "_other" overflow series, once made */
};

#define NW_METRICS_MAX_COLLECT 8

struct nw_metrics {
    nw_metric_t *head, *tail;
    nw_metrics_collect_fn collect[NW_METRICS_MAX_COLLECT];
    void *collect_ud[NW_METRICS_MAX_COLLECT];
    size_t ncollect;
    struct attached *attached;
};

struct attached {
    struct attached *next;
    /* the caller's bytes follow, aligned for any type */
    union {
        double d;
        void *p;
        unsigned long long u;
    } data[];
};

nw_metrics_t *nw_metrics_new(void) {
    return nw_calloc(1, sizeof(nw_metrics_t));
}

static void series_free(nw_series_t *s) {
    nw_free(s->key);
    nw_free(s->buckets);
    nw_free(s);
}

static void family_free(nw_metric_t *f) {
    nw_series_t *s, *n;
    size_t i;
    for (s = f->head; s; s = n) {
        n = s->next;
        series_free(s);
    }
    for (i = 0; i < f->nlabels; i++)
        nw_free(f->labels[i]);
    nw_free(f->tab);
    nw_free(f->bounds);
    nw_free(f->name);
    nw_free(f->help);
    nw_free(f);
}

void nw_metrics_free(nw_metrics_t *m) {
    nw_metric_t *f, *n;
    struct attached *a, *an;
    if (!m)
        return;
    for (a = m->attached; a; a = an) {
        an = a->next;
        nw_free(a);
    }
    for (f = m->head; f; f = n) {
        n = f->next;
        family_free(f);
    }
    nw_free(m);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; labels without ':' and
 * never starting with "__" (reserved). */
static int name_ok(const char *s, int label) {
    size_t i, n = s ? strlen(s) : 0;
    if (n == 0 || n > NW_METRIC_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (!label && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    if (label && n >= 2 && s[0] == '_' && s[1] == '_')
        return 0;
    return 1;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

nw_metric_t *nw_metric_new(nw_metrics_t *m, int type, const char *name, const char *help,
                           const char *const *labels, const double *buckets, size_t nbuckets) {
    nw_metric_t *f;
    nw_metric_t *g;
    size_t i, j;
    if (!m || !name_ok(name, 0) || !help)
        return NULL;
    if (type != NW_METRIC_COUNTER && type != NW_METRIC_GAUGE && type != NW_METRIC_HISTOGRAM)
        return NULL;
    /* Counters end in _total; the series names a histogram renders must
     * not collide with a family of its own. */
    if ((type == NW_METRIC_COUNTER) != ends_with(name, "_total"))
        return NULL;
    if (type == NW_METRIC_HISTOGRAM && (ends_with(name, "_bucket") || ends_with(name, "_sum") ||
                                        ends_with(name, "_count") || nbuckets == 0))
        return NULL;
    if (type != NW_METRIC_HISTOGRAM && nbuckets)
        return NULL;
    for (g = m->head; g; g = g->next)
        if (strcmp(g->name, name) == 0)
            return NULL;
    f = nw_calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->m = m;
    f->type = type;
    f->name = nw_strndup(name, strlen(name));
    f->help = nw_strndup(help, strlen(help));
    if (!f->name || !f->help)
        goto fail;
    for (i = 0; labels && labels[i]; i++) {
        if (i >= NW_METRIC_MAX_LABELS || !name_ok(labels[i], 1) ||
            (type == NW_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0))
            goto fail;
        for (j = 0; j < i; j++)
            if (strcmp(labels[j], labels[i]) == 0)
                goto fail;
        f->labels[i] = nw_strndup(labels[i], strlen(labels[i]));
        if (!f->labels[i])
            goto fail;
        f->nlabels = i + 1;
    }
    if (type == NW_METRIC_HISTOGRAM) {
        for (i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                goto fail;
        f->bounds = nw_malloc(nbuckets * sizeof(double));
        if (!f->bounds)
            goto fail;
        memcpy(f->bounds, buckets, nbuckets * sizeof(double));
        f->nbounds = nbuckets;
    }
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
fail:
    family_free(f);
    return NULL;
}

/* FNV-1a, 64 bits. */
static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 14695981039346656037ull;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The key of a label-value set: each value then a NUL. Values are
 * C strings, so they contain no NUL and the join is unambiguous. */
static char *make_key(const nw_metric_t *f, const char *const *values, size_t *len) {
    size_t i, n = 0, off = 0;
    char *k;
    for (i = 0; i < f->nlabels; i++)
        n += strlen(values && values[i] ? values[i] : "") + 1;
    k = nw_malloc(n ? n : 1);
    if (!k)
        return NULL;
    for (i = 0; i < f->nlabels; i++) {
        const char *v = values && values[i] ? values[i] : "";
        size_t l = strlen(v);
        memcpy(k + off, v, l);
        off += l;
        k[off++] = '\0';
    }
    *len = n;
    return k;
}

static nw_series_t *lookup(nw_metric_t *f, const char *key, size_t len, uint64_t h) {
    nw_series_t *s;
    if (!f->tab)
        return NULL;
    for (s = f->tab[h & (f->tabsize - 1)]; s; s = s->hnext)
        if (s->hash == h && s->keylen == len && memcmp(s->key, key, len) == 0)
            return s;
    return NULL;
}

static int grow(nw_metric_t *f) {
    size_t n = f->tabsize ? f->tabsize * 2 : 16, i;
    nw_series_t **t = nw_calloc(n, sizeof(*t)), *s;
    if (!t)
        return NW_ENOMEM;
    for (i = 0; i < f->tabsize; i++) {
        nw_series_t *next;
        for (s = f->tab[i]; s; s = next) {
            next = s->hnext;
            s->hnext = t[s->hash & (n - 1)];
            t[s->hash & (n - 1)] = s;
        }
    }
    nw_free(f->tab);
    f->tab = t;
    f->tabsize = n;
    return 0;
}

/* Make a series for key (taken over: freed on failure). */
static nw_series_t *series_add(nw_metric_t *f, char *key, size_t len, uint64_t h) {
    nw_series_t *s;
    if ((f->nseries + 1) * 4 > f->tabsize * 3 && grow(f) != 0) {
        nw_free(key);
        return NULL;
    }
    s = nw_calloc(1, sizeof(*s));
    if (!s) {
        nw_free(key);
        return NULL;
    }
    s->f = f;
    s->key = key;
    s->keylen = len;
    s->hash = h;
    if (f->type == NW_METRIC_HISTOGRAM) {
        s->buckets = nw_calloc(f->nbounds + 1, sizeof(uint64_t));
        if (!s->buckets) {
            series_free(s);
            return NULL;
        }
    }
    s->hnext = f->tab[h & (f->tabsize - 1)];
    f->tab[h & (f->tabsize - 1)] = s;
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    f->nseries++;
    return s;
}

nw_series_t *nw_metric_series(nw_metric_t *f, const char *const *values) {
    size_t len, i;
    uint64_t h;
    nw_series_t *s;
    char *key;
    if (!f)
        return NULL;
    key = make_key(f, values, &len);
    if (!key)
        return NULL;
    h = hash_bytes(key, len);
    s = lookup(f, key, len, h);
    if (s) {
        nw_free(key);
        return s;
    }
    if (f->nseries >= NW_METRIC_MAX_SERIES) {
        const char *other[NW_METRIC_MAX_LABELS];
        nw_free(key);
        if (f->other)
            return f->other;
        for (i = 0; i < f->nlabels; i++)
            other[i] = "_other";
        key = make_key(f, other, &len);
        if (!key)
            return NULL;
        h = hash_bytes(key, len);
        s = lookup(f, key, len, h); /* real "_other" values may exist already */
        if (s) {
            nw_free(key);
            return f->other = s;
        }
        /* Made past the cap: the one series allowed over it. */
        return f->other = series_add(f, key, len, h);
    }
    return series_add(f, key, len, h);
}

void nw_series_add(nw_series_t *s, double v) {
    if (!s)
        return;
    if (s->f->type == NW_METRIC_COUNTER && !(v >= 0))
        return; /* a counter never goes down (nor becomes NaN) */
    s->v += v;
}

double nw_series_value(const nw_series_t *s) {
    return s ? s->v : 0;
}

unsigned long long nw_series_count(const nw_series_t *s) {
    return s ? (unsigned long long)s->count : 0;
}

void *nw_metrics_attach(nw_metrics_t *m, size_t size) {
    struct attached *a = nw_calloc(1, sizeof(*a) + size);
    if (!a)
        return NULL;
    a->next = m->attached;
    m->attached = a;
    return a->data;
}

void nw_series_set(nw_series_t *s, double v) {
    if (s && s->f->type == NW_METRIC_GAUGE)
        s->v = v;
}

void nw_series_observe(nw_series_t *s, double v) {
    size_t i;
    if (!s || s->f->type != NW_METRIC_HISTOGRAM || isnan(v))
        return;
    for (i = 0; i < s->f->nbounds && v > s->f->bounds[i]; i++)
        ;
    s->buckets[i]++; /* i == nbounds: only +Inf holds it */
    s->count++;
    s->v += v;
}

void nw_metric_remove(nw_metric_t *f, const char *const *values) {
    size_t len;
    uint64_t h;
    nw_series_t *s, **pp, *prev = NULL, *p;
    char *key;
    if (!f)
        return;
    key = make_key(f, values, &len);
    if (!key)
        return;
    h = hash_bytes(key, len);
    s = lookup(f, key, len, h);
    nw_free(key);
    if (!s)
        return;
    for (pp = &f->tab[h & (f->tabsize - 1)]; *pp != s; pp = &(*pp)->hnext)
        ;
    *pp = s->hnext;
    for (p = f->head; p != s; p = p->next)
        prev = p;
    if (prev)
        prev->next = s->next;
    else
        f->head = s->next;
    if (f->tail == s)
        f->tail = prev;
    if (f->other == s)
        f->other = NULL;
    f->nseries--;
    series_free(s);
}

/* Several modules may each add one (proc.c, the role's own): they run in
 * the order they were added. The same fn and ud twice count once. */
void nw_metrics_on_collect(nw_metrics_t *m, nw_metrics_collect_fn fn, void *ud) {
    size_t i;
    for (i = 0; i < m->ncollect; i++)
        if (m->collect[i] == fn && m->collect_ud[i] == ud)
            return;
    if (m->ncollect == NW_METRICS_MAX_COLLECT)
        return; /* a programming error: there are only a few callers */
    m->collect[m->ncollect] = fn;
    m->collect_ud[m->ncollect++] = ud;
}

/* ---- exposition ---------------------------------------------------------- */

/* A float as Go's strconv.ParseFloat reads it: whole numbers without an
 * exponent (up to 2^53, exact), the rest so that they read back exactly
 * (at most %.17g), and +Inf, -Inf, NaN by name. */
static int put_float(nw_sbuf_t *out, double v) {
    if (isnan(v))
        return nw_sbuf_appends(out, "NaN");
    if (isinf(v))
        return nw_sbuf_appends(out, v > 0 ? "+Inf" : "-Inf");
    if (v >= -9007199254740992.0 && v <= 9007199254740992.0 && (double)(long long)v == v)
        return nw_sbuf_appendf(out, "%lld", (long long)v); /* no "-0", no exponent */
    /* The shortest of %.15g, %.16g, %.17g that reads back as v (%.17g
     * always does): le="0.005" as other exporters write it, not
     * le="0.0050000000000000001". */
    {
        char buf[40];
        int prec;
        for (prec = 15; prec < 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                return nw_sbuf_appends(out, buf);
        }
    }
    return nw_sbuf_appendf(out, "%.17g", v);
}

/* HELP text (quote = 0: backslash and newline escaped) or a label value
 * (quote = 1: double quote too). Both must be UTF-8 (promtool refuses a
 * label value that is not): other bytes become U+FFFD. */
static int put_escaped(nw_sbuf_t *out, const char *s, int quote) {
    size_t n = strlen(s), i = 0, l;
    int rc = 0;
    while (i < n && rc == 0) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\') {
            rc = nw_sbuf_append(out, "\\\\", 2);
            i++;
        } else if (c == '\n') {
            rc = nw_sbuf_append(out, "\\n", 2);
            i++;
        } else if (c == '"' && quote) {
            rc = nw_sbuf_append(out, "\\\"", 2);
            i++;
        } else if ((l = nw_utf8_len(s + i, n - i)) != 0) {
            rc = nw_sbuf_append(out, s + i, l);
            i += l;
        } else {
            rc = nw_sbuf_append(out, "\xEF\xBF\xBD", 3);
            i += nw_utf8_bad(s + i, n - i);
        }
    }
    return rc;
}

static int put_help(nw_sbuf_t *out, const char *s) {
    return put_escaped(out, s, 0);
}

static int put_lvalue(nw_sbuf_t *out, const char *s) {
    return put_escaped(out, s, 1);
}

/* "{a="x",b="y"}" (nothing without labels), with le= appended when le is
 * set. */
static int put_labels(nw_sbuf_t *out, const nw_metric_t *f, const nw_series_t *s,
                      const char *le) {
    const char *v = s->key;
    size_t i;
    int rc = 0;
    if (!f->nlabels && !le)
        return 0;
    rc |= nw_sbuf_append(out, "{", 1);
    for (i = 0; i < f->nlabels; i++) {
        rc |= nw_sbuf_appendf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        rc |= put_lvalue(out, v);
        rc |= nw_sbuf_append(out, "\"", 1);
        v += strlen(v) + 1;
    }
    if (le)
        rc |= nw_sbuf_appendf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    rc |= nw_sbuf_append(out, "}", 1);
    return rc ? NW_ENOMEM : 0;
}

static int put_histogram(nw_sbuf_t *out, const nw_metric_t *f, const nw_series_t *s) {
    uint64_t cum = 0;
    size_t i;
    int rc = 0;
    char le[40];
    for (i = 0; i <= f->nbounds; i++) {
        nw_sbuf_t tmp = {0};
        cum += s->buckets[i];
        if (i < f->nbounds) {
            if (put_float(&tmp, f->bounds[i]) != 0 || tmp.len >= sizeof(le)) {
                nw_sbuf_free(&tmp);
                return NW_ENOMEM;
            }
            memcpy(le, tmp.p, tmp.len);
            le[tmp.len] = '\0';
            nw_sbuf_free(&tmp);
        } else {
            memcpy(le, "+Inf", 5);
        }
        rc |= nw_sbuf_appendf(out, "%s_bucket", f->name);
        rc |= put_labels(out, f, s, le);
        rc |= nw_sbuf_appendf(out, " %llu\n", (unsigned long long)cum);
    }
    rc |= nw_sbuf_appendf(out, "%s_sum", f->name);
    rc |= put_labels(out, f, s, NULL);
    rc |= nw_sbuf_append(out, " ", 1);
    rc |= put_float(out, s->v);
    rc |= nw_sbuf_appendf(out, "\n%s_count", f->name);
    rc |= put_labels(out, f, s, NULL);
    rc |= nw_sbuf_appendf(out, " %llu\n", (unsigned long long)s->count);
    return rc ? NW_ENOMEM : 0;
}

int nw_metrics_render(nw_metrics_t *m, nw_sbuf_t *out) {
    static const char *const types[] = {"counter", "gauge", "histogram"};
    const nw_metric_t *f;
    const nw_series_t *s;
    int rc = 0;
    size_t i;
    for (i = 0; i < m->ncollect; i++)
        m->collect[i](m, m->collect_ud[i]);
    for (f = m->head; f && rc == 0; f = f->next) {
        rc |= nw_sbuf_appendf(out, "# HELP %s ", f->name);
        rc |= put_help(out, f->help);
        rc |= nw_sbuf_appendf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
        for (s = f->head; s && rc == 0; s = s->next) {
            if (f->type == NW_METRIC_HISTOGRAM) {
                rc |= put_histogram(out, f, s);
                continue;
            }
            rc |= nw_sbuf_appends(out, f->name);
            rc |= put_labels(out, f, s, NULL);
            rc |= nw_sbuf_append(out, " ", 1);
            rc |= put_float(out, s->v);
            rc |= nw_sbuf_append(out, "\n", 1);
        }
    }
    return rc ? NW_ENOMEM : 0;
}
