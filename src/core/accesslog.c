/* accesslog.c: the access log: a request record formatted as one line
 * (combined log format plus duration, upstream status, route and tunnel
 * id, or JSON), and the process's one log file, written from a bounded
 * buffer once per loop turn and reopened on SIGHUP. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"

/* Caps on each escaped field (output bytes): with them a line always fits
 * NW_ALOG_LINE_MAX, and a client cannot make one line arbitrarily long. */
#define CAP_METHOD 64
#define CAP_TARGET 8192
#define CAP_HEADER 2048
#define CAP_ROUTE 1024
#define CAP_CLIENT 128

static const char hexd[] = "0123456789ABCDEF";

/* ------------------------------------------------------------ formatting */

/* nginx's log escaping (ngx_http_log_escape): '"', '\\', control bytes and
 * bytes from 0x7f up become \xHH, so no byte a client sends can end a
 * quoted field or a line. space_too: also SP (for an unquoted field). */
static size_t esc_text(const char *p, size_t n, char *out, size_t cap, int space_too) {
    size_t i, k = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || (space_too && c == ' ')) {
            if (cap - k < 4)
                break;
            out[k++] = '\\';
            out[k++] = 'x';
            out[k++] = hexd[c >> 4];
            out[k++] = hexd[c & 15];
        } else {
            if (cap - k < 1)
                break;
            out[k++] = (char)c;
        }
    }
    return k;
}

size_t nw_alog_escape(const char *p, size_t n, char *out, size_t cap) {
    return esc_text(p, n, out, cap, 0);
}

/* Length of the valid UTF-8 sequence at p[0..n) (2 to 4 bytes, no
 * overlong forms, no surrogates, at most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    size_t len, i;
    uint32_t cp;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

size_t nw_alog_json_escape(const char *p, size_t n, char *out, size_t cap) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0, k = 0, u;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            if (cap - k < 2)
                break;
            out[k++] = '\\';
            out[k++] = (char)c;
            i++;
        } else if (c >= 0x20 && c < 0x7f) {
            if (cap - k < 1)
                break;
            out[k++] = (char)c;
            i++;
        } else if (c >= 0x80 && (u = utf8_len(s + i, n - i)) != 0) {
            if (cap - k < u)
                break;
            memcpy(out + k, s + i, u);
            k += u;
            i += u;
        } else {
            if (cap - k < 6)
                break;
            memcpy(out + k, "\\u00", 4);
            out[k + 4] = hexd[c >> 4];
            out[k + 5] = hexd[c & 15];
            k += 6;
            i++;
        }
    }
    return k;
}

/* A line being written: len bytes of p, at most cap. */
typedef struct {
    char *p;
    size_t len, cap;
} wr_t;

static void put(wr_t *w, const char *s, size_t n) {
    if (n > w->cap - w->len)
        n = w->cap - w->len;
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void puts0(wr_t *w, const char *s) { put(w, s, strlen(s)); }

static void put_u64(wr_t *w, uint64_t v) {
    char b[24];
    size_t k = sizeof(b);
    do
        b[--k] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put(w, b + k, sizeof(b) - k);
}

/* Escaped bytes, at most fieldcap of them. */
static void put_esc(wr_t *w, const char *s, size_t n, size_t fieldcap, int json, int space) {
    size_t room = w->cap - w->len;
    if (room > fieldcap)
        room = fieldcap;
    w->len += json ? nw_alog_json_escape(s, n, w->p + w->len, room)
                   : esc_text(s, n, w->p + w->len, room, space);
}

/* A JSON member: "key":"value" (escaped), or "key":null. */
static void put_jstr(wr_t *w, const char *key, const char *s, size_t n, size_t fieldcap) {
    put(w, ",\"", 2);
    puts0(w, key);
    if (!s) {
        puts0(w, "\":null");
        return;
    }
    put(w, "\":\"", 3);
    put_esc(w, s, n, fieldcap, 1, 0);
    put(w, "\"", 1);
}

/* A JSON member with a number, or null when absent. */
static void put_jnum(wr_t *w, const char *key, uint64_t v, int present) {
    put(w, ",\"", 2);
    puts0(w, key);
    put(w, "\":", 2);
    if (present)
        put_u64(w, v);
    else
        puts0(w, "null");
}

static void put_duration(wr_t *w, double d) {
    char b[32];
    int n = snprintf(b, sizeof(b), "%.3f", d < 0 ? 0.0 : d);
    if (n > 0)
        put(w, b, (size_t)n < sizeof(b) ? (size_t)n : sizeof(b) - 1);
}

static void format_json(const nw_alog_rec_t *r, const struct tm *tm, wr_t *w) {
    char t[96];
    snprintf(t, sizeof(t), "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"",
             tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min,
             tm->tm_sec, r->time_ms);
    puts0(w, t);
    put_jstr(w, "client", r->client, r->client ? strlen(r->client) : 0, CAP_CLIENT);
    put_jstr(w, "method", r->method, r->method_len, CAP_METHOD);
    put_jstr(w, "target", r->target, r->target_len, CAP_TARGET);
    put_jstr(w, "proto", r->proto, r->proto ? strlen(r->proto) : 0, CAP_METHOD);
    put_jnum(w, "status", (uint64_t)r->status, r->status > 0);
    put_jnum(w, "bytes_out", r->bytes_out, 1);
    put_jnum(w, "bytes_in", r->bytes_in, 1);
    put_jstr(w, "referer", r->referer, r->referer_len, CAP_HEADER);
    put_jstr(w, "user_agent", r->user_agent, r->user_agent_len, CAP_HEADER);
    puts0(w, ",\"duration_seconds\":");
    put_duration(w, r->duration);
    put_jnum(w, "upstream_status", (uint64_t)r->upstream_status, r->upstream_status > 0);
    put_jstr(w, "route", r->route && r->route[0] ? r->route : NULL,
             r->route ? strlen(r->route) : 0, CAP_ROUTE);
    put_jnum(w, "tunnel", r->tunnel, r->tunnel != 0);
    put(w, "}", 1);
}

/* A quoted header value ("-" when absent, nginx prints "-" inside the
 * quotes too). */
static void put_quoted(wr_t *w, const char *s, size_t n) {
    put(w, "\"", 1);
    if (s)
        put_esc(w, s, n, CAP_HEADER, 0, 0);
    else
        put(w, "-", 1);
    put(w, "\"", 1);
}

static void format_text(const nw_alog_rec_t *r, const struct tm *tm, wr_t *w) {
    static const char *mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char t[48];
    if (r->client && r->client[0])
        put_esc(w, r->client, strlen(r->client), CAP_CLIENT, 0, 1);
    else
        put(w, "-", 1);
    snprintf(t, sizeof(t), " - - [%02d/%s/%04d:%02d:%02d:%02d +0000] \"", tm->tm_mday,
             mon[tm->tm_mon % 12], tm->tm_year + 1900, tm->tm_hour, tm->tm_min, tm->tm_sec);
    puts0(w, t);
    if (r->method) {
        put_esc(w, r->method, r->method_len, CAP_METHOD, 0, 0);
        if (r->target) {
            put(w, " ", 1);
            put_esc(w, r->target, r->target_len, CAP_TARGET, 0, 0);
        }
        if (r->proto) {
            put(w, " ", 1);
            put_esc(w, r->proto, strlen(r->proto), CAP_METHOD, 0, 0);
        }
    } else {
        put(w, "-", 1);
    }
    put(w, "\" ", 2);
    if (r->status > 0)
        put_u64(w, (uint64_t)r->status);
    else
        put(w, "-", 1);
    put(w, " ", 1);
    put_u64(w, r->bytes_out);
    put(w, " ", 1);
    put_quoted(w, r->referer, r->referer_len);
    put(w, " ", 1);
    put_quoted(w, r->user_agent, r->user_agent_len);
    put(w, " ", 1);
    put_duration(w, r->duration);
    put(w, " ", 1);
    if (r->upstream_status > 0)
        put_u64(w, (uint64_t)r->upstream_status);
    else
        put(w, "-", 1);
    put(w, " ", 1);
    if (r->route && r->route[0])
        put_esc(w, r->route, strlen(r->route), CAP_ROUTE, 0, 1);
    else
        put(w, "-", 1);
    put(w, " ", 1);
    if (r->tunnel)
        put_u64(w, r->tunnel);
    else
        put(w, "-", 1);
}

size_t nw_alog_format(const nw_alog_rec_t *r, int json, char *out, size_t cap) {
    wr_t w;
    struct tm tm;
    time_t t = (time_t)r->time_sec;
    if (cap < 2) {
        if (cap)
            out[0] = 0;
        return 0;
    }
    w.p = out;
    w.len = 0;
    w.cap = cap - 2; /* room for "\n\0" */
    gmtime_r(&t, &tm);
    if (json)
        format_json(r, &tm, &w);
    else
        format_text(r, &tm, &w);
    out[w.len++] = '\n';
    out[w.len] = 0;
    return w.len;
}

/* ---------------------------------------------------------------- writer */

static struct {
    int fd;              /* -1: off */
    int own;             /* fd is ours to close (not standard output) */
    int json;
    char path[1024];
    uv_idle_t idle;      /* flushes at the next loop turn */
    int has_idle;
    int failing;         /* the last write failed: warned once */
    size_t len;
    uint64_t dropped;    /* lines dropped on a full buffer since the last flush */
    char buf[NW_ALOG_BUF];
} A = {.fd = -1};

static size_t count_lines(const char *p, size_t n) {
    size_t k = 0;
    const char *e = p + n;
    while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL)
        k++, p++;
    return k;
}

/* Write what is buffered: one write(2) after another until it is out, the
 * fd would block (the rest waits for the next turn) or fails (the rest is
 * lost, said once until a write works again). report: say how many lines
 * were dropped since the last report (once per loop turn, not per line). */
static void alog_flush(int report) {
    size_t off = 0;
    while (off < A.len) {
        ssize_t n = write(A.fd, A.buf + off, A.len - off);
        if (n > 0) {
            off += (size_t)n;
            A.failing = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (!A.failing)
            nw_warn("access log: write to %s failed: %s; %zu line(s) lost", A.path,
                    n < 0 ? strerror(errno) : "nothing written",
                    count_lines(A.buf + off, A.len - off));
        A.failing = 1;
        off = A.len;
    }
    memmove(A.buf, A.buf + off, A.len - off);
    A.len -= off;
    if (report && A.dropped) {
        nw_warn("access log: %llu line(s) dropped: the buffer (%d KiB) was full",
                (unsigned long long)A.dropped, NW_ALOG_BUF / 1024);
        A.dropped = 0;
    }
}

static void alog_on_idle(uv_idle_t *h) {
    uv_idle_stop(h);
    alog_flush(1);
}

static int open_path(const char *path) {
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

int nw_alog_open(uv_loop_t *loop, const char *path, int json, char *err, size_t errlen) {
    int fd;
    A.json = json;
    if (!path || !path[0])
        return 0;
    snprintf(A.path, sizeof(A.path), "%s", strcmp(path, "-") == 0 ? "standard output" : path);
    if (strcmp(path, "-") == 0) {
        fd = STDOUT_FILENO;
        A.own = 0;
    } else if ((fd = open_path(path)) < 0) {
        int e = errno;
        snprintf(err, errlen, "--access-log (ACCESS_LOG): cannot open %s: %s", path, strerror(e));
        return -e;
    } else {
        A.own = 1;
    }
    A.fd = fd;
    A.len = 0;
    A.dropped = 0;
    A.failing = 0;
    if (loop && uv_idle_init(loop, &A.idle) == 0) {
        A.has_idle = 1;
        uv_unref((uv_handle_t *)&A.idle); /* never what keeps the loop running */
    }
    return 0;
}

int nw_alog_on(void) { return A.fd >= 0; }

void nw_alog_write(nw_alog_rec_t *r) {
    char line[NW_ALOG_LINE_MAX];
    struct timeval tv;
    size_t n;
    if (A.fd < 0)
        return;
    gettimeofday(&tv, NULL);
    r->time_sec = (int64_t)tv.tv_sec;
    r->time_ms = (int)(tv.tv_usec / 1000);
    n = nw_alog_format(r, A.json, line, sizeof(line));
    if (n > sizeof(A.buf) - A.len)
        alog_flush(0); /* a burst: one write now rather than a dropped line */
    if (n > sizeof(A.buf) - A.len) {
        A.dropped++;
        return;
    }
    memcpy(A.buf + A.len, line, n);
    A.len += n;
    if (A.has_idle && !uv_is_closing((uv_handle_t *)&A.idle))
        uv_idle_start(&A.idle, alog_on_idle); /* no-op when started */
    else
        alog_flush(1); /* the loop is going away */
}

void nw_alog_reopen(void) {
    int fd;
    if (A.fd < 0 || !A.own)
        return;
    alog_flush(1);
    if ((fd = open_path(A.path)) < 0) {
        nw_err("access log: cannot reopen %s: %s; still writing to the file open before",
               A.path, strerror(errno));
        return;
    }
    close(A.fd);
    A.fd = fd;
    A.failing = 0;
    nw_info("access log: reopened %s", A.path);
}

void nw_alog_close(void) {
    int tries;
    if (A.fd < 0)
        return;
    /* An output that would block (a non-blocking pipe) gets a moment to
     * take the rest: up to a second, then what is left is said lost. */
    for (tries = 0; tries < 10; tries++) {
        struct pollfd pf = {.fd = A.fd, .events = POLLOUT};
        alog_flush(1);
        if (!A.len)
            break;
        poll(&pf, 1, 100);
    }
    if (A.len) {
        nw_warn("access log: %zu line(s) not written at exit: %s does not take them",
                count_lines(A.buf, A.len), A.path);
        A.len = 0;
    }
    if (A.own)
        close(A.fd);
    A.fd = -1;
    A.own = 0;
    A.has_idle = 0; /* the loop's teardown closed it */
}
