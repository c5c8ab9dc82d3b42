/* accesslog.h: the access log (--access-log, ACCESS_LOG): one line per
 * request, in the combined log format plus duration, upstream status,
 * route and tunnel id, or one JSON object per line (--log-format json).
 *
 * Two halves: nw_alog_format is pure (a record to a line: escaping, field
 * caps) and unit-tested byte by byte; the writer keeps one process-wide
 * file, a bounded buffer flushed with write(2) once per loop turn (a full
 * buffer drops lines, counted and reported), and reopens the file on
 * SIGHUP. */
#ifndef NW_ACCESSLOG_H
#define NW_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define NW_ALOG_LINE_MAX 16384   /* one formatted line, at most (fields are capped) */
#define NW_ALOG_BUF (64 * 1024)  /* lines waiting for the next flush */

/* One request. A NULL string (or a 0 number where noted) is absent: "-" in
 * the text form, null in JSON. Strings are bytes as received (escaped
 * here), not NUL-terminated unless noted. */
typedef struct {
    int64_t time_sec;           /* when (UTC), seconds and milliseconds */
    int time_ms;
    const char *client;         /* the client's address, NUL-terminated */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *proto;          /* "HTTP/1.1", NUL-terminated */
    int status;                 /* the status the client got (0: "-") */
    uint64_t bytes_out;         /* response body bytes sent */
    uint64_t bytes_in;          /* request body bytes received */
    const char *referer;
    size_t referer_len;
    const char *user_agent;
    size_t user_agent_len;
    double duration;            /* seconds, from the request's start to its end */
    int upstream_status;        /* the agent's (serve) or the service's (agent); 0: "-" */
    const char *route;          /* NUL-terminated; NULL or "": "-" */
    uint64_t tunnel;            /* tunnel id; 0: "-" */
} nw_alog_rec_t;

/* Format r as one line ending in '\n' into out (cap >= NW_ALOG_LINE_MAX
 * is always enough; a smaller cap truncates, still NUL-terminated and
 * still ending in '\n'). json: the JSON object form. Returns the length. */
size_t nw_alog_format(const nw_alog_rec_t *r, int json, char *out, size_t cap);

/* Escape n bytes of p into out as the text form does (nginx's log
 * escaping: '"', '\\' and bytes outside 0x20..0x7e as \xHH); at most cap
 * bytes, never half an escape. Returns the bytes written. */
size_t nw_alog_escape(const char *p, size_t n, char *out, size_t cap);

/* The same for a JSON string body: '"' '\\' as \" \\, control bytes and
 * DEL as \u00XX, valid UTF-8 as is, any other byte as \u00XX (its
 * Latin-1 reading), so the line is always valid JSON in UTF-8. */
size_t nw_alog_json_escape(const char *p, size_t n, char *out, size_t cap);

/* ---- the writer (one per process) ---- */

/* Open path ("" = off, "-" = standard output) for appending, created
 * 0640, with the loop the buffer is flushed on. json: --log-format json.
 * 0, or -errno with a one-line reason in err. */
int nw_alog_open(uv_loop_t *loop, const char *path, int json, char *err, size_t errlen);
/* Is the access log on? (A cheap test before gathering a record.) */
int nw_alog_on(void);
/* Add r (its time is set here) to the buffer. */
void nw_alog_write(nw_alog_rec_t *r);
/* SIGHUP: flush, then open the path again (logrotate's create and
 * copytruncate both work). Logs one line; keeps the old file if the new
 * one cannot be opened. No-op for "-" or when off. */
void nw_alog_reopen(void);
/* Flush what is buffered (blocking) and close. Safe when off. */
void nw_alog_close(void);

#endif
