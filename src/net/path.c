/* path.c: request-target path normalisation (see path.h). An access rule
 * is checked on this form as well as on the raw path, so a service that
 * decodes, resolves dot segments or merges slashes before it routes can
 * never be reached on a protected path the rule did not see. */
#include "path.h"

#include <string.h>

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 2.3 unreserved, plus the two separators a service may decode. */
static int decodable(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '/' || c == '\\';
}

size_t nw_path_len(const char *target, size_t len) {
    size_t i;
    for (i = 0; i < len && target[i] != '?' && target[i] != '#'; i++)
        ;
    return i;
}

/* Skip "scheme://authority" of an absolute-form target; -1 when the target
 * is neither that nor origin-form. */
static int skip_absolute(const char *t, size_t len, size_t *at) {
    size_t i = 0;
    if (len && t[0] == '/') {
        *at = 0;
        return 0;
    }
    if (!len || !((t[0] | 0x20) >= 'a' && (t[0] | 0x20) <= 'z'))
        return -1;
    for (i = 1; i < len && t[i] != ':'; i++) {
        int c = t[i] | 0x20;
        if (!((c >= 'a' && c <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '+' ||
              t[i] == '-' || t[i] == '.'))
            return -1;
    }
    if (i + 3 > len || t[i + 1] != '/' || t[i + 2] != '/')
        return -1;
    for (i += 3; i < len && t[i] != '/' && t[i] != '?' && t[i] != '#'; i++)
        ;
    *at = i;
    return 0;
}

int nw_path_normalize(const char *target, size_t len, int flags, char *out, size_t cap,
                      size_t *out_len) {
    size_t at, end, i, w = 1, seg = 1; /* out[seg - 1] is always '/' */
    int climbs = 0, params = 0;

    if (cap < len + 2)
        return NW_PATH_ENOSPC;
    /* No request target has a fragment (RFC 9112 3.2), and a service may
     * read "/a#/../x" as a path: there is no safe reading of one. */
    if (skip_absolute(target, len, &at) != 0 || memchr(target, '#', len))
        return NW_PATH_EINVAL;
    end = at + nw_path_len(target + at, len - at);
    out[0] = '/';
    for (i = at; i <= end; i++) {
        int c = i < end ? (unsigned char)target[i] : '/';
        if (c == '%' && i + 2 < end && hexval(target[i + 1]) >= 0 &&
            hexval(target[i + 2]) >= 0) {
            int v = hexval(target[i + 1]) * 16 + hexval(target[i + 2]);
            if (decodable(v)) {
                c = v;
                i += 2;
            }
        }
        if (c == '\\')
            c = '/';
        if (c != '/') {
            if (c == ';')
                params = 1; /* the rest of the segment is parameters */
            if (!params)
                out[w++] = (char)c;
            continue;
        }
        /* The segment out[seg..w) is complete. */
        params = 0;
        if (flags & NW_PATH_KEEP_DOTS) {
            if (w > seg && i < end)
                out[w++] = '/';
        } else if (w - seg == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            w = seg;
            if (seg == 1) {
                climbs = 1;
            } else {
                /* Drop the previous segment: back to the '/' before it. */
                for (w = seg - 1; w > 0 && out[w - 1] != '/'; w--)
                    ;
            }
        } else if (w - seg == 1 && out[seg] == '.') {
            w = seg;
        } else if (w > seg && i < end) {
            out[w++] = '/';
        }
        seg = w;
    }
    out[w] = 0;
    *out_len = w;
    return climbs ? NW_PATH_CLIMBS : NW_PATH_OK;
}

/* One "k=v" of a query, decoded into out; -2 on a control byte or no room. */
static int query_value(const char *v, size_t vlen, char *out, size_t cap) {
    size_t i, n = 0;
    for (i = 0; i < vlen; i++) {
        int c = (unsigned char)v[i];
        if (c == '+')
            c = ' ';
        else if (c == '%' && i + 2 < vlen && hexval(v[i + 1]) >= 0 && hexval(v[i + 2]) >= 0) {
            c = hexval(v[i + 1]) * 16 + hexval(v[i + 2]);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || n + 1 >= cap)
            return -2;
        out[n++] = (char)c;
    }
    out[n] = 0;
    return (int)n;
}

int nw_query_param(const char *query, const char *key, char *out, size_t cap) {
    size_t klen = strlen(key);
    const char *p = query;
    if (!cap)
        return -2;
    while (p && *p) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        if ((size_t)(end - p) >= klen && memcmp(p, key, klen) == 0 &&
            (p + klen == end || p[klen] == '=')) {
            if (p + klen == end) {
                out[0] = 0;
                return 0;
            }
            return query_value(p + klen + 1, (size_t)(end - p - klen - 1), out, cap);
        }
        p = amp ? amp + 1 : NULL;
    }
    return -1;
}
