/* json.c: JSON string escaping (RFC 8259 section 7), pure. Bytes that are
 * not well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, nothing
 * past U+10FFFF) become U+FFFD, one per maximal bad subpart. */
#include "json.h"

static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t need, i;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else
        return 0;
    if (n < need)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need;
}

/* How many bytes an invalid sequence at s covers: its lead byte and the
 * continuation bytes that could still have followed it (the "maximal
 * subpart" of Unicode 3.9, so one U+FFFD per broken character). */
static size_t bad_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t need, i;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 1;
    for (i = 1; i < need && i < n; i++) {
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (s[i] < l || s[i] > h)
            break;
    }
    return i;
}

size_t nw_utf8_len(const char *s, size_t n) {
    return utf8_len((const unsigned char *)s, n);
}

size_t nw_utf8_bad(const char *s, size_t n) {
    return bad_len((const unsigned char *)s, n);
}

int nw_json_str(nw_sbuf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (nw_sbuf_append(b, "\"", 1) != 0)
        return NW_ENOMEM;
    while (i < n) {
        unsigned char c = p[i];
        size_t l;
        char esc[8];
        size_t elen = 0;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            run++;
            continue;
        }
        if (run && nw_sbuf_append(b, p + i - run, run) != 0)
            return NW_ENOMEM;
        run = 0;
        if (c >= 0x80) {
            l = utf8_len(p + i, n - i);
            if (l) {
                if (nw_sbuf_append(b, p + i, l) != 0)
                    return NW_ENOMEM;
                i += l;
            } else {
                if (nw_sbuf_append(b, "\xEF\xBF\xBD", 3) != 0)
                    return NW_ENOMEM;
                i += bad_len(p + i, n - i);
            }
            continue;
        }
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; elen = 2; break;
        case '\\': esc[1] = '\\'; elen = 2; break;
        case '\b': esc[1] = 'b'; elen = 2; break;
        case '\f': esc[1] = 'f'; elen = 2; break;
        case '\n': esc[1] = 'n'; elen = 2; break;
        case '\r': esc[1] = 'r'; elen = 2; break;
        case '\t': esc[1] = 't'; elen = 2; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (nw_sbuf_append(b, esc, elen) != 0)
            return NW_ENOMEM;
        i++;
    }
    if (run && nw_sbuf_append(b, p + i - run, run) != 0)
        return NW_ENOMEM;
    return nw_sbuf_append(b, "\"", 1) != 0 ? NW_ENOMEM : 0;
}

int nw_json_cstr(nw_sbuf_t *b, const char *s) {
    if (!s)
        return nw_sbuf_append(b, "null", 4) != 0 ? NW_ENOMEM : 0;
    return nw_json_str(b, s, strlen(s));
}
