/* http1.c: head accumulation, hop-by-hop rules and target forms. */
#include "http1.h"

void nw_hf_init(nw_hfields_t *h, size_t max) {
    memset(h, 0, sizeof(*h));
    h->max = max;
}

void nw_hf_reset(nw_hfields_t *h) {
    h->raw.len = 0;
    h->first_len = 0;
    h->n = 0;
    h->last = 0;
}

void nw_hf_free(nw_hfields_t *h) { nw_sbuf_free(&h->raw); }

static int hf_add(nw_hfields_t *h, const char *p, size_t n) {
    if (h->raw.len + n > h->max)
        return NW_HF_TOOBIG;
    return nw_sbuf_append(&h->raw, p, n) ? NW_HF_NOMEM : NW_HF_OK;
}

int nw_hf_first(nw_hfields_t *h, const char *p, size_t n) {
    int rc = hf_add(h, p, n);
    if (rc == 0)
        h->first_len += n;
    return rc;
}

int nw_hf_name(nw_hfields_t *h, const char *p, size_t n) {
    int rc;
    if (h->last != 1) {
        if (h->n == NW_HTTP_MAX_FIELDS)
            return NW_HF_TOOMANY;
        h->f[h->n].no = (uint32_t)h->raw.len;
        h->f[h->n].nl = 0;
        h->f[h->n].vo = 0;
        h->f[h->n].vl = 0;
        h->n++;
        h->last = 1;
    }
    if ((rc = hf_add(h, p, n)) == 0)
        h->f[h->n - 1].nl += (uint32_t)n;
    return rc;
}

int nw_hf_value(nw_hfields_t *h, const char *p, size_t n) {
    int rc;
    if (h->n == 0)
        return NW_HF_OK; /* llhttp never does this; be safe anyway */
    if (h->last != 2) {
        h->f[h->n - 1].vo = (uint32_t)h->raw.len;
        h->last = 2;
    }
    if ((rc = hf_add(h, p, n)) == 0)
        h->f[h->n - 1].vl += (uint32_t)n;
    return rc;
}

void nw_hf_get(const nw_hfields_t *h, size_t i, nw_hdr_t *out) {
    out->name = h->raw.p + h->f[i].no;
    out->name_len = h->f[i].nl;
    out->value = h->f[i].vl ? h->raw.p + h->f[i].vo : "";
    out->value_len = h->f[i].vl;
    /* llhttp drops leading whitespace but not trailing (RFC 9110 5.5). */
    while (out->value_len &&
           (out->value[out->value_len - 1] == ' ' || out->value[out->value_len - 1] == '\t'))
        out->value_len--;
}

int nw_hf_find(const nw_hfields_t *h, const char *name, size_t start) {
    size_t i;
    for (i = start; i < h->n; i++)
        if (nw_strieq(h->raw.p + h->f[i].no, h->f[i].nl, name))
            return (int)i;
    return -1;
}

int nw_http_cb_first(llhttp_t *p, const char *at, size_t n) {
    return nw_hf_first((nw_hfields_t *)p->data, at, n) == 0 ? 0 : -1;
}

int nw_http_cb_name(llhttp_t *p, const char *at, size_t n) {
    return nw_hf_name((nw_hfields_t *)p->data, at, n) == 0 ? 0 : -1;
}

int nw_http_cb_value(llhttp_t *p, const char *at, size_t n) {
    return nw_hf_value((nw_hfields_t *)p->data, at, n) == 0 ? 0 : -1;
}

int nw_http_is_hop(const char *name, size_t len) {
    /* By length first: most names match none of these lengths. */
    if (len >= 6 && (name[0] == 'p' || name[0] == 'P') && nw_strieq(name, 6, "proxy-"))
        return 1;
    switch (len) {
    case 2: return nw_strieq(name, len, "te");
    case 7: return nw_strieq(name, len, "trailer") || nw_strieq(name, len, "upgrade");
    case 10: return nw_strieq(name, len, "connection") || nw_strieq(name, len, "keep-alive");
    case 17: return nw_strieq(name, len, "transfer-encoding");
    default: return 0;
    }
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int nw_memieq(const char *a, const char *b, size_t n) {
    size_t k;
    for (k = 0; k < n; k++)
        if (lower((unsigned char)a[k]) != lower((unsigned char)b[k]))
            return 0;
    return 1;
}

/* Walk the comma-separated tokens of v; 1 if one equals tok. */
static int value_has_token(const char *v, size_t vl, const char *tok, size_t tl) {
    size_t i = 0;
    while (i < vl) {
        size_t s, e;
        while (i < vl && (is_ows(v[i]) || v[i] == ','))
            i++;
        s = i;
        while (i < vl && v[i] != ',')
            i++;
        e = i;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e - s == tl && tl && nw_memieq(v + s, tok, tl))
            return 1;
    }
    return 0;
}

int nw_http_has_token(const nw_hfields_t *h, const char *name, const char *token) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, name, (size_t)(i + 1))) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        if (value_has_token(f.value, f.value_len, token, strlen(token)))
            return 1;
    }
    return 0;
}

int nw_http_conn_lists(const nw_hfields_t *h, const char *name, size_t len) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, "connection", (size_t)(i + 1))) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        if (value_has_token(f.value, f.value_len, name, len))
            return 1;
    }
    return 0;
}

/* 1 if a Connection field lists a name that is not hop-by-hop anyway. */
static int conn_lists_other(const nw_hfields_t *h) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, "connection", (size_t)(i + 1))) >= 0) {
        size_t k = 0, s, e;
        nw_hf_get(h, (size_t)i, &f);
        while (k < f.value_len) {
            while (k < f.value_len && (is_ows(f.value[k]) || f.value[k] == ','))
                k++;
            s = k;
            while (k < f.value_len && f.value[k] != ',')
                k++;
            e = k;
            while (e > s && is_ows(f.value[e - 1]))
                e--;
            if (e > s && !nw_http_is_hop(f.value + s, e - s))
                return 1;
        }
    }
    return 0;
}

int nw_http_filter(const nw_hfields_t *h, nw_hdr_t *out, size_t cap, const char *const *drop) {
    size_t i, n = 0;
    /* Most heads have no Connection field, or one that lists only names
     * dropped anyway ("keep-alive", nginx's): then the per-field scan of
     * every Connection field (quadratic in the head) can be skipped. */
    int has_conn = conn_lists_other(h);
    for (i = 0; i < h->n; i++) {
        nw_hdr_t f;
        size_t k;
        int skip = 0;
        nw_hf_get(h, i, &f);
        if (nw_http_is_hop(f.name, f.name_len) ||
            (has_conn && nw_http_conn_lists(h, f.name, f.name_len)))
            continue;
        for (k = 0; drop && drop[k] && !skip; k++)
            skip = nw_strieq(f.name, f.name_len, drop[k]);
        if (skip)
            continue;
        if (n == cap)
            return -1;
        out[n++] = f;
    }
    return (int)n;
}

int nw_http_origin_form(const char *t, size_t len, const char **out, size_t *out_len) {
    size_t skip = 0, i;
    if (len == 1 && t[0] == '*') {
        *out = t;
        *out_len = 1;
        return 0;
    }
    if (len > 0 && t[0] == '/') {
        *out = t;
        *out_len = len;
        return 0;
    }
    if (len >= 7 && nw_strieq(t, 7, "http://"))
        skip = 7;
    else if (len >= 8 && nw_strieq(t, 8, "https://"))
        skip = 8;
    else
        return -1;
    for (i = skip; i < len && t[i] != '/' && t[i] != '?'; i++)
        ;
    if (i == skip)
        return -1; /* empty authority */
    if (i == len || t[i] == '?') {
        /* No path: the origin form is "/" (plus any query), RFC 9112 3.2.1.
         * The caller prepends the '/', signalled by a target that starts
         * with '?' or is empty. */
        *out = t + i;
        *out_len = len - i;
        return 1;
    }
    *out = t + i;
    *out_len = len - i;
    return 0;
}

const char *nw_http_authority(const char *t, size_t len, size_t *alen) {
    const char *out;
    size_t skip, olen;
    if (len < 7 || t[0] == '/' || nw_http_origin_form(t, len, &out, &olen) < 0)
        return NULL; /* not absolute-form: it starts "http://" or "https://" */
    skip = t[4] == ':' ? 7 : 8;
    *alen = (size_t)(out - t) - skip;
    return t + skip;
}

const char *nw_http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* RFC 9110 token characters. */
static int is_tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int nw_http_token_ok(const char *p, size_t n) {
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++)
        if (!is_tchar((unsigned char)p[i]))
            return 0;
    return 1;
}

int nw_http_value_ok(const char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

int nw_http_fields_ok(const nw_hdr_t *h, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!nw_http_token_ok(h[i].name, h[i].name_len) ||
            !nw_http_value_ok(h[i].value, h[i].value_len))
            return 0;
    return 1;
}

int nw_http_parse_cl(const char *p, size_t n, uint64_t *out) {
    uint64_t v = 0;
    size_t i;
    if (n == 0 || n > 19)
        return -1;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

/* ---- request-head scanner ------------------------------------------------ */

void nw_headscan_init(nw_headscan_t *s) { memset(s, 0, sizeof(*s)); }

int nw_headscan(nw_headscan_t *s, const char *p, size_t n, size_t *used) {
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n') {
            if (s->prev != '\r') {
                s->why = "bare LF in the request head";
                return -1;
            }
            if (s->line_len == 0 && s->line > 0) {
                *used = i + 1;
                return 1; /* the empty line that ends the head */
            }
            if (s->line_len > 0) {
                if (s->line == 0 && s->spaces != 2) {
                    s->why = "request line is not 'method SP target SP version'";
                    return -1;
                }
                s->line++;
            }
            s->line_len = 0;
        } else if (c != '\r') {
            if (s->prev == '\r') {
                s->why = "bare CR in the request head";
                return -1;
            }
            if (s->line_len == 0 && s->line > 0 && (c == ' ' || c == '\t')) {
                s->why = "obsolete line folding (obs-fold)";
                return -1;
            }
            if (s->line == 0 && (c == '\t' || (c == ' ' && (s->prev == ' ' || s->line_len == 0)))) {
                s->why = "whitespace in the request line";
                return -1;
            }
            if (s->line == 0 && c == ' ')
                s->spaces++;
            s->line_len++;
        } else if (s->prev == '\r') {
            s->why = "bare CR in the request head";
            return -1;
        }
        s->prev = c;
    }
    *used = n;
    return 0;
}

int nw_http_host_ok(const char *p, size_t n) {
    size_t i = 0, colon = n;
    if (n && p[0] == '[') {
        while (i < n && p[i] != ']') {
            if (!(is_digit((unsigned char)p[i]) || (p[i] && strchr("[:.abcdefABCDEF", p[i]))))
                return 0;
            i++;
        }
        if (i == n)
            return 0;
        i++;
        if (i < n && p[i] != ':')
            return 0;
        colon = i;
    } else {
        for (; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            if (c == ':') {
                colon = i;
                break;
            }
            if (!(is_alpha(c) || is_digit(c) || (c && strchr("-._~!$&'()*+,;=%", c))))
                return 0;
        }
    }
    if (colon < n) {
        if (colon + 1 == n || n - colon - 1 > 5)
            return 0;
        for (i = colon + 1; i < n; i++)
            if (!is_digit((unsigned char)p[i]))
                return 0;
    }
    return 1;
}

void nw_http_put_field(nw_sbuf_t *out, const char *name, size_t nlen, const char *value,
                       size_t vlen) {
    nw_sbuf_append(out, name, nlen);
    nw_sbuf_append(out, ": ", 2);
    nw_sbuf_append(out, value, vlen);
    nw_sbuf_append(out, "\r\n", 2);
}

size_t nw_http_chunk_line(char *buf, size_t n) {
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0, len = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    while (k)
        buf[len++] = tmp[--k];
    buf[len++] = '\r';
    buf[len++] = '\n';
    return len;
}

int nw_http_take_cl(int *seen, const char *p, size_t n, uint64_t *out) {
    if (*seen || nw_http_parse_cl(p, n, out) != 0)
        return -1;
    *seen = 1;
    return 0;
}
