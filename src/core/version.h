/* version.h: natwrp's version line and the versions of the libraries it
 * runs with (--version, natwrp_build_info). */
#ifndef NW_VERSION_H
#define NW_VERSION_H

/* "libuv 1.44.2, llhttp 8.1.0, wslay 1.1.1, mbedtls 2.28.3": libuv and
 * mbedTLS as loaded at run time, llhttp and wslay from their headers (they
 * have no run-time query). Static storage. */
const char *nw_lib_versions(void);
/* Each one alone (static storage). */
const char *nw_libuv_version(void);
const char *nw_llhttp_version(void);
const char *nw_wslay_version(void);
const char *nw_mbedtls_version(void);
/* Print the two --version lines to stdout. */
void nw_print_version(void);

#endif
