/* inspect.c: the request inspector's ring of captures and their JSON
 * (inspect.h). Pure: the caller passes the clocks. */
#include <string.h>

#include "inspect.h"
#include "json.h"

struct nw_inspect_s {
    nw_icap_t *ring[NW_INSPECT_RING]; /* id % NW_INSPECT_RING */
    uint64_t next_id;
    uint64_t live_until;
    int secrets;
};

nw_inspect_t *nw_inspect_new(int secrets) {
    nw_inspect_t *ins = nw_calloc(1, sizeof(*ins));
    if (ins) {
        ins->next_id = 1;
        ins->secrets = secrets;
    }
    return ins;
}

static void icap_free(nw_icap_t *c) {
    if (!c)
        return;
    nw_free(c->method);
    nw_free(c->target);
    /* Secret values were in these: wipe before they go back to the heap. */
    if (c->req_hdrs.p)
        nw_wipe(c->req_hdrs.p, c->req_hdrs.len);
    if (c->resp_hdrs.p) /* Set-Cookie */
        nw_wipe(c->resp_hdrs.p, c->resp_hdrs.len);
    nw_sbuf_free(&c->req_hdrs);
    nw_sbuf_free(&c->resp_hdrs);
    nw_sbuf_free(&c->req_body);
    nw_sbuf_free(&c->resp_body);
    nw_free(c);
}

void nw_inspect_free(nw_inspect_t *ins) {
    size_t i;
    if (!ins)
        return;
    for (i = 0; i < NW_INSPECT_RING; i++)
        icap_free(ins->ring[i]);
    nw_free(ins);
}

void nw_inspect_touch(nw_inspect_t *ins, uint64_t now_ms) {
    ins->live_until = now_ms + NW_INSPECT_LIVE_MS;
}

int nw_inspect_live(const nw_inspect_t *ins, uint64_t now_ms) {
    return ins->live_until && now_ms < ins->live_until;
}

static int pack_hdrs(nw_sbuf_t *b, const nw_hdr_t *h, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (nw_sbuf_append(b, h[i].name, h[i].name_len) != 0 || nw_sbuf_append(b, "", 1) != 0 ||
            nw_sbuf_append(b, h[i].value, h[i].value_len) != 0 || nw_sbuf_append(b, "", 1) != 0)
            return NW_ENOMEM;
    return 0;
}

uint64_t nw_inspect_begin(nw_inspect_t *ins, double wall, uint64_t now_ms, const char *method,
                          size_t mlen, const char *target, size_t tlen, const nw_hdr_t *hdrs,
                          size_t n) {
    nw_icap_t *c = nw_calloc(1, sizeof(*c));
    size_t slot;
    if (!c)
        return 0;
    c->method = nw_strndup(method, mlen);
    c->target = nw_strndup(target, tlen);
    if (!c->method || !c->target || pack_hdrs(&c->req_hdrs, hdrs, n) != 0) {
        icap_free(c);
        return 0;
    }
    c->nreq_hdrs = n;
    c->id = ins->next_id++;
    c->time = wall;
    c->t0_ms = now_ms;
    c->duration = -1;
    c->bodies = nw_inspect_live(ins, now_ms) ? 1 : 0;
    slot = (size_t)(c->id % NW_INSPECT_RING);
    icap_free(ins->ring[slot]);
    ins->ring[slot] = c;
    return c->id;
}

nw_icap_t *nw_inspect_get(nw_inspect_t *ins, uint64_t id) {
    nw_icap_t *c;
    if (!ins || !id)
        return NULL;
    c = ins->ring[id % NW_INSPECT_RING];
    return c && c->id == id ? c : NULL;
}

static void body_take(nw_sbuf_t *b, int on, const void *p, size_t n) {
    size_t room;
    if (!on || b->len >= NW_INSPECT_BODY_MAX)
        return;
    room = NW_INSPECT_BODY_MAX - b->len;
    (void)nw_sbuf_append(b, p, n < room ? n : room); /* out of memory: less is shown */
}

void nw_icap_req_body(nw_icap_t *c, const void *p, size_t n) {
    c->req_bytes += n;
    body_take(&c->req_body, c->bodies, p, n);
}

void nw_icap_resp_head(nw_icap_t *c, int status, const nw_hdr_t *hdrs, size_t n) {
    c->status = status;
    c->resp_hdrs.len = 0;
    c->nresp_hdrs = pack_hdrs(&c->resp_hdrs, hdrs, n) == 0 ? n : 0;
}

void nw_icap_resp_body(nw_icap_t *c, const void *p, size_t n) {
    c->resp_bytes += n;
    body_take(&c->resp_body, c->bodies, p, n);
}

void nw_icap_end(nw_icap_t *c, uint64_t now_ms, const char *error) {
    if (c->done)
        return;
    c->done = 1;
    c->duration = (double)(now_ms >= c->t0_ms ? now_ms - c->t0_ms : 0) / 1000.0;
    if (error && *error) {
        size_t n = strlen(error);
        if (n >= sizeof(c->error))
            n = sizeof(c->error) - 1;
        memcpy(c->error, error, n);
        c->error[n] = 0;
    }
}

void nw_icap_req_end(nw_icap_t *c) {
    c->req_whole = 1;
}

/* A request still arriving, or cut short, would be sent with the part of
 * its body that came, under a Content-Length that says it is whole. */
int nw_icap_replayable(const nw_icap_t *c) {
    return c->req_whole && (c->req_bytes == 0 || (c->bodies && c->req_body.len == c->req_bytes));
}

int nw_inspect_secret(const char *name, size_t len) {
    static const char *const names[] = {"authorization", "proxy-authorization", "cookie",
                                        "set-cookie", "x-auth-token"};
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(names); i++)
        if (nw_strieq(name, len, names[i]))
            return 1;
    return 0;
}

int nw_inspect_is_text(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i], need, cp, k;
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f)
                return 0;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            need = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3, cp = c & 0x07;
        else
            return 0;
        if (i + need >= n)
            return 0; /* cut short (text_len drops a capture's cut character) */
        for (k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* A capture cut at NW_INSPECT_BODY_MAX may end inside a character: those
 * last bytes do not make it binary. */
static size_t text_len(const char *s, size_t n, uint64_t total) {
    size_t k;
    if (total <= n)
        return n;
    for (k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xc0) != 0x80)
            return c >= 0xc0 ? n - k : n; /* a lead byte: drop it and its tail */
    }
    return n;
}

int nw_inspect_body_json(nw_sbuf_t *out, const char *p, size_t n, uint64_t total) {
    static const char hexd[] = "0123456789abcdef";
    size_t tl = text_len(p, n, total), i, h;
    int rc = 0;
    if (nw_inspect_is_text(p, tl)) {
        rc |= nw_sbuf_appends(out, "{\"text\":");
        rc |= nw_json_str(out, p, tl);
    } else {
        h = n < NW_INSPECT_HEX_MAX ? n : NW_INSPECT_HEX_MAX;
        rc |= nw_sbuf_appends(out, "{\"hex\":\"");
        for (i = 0; i < h && rc == 0; i++) {
            char x[2] = {hexd[(unsigned char)p[i] >> 4], hexd[(unsigned char)p[i] & 15]};
            rc |= nw_sbuf_append(out, x, 2);
        }
        rc |= nw_sbuf_appends(out, "\"");
    }
    rc |= nw_sbuf_appendf(out, ",\"size\":%llu,\"truncated\":%s}", (unsigned long long)total,
                          total > n ? "true" : "false");
    return rc ? NW_ENOMEM : 0;
}

int nw_inspect_hdrs_json(nw_sbuf_t *out, const nw_sbuf_t *packed, size_t n, int secrets) {
    const char *p = packed->p;
    size_t i;
    int rc = nw_sbuf_appends(out, "[");
    for (i = 0; i < n && p && rc == 0; i++) {
        size_t nl = strlen(p), vl = strlen(p + nl + 1);
        rc |= nw_sbuf_appends(out, i ? ",[" : "[");
        rc |= nw_json_str(out, p, nl);
        rc |= nw_sbuf_appends(out, ",");
        if (!secrets && nw_inspect_secret(p, nl))
            rc |= nw_sbuf_appends(out, "\"***\"");
        else
            rc |= nw_json_str(out, p + nl + 1, vl);
        rc |= nw_sbuf_appends(out, "]");
        p += nl + 1 + vl + 1;
    }
    rc |= nw_sbuf_appends(out, "]");
    return rc ? NW_ENOMEM : 0;
}

static int summary_json(nw_sbuf_t *out, const nw_icap_t *c) {
    int rc = nw_sbuf_appendf(out, "{\"id\":%llu,\"time\":%.3f,\"method\":",
                             (unsigned long long)c->id, c->time);
    rc |= nw_json_cstr(out, c->method);
    rc |= nw_sbuf_appends(out, ",\"target\":");
    rc |= nw_json_cstr(out, c->target);
    rc |= nw_sbuf_appendf(out, ",\"status\":%d,\"state\":\"%s\",\"duration_seconds\":", c->status,
                          !c->done ? "pending" : c->error[0] ? "failed" : "done");
    if (c->duration < 0)
        rc |= nw_sbuf_appends(out, "null");
    else
        rc |= nw_sbuf_appendf(out, "%.6f", c->duration);
    rc |= nw_sbuf_appendf(out, ",\"request_bytes\":%llu,\"response_bytes\":%llu,\"bodies\":%s,"
                               "\"replayable\":%s,\"error\":",
                          (unsigned long long)c->req_bytes, (unsigned long long)c->resp_bytes,
                          c->bodies ? "true" : "false", nw_icap_replayable(c) ? "true" : "false");
    rc |= nw_json_cstr(out, c->error);
    return rc ? NW_ENOMEM : 0;
}

int nw_inspect_list_json(const nw_inspect_t *ins, uint64_t after, nw_sbuf_t *out) {
    uint64_t first = ins->next_id > NW_INSPECT_RING ? ins->next_id - NW_INSPECT_RING : 1, id;
    int rc = nw_sbuf_appendf(out, "{\"inspect\":true,\"last\":%llu,\"requests\":[",
                             (unsigned long long)(ins->next_id - 1));
    int any = 0;
    if (first <= after)
        first = after + 1;
    for (id = first; id < ins->next_id && rc == 0; id++) {
        const nw_icap_t *c = ins->ring[id % NW_INSPECT_RING];
        if (!c || c->id != id)
            continue;
        rc |= nw_sbuf_appends(out, any ? "," : "");
        rc |= summary_json(out, c);
        rc |= nw_sbuf_appends(out, "}");
        any = 1;
    }
    rc |= nw_sbuf_appends(out, "]}");
    return rc ? NW_ENOMEM : 0;
}

int nw_inspect_one_json(const nw_inspect_t *ins, const nw_icap_t *c, nw_sbuf_t *out) {
    int rc = summary_json(out, c);
    rc |= nw_sbuf_appends(out, ",\"request\":{\"headers\":");
    rc |= nw_inspect_hdrs_json(out, &c->req_hdrs, c->nreq_hdrs, ins->secrets);
    rc |= nw_sbuf_appends(out, ",\"body\":");
    rc |= nw_inspect_body_json(out, c->req_body.p ? c->req_body.p : "", c->req_body.len,
                               c->req_bytes);
    rc |= nw_sbuf_appends(out, "},\"response\":{\"headers\":");
    rc |= nw_inspect_hdrs_json(out, &c->resp_hdrs, c->nresp_hdrs, ins->secrets);
    rc |= nw_sbuf_appends(out, ",\"body\":");
    rc |= nw_inspect_body_json(out, c->resp_body.p ? c->resp_body.p : "", c->resp_body.len,
                               c->resp_bytes);
    rc |= nw_sbuf_appends(out, "}}");
    return rc ? NW_ENOMEM : 0;
}
