/* log.h: leveled logger to stderr. Lines carry ids: "tun=3 strm=17 ...". */
#ifndef NW_LOG_H
#define NW_LOG_H

enum { NW_LOG_ERROR = 0, NW_LOG_WARN = 1, NW_LOG_INFO = 2, NW_LOG_DEBUG = 3 };

extern int nw_log_level;
/* --log-format json: each line is {"time":"...","level":"...","msg":"..."}. */
extern int nw_log_json;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void nw_log(int level, const char *fmt, ...);

#define NW_LOG(lvl, ...) \
    do { if ((lvl) <= nw_log_level) nw_log((lvl), __VA_ARGS__); } while (0)
#define nw_err(...) NW_LOG(NW_LOG_ERROR, __VA_ARGS__)
#define nw_warn(...) NW_LOG(NW_LOG_WARN, __VA_ARGS__)
#define nw_info(...) NW_LOG(NW_LOG_INFO, __VA_ARGS__)
#define nw_debug(...) NW_LOG(NW_LOG_DEBUG, __VA_ARGS__)

#endif
