/* path.h: request-target path normalisation for access rules and the
 * base-path check. Pure: no libuv, no allocation. */
#ifndef NW_PATH_H
#define NW_PATH_H

#include <stddef.h>

enum {
    NW_PATH_OK = 0,      /* out holds the normalised path */
    NW_PATH_CLIMBS = 1,  /* as OK, but a ".." went above the root (dropped in out) */
    NW_PATH_EINVAL = -1, /* not origin-form or absolute-form ("*", authority), or a '#' */
    NW_PATH_ENOSPC = -2  /* cap too small: it must be at least len + 2 */
};

/* Flags. NW_PATH_KEEP_DOTS: every step but the dot segments, which stay as
 * they are (decoded): how a service reads a path that decodes before it
 * routes but never resolves "..", as some frameworks do. */
#define NW_PATH_KEEP_DOTS 1

/* Normalise the path of an origin-form ("/a/b?q") or absolute-form
 * ("http://h/a?q") request target of len bytes into out (cap bytes, NUL
 * terminated; *out_len excludes the NUL). The result is what a lenient
 * service could resolve the path to, as the widest reading of it:
 *   - the query ('?') is excluded; a target with a fragment ('#') is
 *     NW_PATH_EINVAL (no request target has one, and a service may read
 *     "/a#/../x" as a path);
 *   - %XX is decoded when XX is an unreserved character (ALPHA DIGIT
 *     - . _ ~) or '/' or '\' (hex in any case); other escapes stay as sent,
 *     so nothing is decoded twice and no NUL or control byte appears;
 *   - '\' counts as '/' (Windows and some static file servers);
 *   - path parameters (";..." to the end of a segment) are dropped, as
 *     Tomcat and Jetty do before they resolve dot segments;
 *   - empty segments are dropped (repeated slashes merged);
 *   - "." and ".." segments are removed as RFC 3986 5.2.4 does; a ".."
 *     at the root is dropped and the result is NW_PATH_CLIMBS.
 * The result starts with '/' and ends with '/' when the path did (or its
 * last segment was a dot segment). flags: 0 or NW_PATH_KEEP_DOTS. */
int nw_path_normalize(const char *target, size_t len, int flags, char *out, size_t cap,
                      size_t *out_len);

/* Length of the path part of an origin-form target: up to '?', '#' or the
 * end. */
size_t nw_path_len(const char *target, size_t len);

/* The value of parameter key in query (the part after '?', "k=v&k2"),
 * percent-decoded ('+' as space) into out (cap bytes, NUL-terminated): its
 * length; 0 for a key given without a value ("verbose"); -1 when the key is
 * absent; -2 when its value does not fit or decodes to a control byte. The
 * first occurrence wins. */
int nw_query_param(const char *query, const char *key, char *out, size_t cap);

#endif
