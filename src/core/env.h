/* env.h: the .env (dotenv) parser (env.c, pure). */
#ifndef NW_ENV_H
#define NW_ENV_H

#include <stddef.h>

#include "nw.h"

/* dotenv syntax: comments, blank lines, "export KEY=...", single and double
 * quotes (double quotes understand \n \t \r \" \\), inline " # comment" after
 * unquoted values, CRLF line ends, a leading UTF-8 BOM. Calls cb for each
 * KEY=VALUE in order; a later duplicate overrides an earlier one at the
 * caller's choice. Returns 0, NW_ECONFIG with "line N: reason" in err,
 * NW_ENOMEM, or the first non-zero value cb returned (err is then cb's). */
typedef int (*nw_env_cb)(const char *key, const char *val, void *ud);
int nw_env_parse(const char *text, size_t len, nw_env_cb cb, void *ud, char *err,
                 size_t errlen);

#endif
