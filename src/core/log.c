/* log.c: one line per event on stderr, with a UTC timestamp and level;
 * or, with --log-format json, one JSON object per line. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"

int nw_log_level = NW_LOG_INFO;
int nw_log_json;

/* A JSON string body for msg into out (cap > 6): '"' and '\\' escaped,
 * control bytes as \u00XX. Messages are ASCII; any byte from 0x80 up is
 * written as \u00XX too, so the line is valid UTF-8 whatever it quotes. */
static size_t json_escape(const char *msg, char *out, size_t cap) {
    static const char hexd[] = "0123456789abcdef";
    size_t k = 0;
    for (; *msg; msg++) {
        unsigned char c = (unsigned char)*msg;
        if (c == '"' || c == '\\') {
            if (cap - k < 3)
                break;
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            if (cap - k < 7)
                break;
            memcpy(out + k, "\\u00", 4);
            out[k + 4] = hexd[c >> 4];
            out[k + 5] = hexd[c & 15];
            k += 6;
        } else {
            if (cap - k < 2)
                break;
            out[k++] = (char)c;
        }
    }
    out[k] = 0;
    return k;
}

/* {"time":"...","level":"info","msg":"..."} */
static void log_json(const char *level, const struct tm *tm, int ms, const char *fmt,
                     va_list ap) {
    char msg[2048], esc[6 * 2048 + 1];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    json_escape(msg, esc, sizeof(esc));
    fprintf(stderr,
            "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\","
            "\"msg\":\"%s\"}\n",
            tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec,
            ms, level, esc);
}

void nw_log(int level, const char *fmt, ...) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    if (nw_log_json) {
        va_start(ap, fmt);
        log_json(names[level & 3], &tm, (int)(tv.tv_usec / 1000), fmt, ap);
        va_end(ap);
        return;
    }
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (int)(tv.tv_usec / 1000), names[level & 3]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line so lines from one process never interleave. */
    fprintf(stderr, "%s\n", line);
}
