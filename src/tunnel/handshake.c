/* handshake.c: what both ends of the tunnel upgrade share (see handshake.h). */
#include <string.h>

#include "handshake.h"
#include "mux.h"

_Static_assert(NW_HS_WINDOW_MAX == NW_MUX_MAX_WINDOW, "window bound of the frame codec");

int nw_hs_window(const nw_hfields_t *h, uint32_t *out) {
    uint64_t win = NW_HS_WINDOW_DEFAULT;
    nw_hdr_t f;
    int i = nw_hf_find(h, NW_HS_WINDOW, 0);
    if (i >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        if (nw_http_parse_cl(f.value, f.value_len, &win) != 0 || win < NW_HS_WINDOW_MIN ||
            win > NW_HS_WINDOW_MAX)
            return -1;
    }
    *out = (uint32_t)win;
    return 0;
}

int nw_hs_subproto_offered(const nw_hfields_t *h) {
    return nw_http_has_token(h, "sec-websocket-protocol", NW_HS_SUBPROTO);
}

int nw_hs_subproto_selected(const nw_hfields_t *h) {
    nw_hdr_t f;
    int i = nw_hf_find(h, "sec-websocket-protocol", 0);
    return i >= 0 && (nw_hf_get(h, (size_t)i, &f), nw_strieq(f.value, f.value_len, NW_HS_SUBPROTO));
}

int nw_hs_agent_id_ok(const char *p, size_t n, size_t max_len) {
    size_t i;
    if (n == 0 || n > max_len)
        return 0;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._@:+-", c)))
            return 0;
    }
    return 1;
}

int nw_hs_instance_ok(const char *p, size_t n) {
    size_t i, dashes = 0;
    if (n == 0 || n > NW_HS_INSTANCE_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c == '-')
            dashes++;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return dashes == 1 && p[0] != '-' && p[n - 1] != '-';
}

int nw_hs_coexist(const char *a, const char *b) {
    const char *da = strchr(a, '-'), *db = strchr(b, '-');
    if (!da || !db || da - a != db - b || memcmp(a, b, (size_t)(da - a)) != 0)
        return 0;
    return strcmp(da, db) != 0;
}
